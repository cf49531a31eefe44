//! The routes orproxy answers itself, in one table with who may use each,
//! and the label of any path for metrics and the request log. Paths under
//! `/v1` and `/api/v1` are the proxy's: their labels come from the endpoint
//! table ([`crate::openrouter::endpoints`]).

use crate::openrouter::endpoints;

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (`/health`).
    Open,
    /// Clients: any bearer token, or one of the client tokens when some are
    /// configured.
    Client,
    /// Clients, or the admin token (`/metrics`, for a scraper that holds
    /// only the admin token).
    ClientOrAdmin,
    /// The admin token only.
    Admin,
}

/// One local route: its path pattern (`{id}` stands for one path segment),
/// which is also its label, and who may use it.
#[derive(Debug)]
pub(crate) struct LocalRoute {
    /// The pattern, e.g. `/admin/keys/{id}`.
    pub(crate) pattern: &'static str,
    /// Who may use it.
    pub(crate) access: Access,
}

/// The routes orproxy answers itself.
pub(crate) const LOCAL: [LocalRoute; 6] = [
    LocalRoute {
        pattern: "/health",
        access: Access::Open,
    },
    LocalRoute {
        pattern: "/metrics",
        access: Access::ClientOrAdmin,
    },
    LocalRoute {
        pattern: "/admin/keys",
        access: Access::Admin,
    },
    LocalRoute {
        pattern: "/admin/keys/{id}/reactivate",
        access: Access::Admin,
    },
    LocalRoute {
        pattern: "/admin/keys/{id}",
        access: Access::Admin,
    },
    LocalRoute {
        pattern: "/admin/usage",
        access: Access::Admin,
    },
];

/// The path under `/v1/` of a proxied path (`/v1/...` or `/api/v1/...`).
pub(crate) fn proxied_tail(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/v1/"))
}

/// Why a raw (percent-encoded) path must not be forwarded upstream: a dot
/// segment (`.` or `..`, also percent-encoded) or an encoded slash or
/// backslash, which could make the upstream resolve another path than the
/// one orproxy checked.
pub(crate) fn path_problem(raw: &str) -> Option<&'static str> {
    for segment in raw.split('/') {
        let lower = segment.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || segment.contains('\\') {
            return Some("an encoded slash");
        }
        if matches!(lower.replace("%2e", ".").as_str(), "." | "..") {
            return Some("a dot segment");
        }
    }
    None
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut segments = path.split('/');
    for want in pattern.split('/') {
        match segments.next() {
            Some(seg) if want == "{id}" && !seg.is_empty() => {}
            Some(seg) if seg == want => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

fn local(path: &str) -> Option<&'static LocalRoute> {
    // Every local route starts with one of these: most paths are proxied
    // and need no pattern matching.
    if !(path.starts_with("/health") || path.starts_with("/metrics") || is_admin(path)) {
        return None;
    }
    LOCAL.iter().find(|r| matches(r.pattern, path))
}

fn is_admin(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Who may use `path`. Unknown paths need what the proxy needs (they get a
/// 404 after the check); unknown admin paths need the admin token.
pub(crate) fn access(path: &str) -> Access {
    match local(path) {
        Some(route) => route.access,
        None if is_admin(path) => Access::Admin,
        None => Access::Client,
    }
}

/// The label of `path` for metrics and the request log: a known route or
/// endpoint, never the raw path (whose values are unbounded).
pub(crate) fn label(path: &str) -> &'static str {
    if let Some(tail) = proxied_tail(path) {
        return endpoints::lookup(tail).label;
    }
    match local(path) {
        Some(route) => route.pattern,
        None if is_admin(path) => "/admin/other",
        None => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(label("/api/v1/chat/completions/"), "/v1/chat/completions");
        assert_eq!(label("/v1/anything/else"), "/v1/other");
        assert_eq!(
            label("/admin/keys/1a2b/reactivate"),
            "/admin/keys/{id}/reactivate"
        );
        assert_eq!(label("/admin/keys/1a2b"), "/admin/keys/{id}");
        assert_eq!(label("/admin/usage"), "/admin/usage");
        assert_eq!(label("/admin/keys/"), "/admin/other");
        assert_eq!(label("/admin/nothing"), "/admin/other");
        assert_eq!(label("/health"), "/health");
        assert_eq!(label("/wp-login.php"), "other");
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        for bad in [
            "/v1/../../x",
            "/v1/./chat/completions",
            "/v1/%2e%2e/%2E%2e/x",
            "/v1/.%2E/keys",
            "/v1/chat%2fcompletions",
            "/v1/a%5Cb",
            "/v1/a\\b",
            "/v1/chat/completions/..",
        ] {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
        for good in [
            "/v1/chat/completions",
            "/v1/models/x...y",
            "/v1/generation",
            "/v1/.well-known",
            "/v1/a%20b",
        ] {
            assert_eq!(path_problem(good), None, "{good}");
        }
    }

    #[test]
    fn access_follows_the_table() {
        assert_eq!(access("/health"), Access::Open);
        assert_eq!(access("/metrics"), Access::ClientOrAdmin);
        assert_eq!(access("/admin/keys/1a2b"), Access::Admin);
        assert_eq!(access("/admin/usage"), Access::Admin);
        assert_eq!(access("/admin"), Access::Admin);
        assert_eq!(access("/admin/x/y"), Access::Admin);
        assert_eq!(access("/v1/chat/completions"), Access::Client);
        assert_eq!(access("/nothing"), Access::Client);
        assert_eq!(access("/healthz"), Access::Client);
    }
}
