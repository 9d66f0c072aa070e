//! A consumer's blocking reads, on a connection of its own whose reply reader never holds an entry
//! larger than a limit.
//!
//! A stream read returns entries whole, and Redis takes entries up to 512 MB; the `redis` client
//! reads a reply whole before anyone can look at it (one 50 MiB entry took a worker from 8 to
//! 320 MiB). This reader speaks RESP2 itself for `XREADGROUP` alone and streams past any entry whose
//! field values add up to more than the limit, keeping only its id and size, so the worker
//! dead-letters it inside Redis without ever loading it. Everything else goes through the `redis`
//! client as before.

use std::io;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream,
};

/// What a connection needs from its transport.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// The longest line (a reply's header or an error message) the reader accepts.
const MAX_LINE: usize = 64 * 1024;
/// The most a bulk string is given before its bytes arrive.
const MAX_UPFRONT: usize = 64 * 1024;
/// Room for field names in an entry's budget.
const FIELD_NAMES_ROOM: usize = 1024;
/// Arrays nest this deep at most in an `XREADGROUP` reply (streams, stream, entries, entry, fields).
const MAX_DEPTH: usize = 8;

/// One connection for bounded reads.
pub(crate) struct BoundedConnection {
    io: BufStream<Box<dyn Transport>>,
}

/// A reply, with bulk strings over the budget left out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Nil,
    Int(i64),
    Status(Vec<u8>),
    Bulk(Vec<u8>),
    /// A bulk string of this many bytes, skipped: its array was over the budget.
    Skipped(usize),
    Array(Vec<Reply>),
    /// An error reply, e.g. `NOGROUP …` or `LOADING …`.
    Error(String),
}

