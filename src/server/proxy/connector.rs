//! The upstream connection under awc, for plain-HTTP/1 upstreams: it skips
//! interim answers (`1xx` other than `101`, such as `103 Early Hints` or an
//! unasked `100 Continue`) before awc reads a response head. awc reads one
//! head per request and would take an interim answer for the final one,
//! then return the connection to its pool with the real answer still
//! unread, for the next request to find. (Over TLS OpenRouter speaks
//! HTTP/2, whose client skips interim answers itself; connections awc
//! wraps in TLS are passed through untouched.)
//!
//! The connection knows where a response starts: after the request is
//! written (the first write after a read), the next bytes are a response
//! head. Interim heads are dropped there; from the first final head on,
//! bytes pass through until the next request.

use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::http::Uri;
use actix_web::rt::net::{ActixStream, Ready, TcpStream};
use bytes::{Buf, BytesMut};
use futures_util::future::LocalBoxFuture;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest response head looked at; a longer one is passed on as it is
/// (awc refuses it anyway).
const MAX_HEAD: usize = 64 * 1024;

/// Wraps awc's TCP connector: plain-HTTP connections skip interim answers.
#[derive(Clone)]
pub(crate) struct SkipInterim<S> {
    inner: S,
}

impl<S> SkipInterim<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<ConnectInfo<Uri>> for SkipInterim<S>
where
    S: Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError>,
    S::Future: 'static,
{
    type Response = Connection<Uri, UpstreamIo>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, ConnectError>>;

    actix_service::forward_ready!(inner);

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        // awc wraps https connections in TLS on top of this one: only the
        // bytes of a plain one are HTTP.
        let plain = req.request().scheme_str() != Some("https");
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let connection = connecting.await?;
            let (tcp, connection) = connection.replace_io(());
            let io = if plain {
                UpstreamIo::Http(Interim::new(tcp))
            } else {
                UpstreamIo::Raw(tcp)
            };
            Ok(connection.replace_io(io).1)
        })
    }
}

/// An upstream connection: plain HTTP with interim answers skipped, or
/// bytes awc puts TLS on.
#[derive(Debug)]
pub(crate) enum UpstreamIo {
    Http(Interim<TcpStream>),
    Raw(TcpStream),
}

/// Whether the next bytes read start a response head, or belong to the
/// response being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Head,
    Body,
}

/// A connection that drops interim response heads.
#[derive(Debug)]
pub(crate) struct Interim<Io> {
    io: Io,
    reading: Reading,
    /// Read since the last write: the next write starts a new request.
    read_since_write: bool,
    /// Bytes of a head being looked at, or already judged and not yet
    /// handed on.
    pending: BytesMut,
    /// `pending` holds a final head (and what followed it): hand it on.
    release: bool,
}

impl<Io> Interim<Io> {
    fn new(io: Io) -> Self {
        Self {
            io,
            reading: Reading::Head,
            read_since_write: false,
            pending: BytesMut::new(),
            release: false,
        }
    }

    /// Look at `pending` as the start of a response: drop interim heads;
    /// once a final head (or something that is not a head) is there, it is
    /// released. Returns whether there is something to hand on.
    fn sort(&mut self) -> bool {
        loop {
            let Some(end) = memchr::memmem::find(&self.pending, b"\r\n\r\n") else {
                if self.pending.len() > MAX_HEAD {
                    self.release = true;
                }
                return self.release;
            };
            if interim(&self.pending[..end]) {
                self.pending.advance(end + 4);
                continue;
            }
            self.release = true;
            return true;
        }
    }

    /// Hand on released bytes into `buf`.
    fn hand_on(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        if self.pending.is_empty() {
            self.release = false;
            self.reading = Reading::Body;
        }
    }
}

/// Whether `head` (without its blank line) is an interim answer: a `1xx`
/// other than `101 Switching Protocols`, which awc handles.
fn interim(head: &[u8]) -> bool {
    let status = head.get(9..12).and_then(|s| std::str::from_utf8(s).ok());
    head.starts_with(b"HTTP/1.")
        && head.get(8) == Some(&b' ')
        && status.is_some_and(|s| s.starts_with('1') && s != "101")
}

impl<Io: AsyncRead + Unpin> AsyncRead for Interim<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.read_since_write = true;
        if this.release {
            this.hand_on(buf);
            return Poll::Ready(Ok(()));
        }
        if this.reading == Reading::Body {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        loop {
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The peer closed: whatever came is handed on as it is.
                    this.release = !this.pending.is_empty();
                    if this.release {
                        this.hand_on(buf);
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    this.pending.extend_from_slice(read.filled());
                    if this.sort() {
                        this.hand_on(buf);
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Interim<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.read_since_write {
            // A new request: its answer starts with a head.
            this.read_since_write = false;
            this.reading = Reading::Head;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamIo::Raw(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamIo::Raw(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_flush(cx),
            UpstreamIo::Raw(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Http(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamIo::Raw(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

impl ActixStream for UpstreamIo {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        match self {
            // Bytes already read and held count as readable.
            UpstreamIo::Http(io) if io.release => Poll::Ready(Ok(Ready::READABLE)),
            UpstreamIo::Http(io) => ActixStream::poll_read_ready(&io.io, cx),
            UpstreamIo::Raw(io) => ActixStream::poll_read_ready(io, cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        match self {
            UpstreamIo::Http(io) => ActixStream::poll_write_ready(&io.io, cx),
            UpstreamIo::Raw(io) => ActixStream::poll_write_ready(io, cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Read what `upstream` sends after a request is written, through the
    /// filter, until the peer closes.
    fn through(upstream: &[u8]) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, mut server) = tokio::io::duplex(64);
            let upstream = upstream.to_vec();
            let serve = async move {
                let mut request = [0u8; 4];
                server.read_exact(&mut request).await.unwrap();
                for piece in upstream.chunks(7) {
                    server.write_all(piece).await.unwrap();
                }
                drop(server);
            };
            let read = async move {
                let mut io = Interim::new(client);
                io.write_all(b"GET ").await.unwrap();
                let mut got = Vec::new();
                io.read_to_end(&mut got).await.unwrap();
                got
            };
            tokio::join!(serve, read).1
        })
    }

    #[test]
    fn interim_heads_are_dropped_and_the_final_answer_passes_whole() {
        let final_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        let mut sent = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n".to_vec();
        sent.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        sent.extend_from_slice(&final_answer);
        assert_eq!(through(&sent), final_answer);
    }

    #[test]
    fn answers_without_interim_heads_pass_unchanged() {
        for sent in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n<html>",
            b"not http at all, and no blank line",
            b"",
        ] {
            assert_eq!(through(sent), sent, "{:?}", String::from_utf8_lossy(sent));
        }
    }

    #[test]
    fn interim_status_lines_are_recognised() {
        assert!(interim(b"HTTP/1.1 103 Early Hints"));
        assert!(interim(b"HTTP/1.0 100 Continue"));
        assert!(!interim(b"HTTP/1.1 101 Switching Protocols"));
        assert!(!interim(b"HTTP/1.1 200 OK"));
        assert!(!interim(b"HTTP/1.1 1"));
        assert!(!interim(b"SSH-2.0 100"));
    }
}
