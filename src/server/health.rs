//! `GET /health`: whether orproxy can serve, for people and load balancers.
//! Never needs a token.

use super::shared::Shared;
use crate::pool::Counts;
use crate::pool::upstream::Outage;
use actix_web::{HttpResponse, web};
use chrono::Utc;

/// The body, and whether orproxy can serve (200) or not (503): some key
/// can serve now or later. An upstream outage has a field of its own: the
/// keys stay what they are.
fn health_body(
    counts: Counts,
    keys: usize,
    (kind, reachable): (&str, bool),
    outage: Option<&Outage>,
) -> (bool, serde_json::Value) {
    let (ok, status) = if keys == 0 {
        (false, "no keys: add one with `orproxy keys add`")
    } else if counts.active + counts.cooling == 0 {
        (false, "all keys disabled: see `orproxy keys list`")
    } else {
        (true, "ok")
    };
    (
        ok,
        serde_json::json!({
            "status": status,
            "keys": {"active": counts.active, "cooling": counts.cooling, "disabled": counts.disabled},
            "store": {"kind": kind, "reachable": reachable},
            "upstream": match outage {
                None => serde_json::json!({"status": "up", "since": null, "reason": null}),
                Some(o) => serde_json::json!({
                    "status": "down",
                    "since": crate::human::rfc3339(o.since),
                    "reason": o.reason,
                }),
            },
        }),
    )
}

/// `GET /health`.
pub(crate) async fn handle(shared: web::Data<Shared>) -> HttpResponse {
    let (ok, body) = health_body(
        shared.counts(Utc::now()),
        shared.key_count(),
        shared.store_status(),
        shared.outage().as_ref(),
    );
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_statuses() {
        let c = |active, cooling, disabled| Counts {
            active,
            cooling,
            disabled,
        };
        assert!(health_body(c(1, 0, 0), 1, ("file", true), None).0);
        assert!(
            health_body(c(0, 2, 1), 3, ("file", true), None).0,
            "cooling keys will serve later"
        );
        let (ok, body) = health_body(c(0, 0, 0), 0, ("file", true), None);
        assert!(!ok);
        assert!(body["status"].as_str().unwrap().starts_with("no keys"));
        let (ok, body) = health_body(c(0, 0, 2), 2, ("file", true), None);
        assert!(!ok);
        assert_eq!(body["keys"]["disabled"], 2);
    }
}
