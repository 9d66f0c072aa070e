//! A bare AMQP 0-9-1 publisher over a plain TCP socket, for hostile-input tests: it sends a message
//! with header bytes exactly as given, which no client library would build (lapin itself would
//! recurse through headers nested a thousand levels deep).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn short(text: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(text.len()).expect("a short string")];
    out.extend_from_slice(text.as_bytes());
    out
}

fn long(bytes: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(bytes.len())
        .expect("a long string")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(bytes);
    out
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&long(payload));
    out.push(0xCE);
    out
}

fn method(channel: u16, class: u16, method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    frame(1, channel, &payload)
}

/// Reads frames until the method `(class, method)` arrives; panics on a close from the server.
async fn expect(socket: &mut TcpStream, class: u16, method: u16) {
    loop {
        let mut header = [0u8; 7];
        socket.read_exact(&mut header).await.expect("read a frame");
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        socket.read_exact(&mut payload).await.expect("read a frame");
        if header[0] != 1 || size < 4 {
            continue;
        }
        let got = (
            u16::from_be_bytes([payload[0], payload[1]]),
            u16::from_be_bytes([payload[2], payload[3]]),
        );
        if got == (class, method) {
            return;
        }
        assert!(
            got != (10, 50) && got != (20, 40),
            "RabbitMQ closed the raw publisher's connection or channel: {}",
            String::from_utf8_lossy(&payload)
        );
    }
}

/// The bytes of a field table holding `depth` nested tables (`{"n": {"n": … {}}}`), built without
/// recursion.
pub fn nested_table(depth: usize) -> Vec<u8> {
    let mut table = 0u32.to_be_bytes().to_vec();
    for _ in 1..depth {
        let mut entry = short("n");
        entry.push(b'F');
        entry.extend_from_slice(&table);
        table = long(&entry);
    }
    table
}

/// Publishes `body` to `queue` on `guest:guest@host:port` (vhost `/`) through the default
/// exchange, persistent, with `headers` (the encoded field table, its size prefix included) as
/// the message's headers. Returns once RabbitMQ acknowledged closing the connection, so the message
/// has been routed.
pub async fn publish(address: &str, queue: &str, headers: &[u8], body: &[u8]) {
    let mut socket = TcpStream::connect(address)
        .await
        .expect("connect to RabbitMQ");
    socket
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .expect("write");
    expect(&mut socket, 10, 10).await; // connection.start
    let mut start_ok = 0u32.to_be_bytes().to_vec(); // no client properties
    start_ok.extend(short("PLAIN"));
    start_ok.extend(long(b"\0guest\0guest"));
    start_ok.extend(short("en_US"));
    socket
        .write_all(&method(0, 10, 11, &start_ok))
        .await
        .expect("write");
    expect(&mut socket, 10, 30).await; // connection.tune
    let mut tune_ok = 1u16.to_be_bytes().to_vec();
    tune_ok.extend_from_slice(&131_072u32.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes());
    let mut open = short("/");
    open.extend(short(""));
    open.push(0);
    let mut out = method(0, 10, 31, &tune_ok);
    out.extend(method(0, 10, 40, &open));
    socket.write_all(&out).await.expect("write");
    expect(&mut socket, 10, 41).await; // connection.open-ok
    socket
        .write_all(&method(1, 20, 10, &short("")))
        .await
        .expect("write");
    expect(&mut socket, 20, 11).await; // channel.open-ok

    let mut publish = 0u16.to_be_bytes().to_vec();
    publish.extend(short(""));
    publish.extend(short(queue));
    publish.push(0);
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&(body.len() as u64).to_be_bytes());
    header.extend_from_slice(&(0x2000u16 | 0x1000).to_be_bytes()); // headers, delivery mode
    header.extend_from_slice(headers);
    header.push(2); // persistent
    let mut out = method(1, 60, 40, &publish);
    out.extend(frame(2, 1, &header));
    for chunk in body.chunks(100_000) {
        out.extend(frame(3, 1, chunk));
    }
    let mut close = 200u16.to_be_bytes().to_vec();
    close.extend(short("done"));
    close.extend_from_slice(&[0, 0, 0, 0]);
    out.extend(method(0, 10, 50, &close));
    socket.write_all(&out).await.expect("write");
    expect(&mut socket, 10, 51).await; // connection.close-ok
}
