//! The connection's transport: lapin reads RabbitMQ's bytes through a [`VettedStream`], which holds
//! each content-header frame until it is whole and passes it through [`frames::vet`] (see there
//! for why). Plain TCP and TLS alike: the vetting sits above TLS.
//!
//! lapin takes its transport from its runtime's reactor type, so the broker connects with a runtime
//! made of tokio's executor and [`VettingReactor`], tokio's reactor with the vetted stream type.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_rs::traits::Reactor;
use async_rs::util::RuntimeParts;
use async_rs::{Runtime, Tokio};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{Future, Stream};
use lapin::tcp::{AsyncTcpStream, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::frames::{self, Verdict};

/// A plain or TLS TCP stream on tokio, as lapin would open it itself.
type Transport = AsyncTcpStream<<Tokio as Reactor>::TcpStream>;

/// The runtime lapin runs the connection on: tokio, with vetted streams.
type VettingRuntime = Runtime<RuntimeParts<Tokio, VettingReactor>>;

/// Connects to `uri` (TLS for `amqps://`, with `tls`) through a vetted stream.
pub(crate) async fn connect(
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    properties: ConnectionProperties,
) -> lapin::Result<Connection> {
    let max_frame = uri.query.frame_max.map_or(usize::MAX, |max| max as usize);
    let tokio = Tokio::current();
    let runtime: VettingRuntime = Runtime::new(RuntimeParts::new(
        tokio.clone(),
        VettingReactor {
            tokio: tokio.clone(),
            max_frame,
        },
    ));
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, _runtime: VettingRuntime| {
            let io_error = lapin::Error::from;
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((uri.authority.host.as_str(), uri.authority.port))
                    .await
                    .map_err(io_error)?
                    .collect();
            let mut stream = AsyncTcpStream::connect(&tokio, addresses)
                .await
                .map_err(io_error)?;
            if uri.scheme == AMQPScheme::AMQPS {
                stream = stream
                    .into_tls(&uri.authority.host, tls.as_ref())
                    .await
                    .map_err(io_error)?;
            }
            Ok(AsyncTcpStream::Plain(VettedStream::new(stream, max_frame)))
        },
        properties,
    )
    .await
}

/// tokio's reactor, handing out [`VettedStream`]s.
#[derive(Clone, Debug)]
pub(crate) struct VettingReactor {
    tokio: Tokio,
    max_frame: usize,
}

impl Reactor for VettingReactor {
    type TcpStream = VettedStream<Transport>;
    type Sleep = <Tokio as Reactor>::Sleep;

    // async-rs's bound is its unexported `AsSysFd`, which is exactly these two traits.
    #[cfg(unix)]
    fn register<H>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static>
    where
        H: io::Read + io::Write + std::os::fd::AsFd + std::os::fd::AsRawFd + Send + 'static,
    {
        self.tokio.register(socket)
    }

    #[cfg(windows)]
    fn register<H>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static>
    where
        H: io::Read
            + io::Write
            + std::os::windows::io::AsSocket
            + std::os::windows::io::AsRawSocket
            + Send
            + 'static,
    {
        self.tokio.register(socket)
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.tokio.sleep(duration)
    }

    fn interval(&self, every: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.tokio.interval(every)
    }

    fn tcp_connect_addr(
        &self,
        address: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let connect = self.tokio.tcp_connect_addr(address);
        let max_frame = self.max_frame;
        async move {
            let stream = AsyncTcpStream::Plain(connect.await?);
            Ok(VettedStream::new(stream, max_frame))
        }
    }
}

/// Reads from `inner` and hands out only bytes [`frames::vet`] passed (or rewrote); writes go
/// through unchanged.
pub(crate) struct VettedStream<S> {
    inner: S,
    /// Bytes read: `buffer[start..vetted]` may be handed out, `buffer[vetted..end]` not yet.
    buffer: Vec<u8>,
    start: usize,
    vetted: usize,
    end: usize,
    /// Bytes of the current frame past `vetted` that pass unchecked once they arrive.
    passing: usize,
    max_frame: usize,
}

impl<S> VettedStream<S> {
    /// As large as the reads lapin itself makes, so vetting adds no system calls.
    const INITIAL_BUFFER: usize = 128 * 1024;

    pub(crate) fn new(inner: S, max_frame: usize) -> Self {
        Self {
            inner,
            buffer: vec![0; Self::INITIAL_BUFFER],
            start: 0,
            vetted: 0,
            end: 0,
            passing: 0,
            max_frame,
        }
    }

