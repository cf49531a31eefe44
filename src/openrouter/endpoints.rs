//! Every OpenRouter endpoint orproxy knows by name, in one table: which
//! methods it takes, whether its JSON body is peeked (for `model` and
//! `stream`), the dialect it speaks ([`Dialect`]: its stream events, how a
//! stream proves itself whole, its errors), and the label its requests
//! carry in metrics. Any other path under `/v1` is forwarded as it
//! is ([`OTHER`]). The proxy, the request log and metrics all read this table:
//! adding an endpoint is one row here.

/// The methods an endpoint takes; any other gets a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Methods {
    /// `POST` only.
    Post,
    /// `GET` (and `HEAD`) only.
    Get,
    /// Anything: forwarded as it is.
    Any,
}

impl Methods {
    /// Whether `method` is allowed.
    pub(crate) fn allow(self, method: &str) -> bool {
        match self {
            Methods::Post => method == "POST",
            Methods::Get => method == "GET" || method == "HEAD",
            Methods::Any => true,
        }
    }

    /// What a 405 tells the client to use instead.
    pub(crate) fn hint(self) -> &'static str {
        match self {
            Methods::Post => "POST",
            Methods::Get => "GET",
            Methods::Any => "any method",
        }
    }
}

pub(crate) use super::dialect::Dialect;

/// One endpoint under `/v1`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The path under `/v1/`, without a trailing slash.
    pub(crate) path: &'static str,
    /// The methods it takes.
    pub(crate) methods: Methods,
    /// Its body is JSON, read for `model` and `stream` before it is sent
    /// (a body that is not JSON gets a 400 and is never sent).
    pub(crate) peeked: bool,
    /// The dialect it speaks: its streams' events and its errors' shape.
    pub(crate) dialect: Dialect,
    /// Its label in metrics and the request log's route.
    pub(crate) label: &'static str,
    /// OpenRouter answers it without a key: with no usable key, it is sent
    /// without one.
    pub(crate) keyless: bool,
    /// Its 401s and 403s speak of the key (invalid, over its limit); on any
    /// other path they are about the request (a management route an
    /// ordinary key may not use, say), relayed and never held against the
    /// key.
    pub(crate) key_errors: bool,
}

const fn inference(path: &'static str, dialect: Dialect, label: &'static str) -> Endpoint {
    Endpoint {
        path,
        methods: Methods::Post,
        peeked: true,
        dialect,
        label,
        keyless: false,
        key_errors: true,
    }
}

const fn forwarded(path: &'static str, label: &'static str) -> Endpoint {
    Endpoint {
        path,
        methods: Methods::Any,
        peeked: false,
        dialect: Dialect::Plain,
        label,
        keyless: false,
        key_errors: false,
    }
}

/// `GET /key`: what OpenRouter knows of the key itself.
const fn key_info(path: &'static str, label: &'static str) -> Endpoint {
    Endpoint {
        key_errors: true,
        ..forwarded(path, label)
    }
}

/// The endpoints orproxy knows.
pub(crate) const ENDPOINTS: [Endpoint; 15] = [
    inference("chat/completions", Dialect::Chat, "/v1/chat/completions"),
    inference("completions", Dialect::Chat, "/v1/completions"),
    inference("embeddings", Dialect::Plain, "/v1/embeddings"),
    inference("responses", Dialect::Responses, "/v1/responses"),
    inference("messages", Dialect::Messages, "/v1/messages"),
    inference(
        "messages/count_tokens",
        Dialect::Messages,
        "/v1/messages/count_tokens",
    ),
    inference("rerank", Dialect::Plain, "/v1/rerank"),
    Endpoint {
        path: "models",
        methods: Methods::Get,
        peeked: false,
        dialect: Dialect::Plain,
        label: "/v1/models",
        keyless: true,
        key_errors: true,
    },
    forwarded("generation", "/v1/generation"),
    key_info("key", "/v1/key"),
    key_info("auth/key", "/v1/auth/key"),
    forwarded("credits", "/v1/credits"),
    forwarded("providers", "/v1/providers"),
    forwarded("models/user", "/v1/models/user"),
    forwarded("models/count", "/v1/models/count"),
];

/// Any other path under `/v1`: forwarded as it is.
pub(crate) const OTHER: Endpoint = forwarded("", "/v1/other");

/// The endpoint of `tail`, the path after `/v1/` (a trailing slash is
/// ignored).
pub(crate) fn lookup(tail: &str) -> &'static Endpoint {
    let tail = tail.trim_end_matches('/');
    ENDPOINTS.iter().find(|e| e.path == tail).unwrap_or(&OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_row_and_others_are_forwarded() {
        assert_eq!(lookup("chat/completions").label, "/v1/chat/completions");
        assert_eq!(lookup("chat/completions/").dialect, Dialect::Chat);
        assert_eq!(lookup("responses").dialect, Dialect::Responses);
        assert_eq!(lookup("messages/count_tokens").dialect, Dialect::Messages);
        assert_eq!(lookup("models").dialect, Dialect::Plain);
        assert!(lookup("messages").peeked);
        assert!(lookup("models").keyless);
        assert!(!lookup("models/user").keyless);
        // Where a 401 means the key is invalid, and where it does not.
        for path in ["chat/completions", "responses", "models", "key", "auth/key"] {
            assert!(lookup(path).key_errors, "{path}");
        }
        for path in ["credits", "generation", "keys", "models/user"] {
            assert!(!lookup(path).key_errors, "{path}");
        }
        assert_eq!(lookup("anything/else"), &OTHER);
        assert_eq!(lookup(""), &OTHER);
    }

    #[test]
    fn methods_are_checked_per_endpoint() {
        let chat = lookup("chat/completions");
        assert!(chat.methods.allow("POST"));
        assert!(!chat.methods.allow("GET"));
        assert!(lookup("models").methods.allow("HEAD"));
        assert!(!lookup("models").methods.allow("POST"));
        assert!(OTHER.methods.allow("DELETE"));
    }

    #[test]
    fn paths_and_labels_are_unique() {
        for (i, a) in ENDPOINTS.iter().enumerate() {
            for b in &ENDPOINTS[i + 1..] {
                assert_ne!(a.path, b.path);
                assert_ne!(a.label, b.label);
            }
            assert_eq!(a.label, format!("/v1/{}", a.path));
        }
    }
}
