//! The request as it goes upstream: the URL, the headers that are
//! forwarded (and the ones that are not), and the body with what orproxy
//! read of it.

use crate::config::ServeConfig;
use crate::openrouter::endpoints::Endpoint;
use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use std::time::Duration;

/// One upstream HTTP client per worker (awc's client is not `Send`).
pub(crate) struct UpstreamClient {
    pub(super) client: awc::Client,
    /// `HTTP-Referer` and `X-Title` for requests that send none (when the
    /// configured text is a valid header value), made once.
    referer: Option<HeaderValue>,
    title: Option<HeaderValue>,
}

impl UpstreamClient {
    /// A client with the configured connect timeout, no connection limit, and
    /// the headers timeout applied per request; `referer` and `title` are
    /// sent for clients that do not send their own.
    pub(crate) fn new(
        connect_timeout: Duration,
        headers_timeout: Duration,
        referer: &str,
        title: &str,
    ) -> Self {
        // awc's own TCP connector, under one that skips interim answers.
        let tcp = actix_tls::connect::Connector::default().service();
        let connector = awc::Connector::new()
            .connector(super::connector::SkipInterim::new(tcp))
            .timeout(connect_timeout)
            .limit(0);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(headers_timeout)
            .disable_redirects()
            .finish();
        Self {
            client,
            referer: HeaderValue::from_str(referer).ok(),
            title: HeaderValue::from_str(title).ok(),
        }
    }
}

const HTTP_REFERER: HeaderName = HeaderName::from_static("http-referer");
const X_TITLE: HeaderName = HeaderName::from_static("x-title");
const X_OPENROUTER_TITLE: HeaderName = HeaderName::from_static("x-openrouter-title");

/// Headers never forwarded upstream: the client's credentials (the
/// upstream gets only the pool key), hop-by-hop headers, and what asks the
/// upstream for more than one plain exchange (`Expect`, `Upgrade`, `TE`):
/// orproxy always holds the whole body before it sends.
fn dropped(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "authorization"
            | "x-api-key"
            | "api-key"
            | "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
            | "accept-encoding"
            | "openai-organization"
            | "openai-project"
    ) || name.starts_with("proxy-")
}

/// The header names the client's `Connection` header lists: hop-by-hop
/// by its say-so.
fn connection_listed(incoming: &HeaderMap) -> Vec<String> {
    incoming
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The client's headers as they go upstream (minus the key, added per
/// attempt).
fn forwarded_headers(incoming: &HeaderMap, upstream: &UpstreamClient) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 3);
    let listed = if incoming.contains_key(header::CONNECTION) {
        connection_listed(incoming)
    } else {
        Vec::new()
    };
    for (name, value) in incoming {
        if !dropped(name) && !listed.iter().any(|l| l == name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    // Errors are read and classified: ask for bodies we can read.
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if !incoming.contains_key(HTTP_REFERER)
        && let Some(v) = &upstream.referer
    {
        out.insert(HTTP_REFERER, v.clone());
    }
    if !incoming.contains_key(X_TITLE)
        && !incoming.contains_key(X_OPENROUTER_TITLE)
        && let Some(v) = &upstream.title
    {
        out.insert(X_TITLE, v.clone());
    }
    out
}

/// Whether `model` is one of OpenRouter's free variants, whose limits are
/// the account's free-model caps.
fn is_free_model(model: &str) -> bool {
    model.ends_with(":free")
}

/// The client's request as it will be sent upstream (minus the key).
pub(crate) struct Outgoing {
    /// The client's request, to watch its connection while relaying.
    pub(crate) req: HttpRequest,
    /// The endpoint it is for.
    pub(crate) endpoint: &'static Endpoint,
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) model: Option<String>,
    /// A `:free` model: the account's free-model caps apply.
    pub(crate) free: bool,
    /// Longest silence allowed inside the upstream's answer.
    pub(crate) idle: Duration,
    /// For a generation lookup: the key that served the generation (its
    /// account's keys are tried first).
    pub(crate) served_by: Option<String>,
}

impl Outgoing {
    /// The request `req` for `endpoint` (at `tail` under `/v1/`) with its
    /// `body` and `model`, to be sent as `config` says.
    pub(crate) fn new(
        req: &HttpRequest,
        (endpoint, tail): (&'static Endpoint, &str),
        body: Bytes,
        model: Option<String>,
        config: &ServeConfig,
        upstream: &UpstreamClient,
    ) -> Self {
        let mut url = format!("{}/{tail}", config.upstream);
        if let Some(q) = req.uri().query() {
            url.push('?');
            url.push_str(q);
        }
        Self {
            req: req.clone(),
            endpoint,
            method: req.method().clone(),
            url,
            headers: forwarded_headers(req.headers(), upstream),
            body,
            free: model.as_deref().is_some_and(is_free_model),
            model,
            idle: config.idle_timeout,
            served_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(pairs: &[(&'static str, &'static str)]) -> Vec<String> {
        let mut incoming = HeaderMap::new();
        for (name, value) in pairs {
            incoming.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let upstream = UpstreamClient::new(Duration::from_secs(1), Duration::from_secs(1), "", "");
        let mut names: Vec<String> = forwarded_headers(&incoming, &upstream)
            .keys()
            .map(|n| n.as_str().to_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn credentials_hop_by_hop_and_expect_never_go_upstream() {
        let names = forwarded(&[
            ("authorization", "Bearer client-token"),
            ("x-api-key", "client-key"),
            ("api-key", "azure-style"),
            ("expect", "100-continue"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "listed in Connection"),
            ("keep-alive", "timeout=5"),
            ("openai-organization", "org"),
            ("anthropic-version", "2023-06-01"),
            ("x-title", "my app"),
            ("content-type", "application/json"),
        ]);
        assert_eq!(
            names,
            [
                "accept-encoding",
                "anthropic-version",
                "content-type",
                "http-referer",
                "x-title"
            ]
        );
    }
}