    /// Vets what arrived, frame by frame, as far as the bytes go.
    fn vet(&mut self) {
        loop {
            if self.passing > 0 {
                let arrived = self.passing.min(self.end - self.vetted);
                self.vetted += arrived;
                self.passing -= arrived;
                if self.passing > 0 {
                    return;
                }
            }
            match frames::vet(&self.buffer[self.vetted..self.end], self.max_frame) {
                Verdict::NeedMore => return,
                Verdict::Pass(len) => self.passing = len,
                Verdict::Replace { len, frame } => {
                    tracing::warn!(
                        "rabbitmq sent a message with headers lapin cannot safely parse; \
                         passing it on with the reason instead, to be dead-lettered"
                    );
                    let at = self.vetted;
                    let tail = self.end - (at + len);
                    let new_end = at + frame.len() + tail;
                    if new_end > self.buffer.len() {
                        self.buffer.resize(new_end, 0);
                    }
                    self.buffer
                        .copy_within(at + len..self.end, at + frame.len());
                    self.buffer[at..at + frame.len()].copy_from_slice(&frame);
                    self.end = new_end;
                    self.passing = frame.len();
                }
            }
        }
    }

    /// Makes room after `end` for the next read: moves unread bytes to the front, or grows.
    fn make_room(&mut self) {
        if self.end < self.buffer.len() {
            return;
        }
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.vetted -= self.start;
            self.end -= self.start;
            self.start = 0;
        } else {
            // A content-header frame larger than the buffer is still arriving.
            let larger = self.buffer.len() * 2;
            self.buffer.resize(larger, 0);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for VettedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.vetted > this.start {
                let n = out.len().min(this.vetted - this.start);
                out[..n].copy_from_slice(&this.buffer[this.start..this.start + n]);
                this.start += n;
                if this.start == this.end {
                    (this.start, this.vetted, this.end) = (0, 0, 0);
                }
                return Poll::Ready(Ok(n));
            }
            this.make_room();
            let read =
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.buffer[this.end..]))?;
            if read == 0 {
                if this.end == this.vetted {
                    return Poll::Ready(Ok(0));
                }
                // The connection ended inside a frame: hand out the rest, for lapin to report.
                this.vetted = this.end;
                this.passing = 0;
                continue;
            }
            this.end += read;
            this.vet();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for VettedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, buffers)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, TryStreamExt};

    /// Reads everything from a stream of `chunks`, through the vetting, in reads of `read_size`.
    fn vetted(chunks: Vec<Vec<u8>>, read_size: usize) -> Vec<u8> {
        let source = futures::stream::iter(chunks.into_iter().map(Ok::<_, io::Error>));
        let mut stream = VettedStream::new(source.into_async_read(), 1 << 17);
        let mut out = Vec::new();
        let mut buffer = vec![0; read_size];
        futures::executor::block_on(async {
            loop {
                let n = stream.read(&mut buffer).await.expect("read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buffer[..n]);
            }
        });
        out
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![kind, 0, 1];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame.push(0xCE);
        frame
    }

    #[test]
    fn passes_ordinary_traffic_through_unchanged_however_it_is_cut() {
        let mut traffic = frame(1, b"method");
        traffic.extend(frame(2, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0]));
        traffic.extend(frame(3, &vec![7; 40_000]));
        traffic.extend(frame(8, b""));
        for cut in [1, 3, 7, 100, 16_384, 50_000] {
            let chunks: Vec<_> = traffic.chunks(cut).map(<[u8]>::to_vec).collect();
            for read_size in [1, 10, 4096] {
                assert_eq!(vetted(chunks.clone(), read_size), traffic, "cut {cut}");
            }
        }
    }

    #[test]
    fn rewrites_a_deep_header_frame_between_others() {
        // Headers nesting 200 tables, built by hand as a foreign publisher would send them.
        let mut table = 0u32.to_be_bytes().to_vec();
        for _ in 1..200 {
            let mut outer = ((table.len() + 3) as u32).to_be_bytes().to_vec();
            outer.extend_from_slice(&[1, b'n', b'F']);
            outer.extend_from_slice(&table);
            table = outer;
        }
        let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0x20, 0];
        payload.extend_from_slice(&table);
        let mut traffic = frame(1, b"deliver");
        traffic.extend(frame(2, &payload));
        traffic.extend(frame(3, b"abc"));
        let chunks: Vec<_> = traffic.chunks(5).map(<[u8]>::to_vec).collect();
        let out = vetted(chunks, 64);
        let before = frame(1, b"deliver");
        assert_eq!(&out[..before.len()], &before[..]);
        assert!(out.ends_with(&frame(3, b"abc")));
        let rewritten = &out[before.len()..out.len() - frame(3, b"abc").len()];
        assert!(rewritten.len() < 200, "{} bytes", rewritten.len());
        let text = String::from_utf8_lossy(rewritten);
        assert!(text.contains(frames::REFUSED_HEADERS_HEADER), "{text}");
    }
}
