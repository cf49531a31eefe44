//! `GET /health`: whether orproxy can serve, for people and load balancers.
//! Never needs a token. Key counts come from the availability model (see
//! `pool::availability`), like `keys list` and `/metrics`.

use super::shared::Shared;
use crate::pool::upstream::Outage;
use crate::pool::{Counts, FreeSummary};
use actix_web::{HttpResponse, web};
use chrono::Utc;

/// The body, and whether orproxy can serve (200) or not (503): some key
/// can serve now or later. An upstream outage has a field of its own: the
/// keys stay what they are.
fn health_body(
    counts: Counts,
    free: FreeSummary,
    keys: usize,
    (kind, reachable): (&str, bool),
    outage: Option<&Outage>,
) -> (bool, serde_json::Value) {
    let (ok, status) = if keys == 0 {
        (false, "no keys: add one with `orproxy keys add`")
    } else if counts.disabled == keys {
        (false, "all keys disabled: see `orproxy keys list`")
    } else {
        (true, "ok")
    };
    (
        ok,
        serde_json::json!({
            "status": status,
            "keys": {
                "active": counts.active,
                "free_held": counts.free_held,
                "cooling": counts.cooling,
                "disabled": counts.disabled,
            },
            "free_models": {
                "usable": free.usable,
                "held": free.held,
                "next_usable_at": free.next_usable_at.map(crate::human::rfc3339),
            },
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
    let now = Utc::now();
    let (counts, free, keys) = shared.availability(now);
    let (ok, body) = health_body(
        counts,
        free,
        keys,
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
    use chrono::DateTime;

    fn c(active: usize, free_held: usize, cooling: usize, disabled: usize) -> Counts {
        Counts {
            active,
            free_held,
            cooling,
            disabled,
        }
    }

    #[test]
    fn health_statuses() {
        let none = FreeSummary::default();
        assert!(health_body(c(1, 0, 0, 0), none, 1, ("file", true), None).0);
        assert!(
            health_body(c(0, 0, 2, 1), none, 3, ("file", true), None).0,
            "cooling keys will serve later"
        );
        assert!(
            health_body(c(0, 2, 0, 0), none, 2, ("file", true), None).0,
            "free-held keys serve paid models"
        );
        let (ok, body) = health_body(c(0, 0, 0, 0), none, 0, ("file", true), None);
        assert!(!ok);
        assert!(body["status"].as_str().unwrap().starts_with("no keys"));
        let (ok, body) = health_body(c(0, 0, 0, 2), none, 2, ("file", true), None);
        assert!(!ok);
        assert_eq!(body["keys"]["disabled"], 2);
    }

    #[test]
    fn free_models_say_when_they_can_be_served_again() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let free = FreeSummary {
            usable: 0,
            held: 3,
            next_usable_at: Some(at),
        };
        let (ok, body) = health_body(c(0, 3, 0, 0), free, 3, ("file", true), None);
        assert!(ok);
        assert_eq!(
            body["free_models"],
            serde_json::json!({"usable": 0, "held": 3, "next_usable_at": "2027-01-15T08:00:00Z"})
        );
        assert_eq!(body["keys"]["free_held"], 3);
    }
}
