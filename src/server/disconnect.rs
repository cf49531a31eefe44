//! Noticing that a client went away while nothing is being written to it.
//!
//! actix-web only learns of a closed connection when it writes (actix-web
//! issue #1313): a request waiting for a key, for upstream headers, or
//! relaying a stream that has gone quiet would keep the upstream request,
//! and OpenRouter's generation and billing, alive. So each connection keeps a
//! duplicate of its socket descriptor, and long operations race against the
//! socket's read-closed (EPOLLRDHUP) readiness on that duplicate. Nothing is
//! ever read from it: the request bytes stay actix's.
//!
//! The same duplicate bounds slow request heads. actix times out only the
//! head of a connection's *first* request (`client_request_timeout`); on a
//! kept-alive connection a client could trickle its next head forever. A
//! small watchdog per connection notices bytes arriving while no request is
//! in flight, and hangs up if no request has started [`CLIENT_TIMEOUT`]
//! later. It ends with the connection.
//!
//! Each connection is also counted by its worker ([`super::load`]), which
//! may close it through the same duplicate when it has been idle the longest
//! and descriptors run short.

use super::CLIENT_TIMEOUT;
use super::load::{self, Budget, Counted, Evictable};
use actix_web::HttpRequest;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use bytes::Bytes;
use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::Interest;
use tokio::sync::oneshot;

/// A duplicate of the client connection's socket, registered with the
/// runtime once per connection, stored with the connection and dropped with
/// it (which also ends its watchdog).
struct ClientSocket {
    stream: Rc<tokio::net::TcpStream>,
    activity: Rc<Activity>,
    _alive: oneshot::Sender<()>,
    _counted: Counted,
}

/// What the connection's requests are doing, for the watchdog and the
/// worker's count.
struct Activity {
    /// Requests whose head was complete (counted when they reach the app).
    started: Cell<u64>,
    /// Requests whose response has not finished yet.
    in_flight: Cell<u32>,
    /// When the last request finished (or the connection was accepted).
    idle_since: Cell<Instant>,
}

/// What the worker may close to make room: the connection's duplicate and
/// what its requests are doing.
struct Closable {
    stream: Rc<tokio::net::TcpStream>,
    activity: Rc<Activity>,
}

impl Evictable for Closable {
    /// Idle: no request in flight, and none arriving (bytes waiting to be
    /// read are the head of one; such a connection is not closed, its
    /// request gets an answer).
    fn idle_since(&self) -> Option<Instant> {
        if self.activity.in_flight.get() > 0 {
            return None;
        }
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        match socket2::SockRef::from(&*self.stream).peek(&mut byte) {
            Ok(n) if n > 0 => None,
            _ => Some(self.activity.idle_since.get()),
        }
    }

    fn evict(&self) {
        hang_up(&self.stream);
    }
}

/// `HttpServer::on_connect` hook: count the connection on its worker
/// (which may close idle ones to make room), remember a duplicate of the
/// socket and start the connection's head watchdog.
pub(crate) fn on_connect(conn: &dyn Any, ext: &mut Extensions, budget: Budget) {
    let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let Some(stream) = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(to_tokio)
        .map(Rc::new)
    else {
        // No descriptor for the duplicate: counted all the same.
        ext.insert(load::connected(budget, None));
        return;
    };
    let activity = Rc::new(Activity {
        started: Cell::new(0),
        in_flight: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
    });
    let closable = Rc::new(Closable {
        stream: stream.clone(),
        activity: activity.clone(),
    });
    let counted = load::connected(budget, Some(closable));
    let (alive, gone) = oneshot::channel();
    actix_web::rt::spawn(head_watchdog(stream.clone(), activity.clone(), gone));
    ext.insert(ClientSocket {
        stream,
        activity,
        _alive: alive,
        _counted: counted,
    });
}

fn to_tokio(fd: OwnedFd) -> Option<tokio::net::TcpStream> {
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}

/// Hang up on a connection whose next request head has been arriving for
/// [`CLIENT_TIMEOUT`] without becoming a request. Ends when the connection
/// does (`gone`), dropping its duplicate of the socket.
async fn head_watchdog(
    stream: Rc<tokio::net::TcpStream>,
    activity: Rc<Activity>,
    mut gone: oneshot::Receiver<()>,
) {
    loop {
        let ready = tokio::select! {
            _ = &mut gone => return,
            ready = stream.ready(Interest::READABLE) => ready,
        };
        match ready {
            Ok(r) if r.is_read_closed() => return,
            Err(_) => return,
            Ok(_) => {}
        }
        if activity.in_flight.get() == 0 {
            // Bytes of a new request head: it has CLIENT_TIMEOUT to complete.
            let seen = activity.started.get();
            tokio::select! {
                _ = &mut gone => return,
                () = tokio::time::sleep(CLIENT_TIMEOUT) => {}
            }
            if activity.started.get() == seen && activity.in_flight.get() == 0 {
                log::info!(
                    target: "orproxy::requests",
                    "a client sent no complete request head for {} s: hanging up",
                    CLIENT_TIMEOUT.as_secs()
                );
                hang_up(&stream);
                return;
            }
        }
        // Wait for the next change rather than seeing the same bytes again.
        let _ = stream.try_io(Interest::READABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
    }
}

/// Middleware: count each request as in flight until its response body has
/// been sent (or dropped), for the head watchdog and the worker's load
/// ([`load::busy`]).
pub(crate) async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let guard = req.conn_data::<ClientSocket>().map(|s| {
        let a = s.activity.clone();
        a.started.set(a.started.get().wrapping_add(1));
        a.in_flight.set(a.in_flight.get().saturating_add(1));
        InFlight(a)
    });
    let busy = load::busy();
    let res = next.call(req).await?;
    Ok(res.map_body(move |_, body| InFlightBody {
        body: body.boxed(),
        _guard: guard,
        _busy: busy,
    }))
}

/// Ends a request's "in flight" when dropped.
struct InFlight(Rc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.0.in_flight.get().saturating_sub(1);
        self.0.in_flight.set(left);
        if left == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
struct InFlightBody {
    body: BoxBody,
    _guard: Option<InFlight>,
    _busy: load::Busy,
}

impl MessageBody for InFlightBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Shut the connection down in both directions (the socket, not just our
/// descriptor): actix sees it end and drops it.
fn hang_up(stream: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
}

/// A future that completes when the client of `req` has closed its side of
/// the connection. Pends forever when that cannot be watched.
pub(crate) fn closed(req: &HttpRequest) -> Pin<Box<dyn Future<Output = ()>>> {
    match req.conn_data::<ClientSocket>() {
        Some(socket) => Box::pin(wait_read_closed(socket.stream.clone())),
        None => Box::pin(std::future::pending()),
    }
}

async fn wait_read_closed(stream: Rc<tokio::net::TcpStream>) {
    loop {
        match stream.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => return,
            Ok(_) => {
                // Bytes are waiting (a pipelined request, while this one is
                // in flight): not ours to read. Wait for the next change.
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
            Err(_) => return,
        }
    }
}
