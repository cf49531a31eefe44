//! Noticing that a client went away while nothing is being written to it.
//!
//! actix-web only learns of a closed connection when it writes (actix-web
//! issue #1313): a request waiting for a key, for upstream headers, or
//! relaying a stream that has gone quiet would keep the upstream request,
//! and OpenRouter's generation and billing, alive. So each connection keeps a
//! duplicate of its socket descriptor, and long operations race against the
//! socket's read-closed (EPOLLRDHUP) readiness on that duplicate. Nothing is
//! ever read from it: the request bytes stay actix's.

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use std::any::Any;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use tokio::io::Interest;

/// A duplicate of the client connection's socket, stored with the connection
/// and dropped with it.
struct ClientSocket(OwnedFd);

/// `HttpServer::on_connect` hook: remember a duplicate of the socket.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(fd) = stream.as_fd().try_clone_to_owned()
    {
        ext.insert(ClientSocket(fd));
    }
}

/// A future that completes when the client of `req` has closed its side of
/// the connection. Pends forever when that cannot be watched.
pub fn closed(req: &HttpRequest) -> Pin<Box<dyn Future<Output = ()>>> {
    let stream = req
        .conn_data::<ClientSocket>()
        .and_then(|s| s.0.try_clone().ok())
        .map(std::net::TcpStream::from)
        .and_then(|s| tokio::net::TcpStream::from_std(s).ok());
    match stream {
        Some(stream) => Box::pin(wait_read_closed(stream)),
        None => Box::pin(std::future::pending()),
    }
}

async fn wait_read_closed(stream: tokio::net::TcpStream) {
    loop {
        match stream.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => return,
            Ok(_) => {
                // Bytes are waiting (a pipelined request): not ours to read.
                // Clear the readiness and wait for the next change.
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
            Err(_) => return,
        }
    }
}
