//! What every request meets first, before its token is checked or its body
//! read: a request to switch protocols (`Upgrade`: WebSocket, h2c) gets a
//! 400 at once and its connection is closed; a request other than `/health`
//! on a worker past its descriptor budget gets a 503 with `Retry-After` and
//! its connection is closed ([`super::load`]); and an HTTP/1.0 client gets
//! streamed responses close-delimited (HTTP/1.0 has no chunked encoding;
//! actix would send it chunks).

use super::errors::ApiError;
use super::load::{self, Budget};
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{ConnectionType, Version};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, ResponseError, web};

/// The protocol a request asks to switch to: its `Upgrade` header, or
/// `Connection: upgrade` without one. `None` for an ordinary request.
pub(crate) fn upgrade_asked(headers: &HeaderMap) -> Option<String> {
    if let Some(protocol) = headers.get(header::UPGRADE) {
        let text = String::from_utf8_lossy(protocol.as_bytes());
        return Some(crate::escape::field(text.trim(), 40));
    }
    let connection_upgrade = headers.get_all(header::CONNECTION).any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade.then(|| "(none named)".to_owned())
}

/// The 503 for a request on a worker past its budget; never for `/health`.
fn shed(req: &ServiceRequest) -> Option<ApiError> {
    let budget = *req.app_data::<web::Data<Budget>>()?.get_ref();
    let over = load::overloaded(budget);
    (over && req.path() != "/health").then(|| ApiError::overloaded(budget.nofile))
}

/// Make `res` readable by an HTTP/1.0 client: a body of unknown length is
/// sent as it comes and ends when the connection closes.
fn close_delimited(res: &mut HttpResponse<impl MessageBody>) {
    if res.body().size() == BodySize::Stream {
        let head = res.head_mut();
        head.no_chunking(true);
        head.set_connection_type(ConnectionType::Close);
    }
}

/// The middleware: inside the request log (so these answers are logged),
/// outside the token check.
pub(crate) async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    // Whatever follows an upgrade's head is not HTTP/1.1 any more; a shed
    // request's connection is one fewer.
    let refused = match upgrade_asked(req.headers()) {
        Some(protocol) => Some(ApiError::upgrade_refused(&protocol)),
        None => shed(&req),
    };
    if let Some(err) = refused {
        let mut res = err.for_path(req.path()).error_response();
        res.head_mut().set_connection_type(ConnectionType::Close);
        return Ok(req.into_response(res).map_into_right_body());
    }
    let http10 = req.version() < Version::HTTP_11;
    let mut res = next.call(req).await?;
    if http10 {
        close_delimited(res.response_mut());
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                header::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn upgrades_are_recognised_however_they_are_asked() {
        let ws = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(upgrade_asked(&ws).as_deref(), Some("websocket"));
        let h2c = headers(&[
            ("connection", "keep-alive, Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(upgrade_asked(&h2c).as_deref(), Some("h2c"));
        assert!(upgrade_asked(&headers(&[("upgrade", "h2c")])).is_some());
        assert!(
            upgrade_asked(&headers(&[
                ("connection", "close"),
                ("connection", "upgrade")
            ]))
            .is_some()
        );
        assert_eq!(
            upgrade_asked(&headers(&[("connection", "keep-alive")])),
            None
        );
        assert_eq!(
            upgrade_asked(&headers(&[("connection", "not-upgrade")])),
            None
        );
        assert_eq!(upgrade_asked(&HeaderMap::new()), None);
    }

    #[test]
    fn only_bodies_of_unknown_length_are_close_delimited() {
        let mut sized = HttpResponse::Ok().body("known");
        close_delimited(&mut sized);
        assert!(sized.head().chunked());
        assert!(sized.head().keep_alive());
        let stream = futures_util::stream::iter([Ok::<_, Error>(bytes::Bytes::from("x"))]);
        let mut streamed = HttpResponse::Ok().streaming(stream);
        close_delimited(&mut streamed);
        assert!(!streamed.head().chunked());
        assert_eq!(streamed.head().connection_type(), ConnectionType::Close);
    }
}