impl BoundedConnection {
    /// Connects as the `redis` client would for `info` (plain, TLS or Unix socket), authenticates
    /// and selects the database.
    pub(crate) async fn connect(
        info: &ConnectionInfo,
        tls_roots_pem: Option<&str>,
    ) -> io::Result<Self> {
        let io: Box<dyn Transport> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                tls(stream, host, *insecure, tls_roots_pem).await?
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "unsupported redis address",
                ));
            }
        };
        let mut connection = Self {
            io: BufStream::with_capacity(64 * 1024, 8 * 1024, io),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            connection.expect_ok(&auth, "AUTH").await?;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            connection
                .expect_ok(&[b"SELECT", db.as_bytes()], "SELECT")
                .await?;
        }
        Ok(connection)
    }

    async fn expect_ok(&mut self, command: &[&[u8]], what: &str) -> io::Result<()> {
        self.send(command).await?;
        match read_reply(&mut self.io, usize::MAX).await? {
            Reply::Status(_) => Ok(()),
            // The server's words only: they never quote the password.
            Reply::Error(error) => Err(io::Error::other(format!("{what}: {error}"))),
            other => Err(invalid(format!("unexpected reply to {what}: {other:?}"))),
        }
    }

    /// `XREADGROUP GROUP group consumer COUNT count [BLOCK block] STREAMS streams… >…` (without
    /// `block`, it answers at once), keeping no
    /// entry whose fields add up to more than `max_entry_bytes` (plus 1 KiB for their names).
    pub(crate) async fn read_group(
        &mut self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
        streams: &[&str],
        max_entry_bytes: usize,
    ) -> io::Result<Reply> {
        let count = count.to_string();
        let block = block.map(|block| block.as_millis().max(1).to_string());
        let mut command: Vec<&[u8]> = vec![
            b"XREADGROUP",
            b"GROUP",
            group.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
        ];
        if let Some(block) = &block {
            command.extend([b"BLOCK".as_slice(), block.as_bytes()]);
        }
        command.push(b"STREAMS");
        command.extend(streams.iter().map(|stream| stream.as_bytes()));
        command.extend(streams.iter().map(|_| b">".as_slice()));
        self.send(&command).await?;
        // The budget counts field names too: leave them room, so that a payload of exactly the
        // limit is read (a larger one that fits is refused by the worker's own decode limit).
        read_reply(
            &mut self.io,
            max_entry_bytes.saturating_add(FIELD_NAMES_ROOM),
        )
        .await
    }

    async fn send(&mut self, command: &[&[u8]]) -> io::Result<()> {
        let mut out =
            Vec::with_capacity(16 + command.iter().map(|arg| arg.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
        for arg in command {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.io.write_all(&out).await?;
        self.io.flush().await
    }
}

/// Reads one reply, without recursion. The bulk strings directly inside one array may add up
/// to `budget` bytes; past that they are skipped (streamed past, not stored).
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(
    io: &mut R,
    budget: usize,
) -> io::Result<Reply> {
    // Open arrays: their items so far, how many are still due, the bytes of their bulks.
    let mut open: Vec<(Vec<Reply>, usize, usize)> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        read_line(io, &mut line).await?;
        let (kind, rest) = line
            .split_first()
            .ok_or_else(|| invalid("empty reply line"))?;
        let mut value = match kind {
            b'+' => Reply::Status(rest.to_vec()),
            b'-' => Reply::Error(String::from_utf8_lossy(rest).into_owned()),
            b':' => Reply::Int(number(rest)?),
            b'$' => match number(rest)? {
                -1 => Reply::Nil,
                len => {
                    let len = usize::try_from(len).map_err(|_| invalid("negative length"))?;
                    let used = open.last().map_or(0, |(_, _, bytes)| *bytes);
                    if used.saturating_add(len) > budget {
                        skip(io, len + 2).await?;
                        if let Some((_, _, bytes)) = open.last_mut() {
                            *bytes = bytes.saturating_add(len);
                        }
                        Reply::Skipped(len)
                    } else {
                        // A length the server states is not allocated before its bytes arrive
                        // (replies read with no budget can state any): past 64 KiB, the buffer
                        // grows as they come.
                        let mut bulk = if len <= MAX_UPFRONT {
                            let mut bulk = vec![0; len + 2];
                            io.read_exact(&mut bulk).await?;
                            bulk
                        } else {
                            let mut bulk = Vec::with_capacity(MAX_UPFRONT + 2);
                            (&mut *io)
                                .take(len as u64 + 2)
                                .read_to_end(&mut bulk)
                                .await?;
                            if bulk.len() < len + 2 {
                                return Err(io::ErrorKind::UnexpectedEof.into());
                            }
                            bulk
                        };
                        bulk.truncate(len);
                        if let Some((_, _, bytes)) = open.last_mut() {
                            *bytes += len;
                        }
                        Reply::Bulk(bulk)
                    }
                }
            },
            b'*' => match number(rest)? {
                -1 => Reply::Nil,
                0 => Reply::Array(Vec::new()),
                len => {
                    if open.len() >= MAX_DEPTH {
                        return Err(invalid("reply nested too deep"));
                    }
                    let len = usize::try_from(len).map_err(|_| invalid("negative length"))?;
                    open.push((Vec::with_capacity(len.min(1024)), len, 0));
                    continue;
                }
            },
            other => return Err(invalid(format!("unknown reply type {:?}", *other as char))),
        };
        // Hand the value to its array, closing every array it completes.
        loop {
            let Some((items, due, _)) = open.last_mut() else {
                return Ok(value);
            };
            items.push(value);
            *due -= 1;
            if *due > 0 {
                break;
            }
            let (items, _, _) = open.pop().unwrap_or_default();
            value = Reply::Array(items);
        }
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(io: &mut R, line: &mut Vec<u8>) -> io::Result<()> {
    let read = io.take(MAX_LINE as u64).read_until(b'\n', line).await?;
    if read == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("reply line too long or cut"));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

async fn skip<R: AsyncBufRead + Unpin>(io: &mut R, len: usize) -> io::Result<()> {
    let skipped = tokio::io::copy(&mut io.take(len as u64), &mut tokio::io::sink()).await?;
    if skipped < len as u64 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads one reply out of `bytes` held in memory, as [`read_reply`] reads the connection.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_reply_from(mut bytes: &[u8], budget: usize) -> io::Result<Reply> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut reading = std::pin::pin!(read_reply(&mut bytes, budget));
    // Bytes in memory are always ready: the reader finishes in one poll, or fails.
    match reading
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(reply) => reply,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

fn number(text: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid("not a number"))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(feature = "tls")]
async fn tls(
    stream: tokio::net::TcpStream,
    host: &str,
    insecure: bool,
    roots_pem: Option<&str>,
) -> io::Result<Box<dyn Transport>> {
    let mut builder = native_tls::TlsConnector::builder();
    if insecure {
        builder.danger_accept_invalid_hostnames(true);
        builder.danger_accept_invalid_certs(true);
    }
    if let Some(pem) = roots_pem {
        for certificate in pem.split_inclusive("-----END CERTIFICATE-----") {
            if certificate.contains("-----BEGIN CERTIFICATE-----") {
                let root = native_tls::Certificate::from_pem(certificate.trim().as_bytes())
                    .map_err(io::Error::other)?;
                builder.add_root_certificate(root);
            }
        }
    }
    let connector =
        tokio_native_tls::TlsConnector::from(builder.build().map_err(io::Error::other)?);
    let stream = connector
        .connect(host, stream)
        .await
        .map_err(io::Error::other)?;
    Ok(Box::new(stream))
}

#[cfg(not(feature = "tls"))]
async fn tls(
    _stream: tokio::net::TcpStream,
    _host: &str,
    _insecure: bool,
    _roots_pem: Option<&str>,
) -> io::Result<Box<dyn Transport>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "rediss:// needs celeriac-redis's `tls` feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `bytes` as a reply with `budget`, as the connection reads it.
    fn parse(bytes: &[u8], budget: usize) -> io::Result<Reply> {
        read_reply_from(bytes, budget)
    }

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_an_xreadgroup_reply() {
        let reply =
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\np\r\n$5\r\nhello\r\n";
        assert_eq!(
            parse(reply, 100).unwrap(),
            Reply::Array(vec![Reply::Array(vec![
                bulk("s"),
                Reply::Array(vec![Reply::Array(vec![
                    bulk("1-0"),
                    Reply::Array(vec![bulk("p"), bulk("hello")]),
                ])]),
            ])])
        );
    }

    #[test]
    fn skips_what_is_over_the_budget_of_its_array_and_reads_on() {
        let big = "x".repeat(1_000);
        let reply = format!(
            "*2\r\n*2\r\n$1\r\np\r\n${}\r\n{big}\r\n*2\r\n$1\r\np\r\n$2\r\nok\r\n",
            big.len()
        );
        assert_eq!(
            parse(reply.as_bytes(), 100).unwrap(),
            Reply::Array(vec![
                Reply::Array(vec![bulk("p"), Reply::Skipped(1_000)]),
                Reply::Array(vec![bulk("p"), bulk("ok")]),
            ])
        );
        // Many fields adding up past the budget count as one entry over it.
        let reply = "*3\r\n$40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n$40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n$40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";
        let Reply::Array(items) = parse(reply.as_bytes(), 100).unwrap() else {
            panic!("an array");
        };
        assert_eq!(items[2], Reply::Skipped(40));
    }

    #[test]
    fn nil_errors_and_numbers() {
        assert_eq!(parse(b"*-1\r\n", 10).unwrap(), Reply::Nil);
        assert_eq!(
            parse(b"-NOGROUP no such group\r\n", 10).unwrap(),
            Reply::Error("NOGROUP no such group".into())
        );
        assert_eq!(parse(b":42\r\n", 10).unwrap(), Reply::Int(42));
        assert_eq!(
            parse(b"+OK\r\n", 10).unwrap(),
            Reply::Status(b"OK".to_vec())
        );
    }

    #[test]
    fn broken_replies_are_errors_not_panics() {
        for broken in [
            &b""[..],
            b"*2\r\n$1\r\na\r\n",
            b"$5\r\nab",
            b"?what\r\n",
            b"$abc\r\n",
            b"*9\r\n*9\r\n*9\r\n*9\r\n*9\r\n*9\r\n*9\r\n*9\r\n*9\r\n",
        ] {
            assert!(parse(broken, 100).is_err(), "{broken:?}");
        }
        // With no budget (the replies to `AUTH`, `SELECT`), a stated length of 9 GB that the
        // bytes do not follow is an error, read as they come, not 9 GB allocated first.
        assert!(parse(b"$9000000000\r\nabc", usize::MAX).is_err());
        assert_eq!(parse(b"$3\r\nabc\r\n", usize::MAX).unwrap(), bulk("abc"));
    }
}
