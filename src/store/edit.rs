//! Administrative changes to a store file, shared by the CLI and (later) the
//! admin API. Each is a plain function on a [`StoreFile`] read under the lock.

use crate::model::{KeyInfo, KeyRecord, StoreFile, assign_id};
use crate::secret::ApiKey;
use chrono::{DateTime, Utc};

/// What adding a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new record with this ID.
    New(String),
    /// The key was already stored under this ID; it was reactivated.
    Reactivated(String),
}

impl Added {
    /// The key's ID either way.
    pub(crate) fn id(&self) -> &str {
        match self {
            Added::New(id) | Added::Reactivated(id) => id,
        }
    }
}

/// Add `key`, or reactivate it when already stored. A given label replaces the
/// old one; fresh `info` from OpenRouter replaces older info.
pub(crate) fn add_key(
    file: &mut StoreFile,
    key: &ApiKey,
    label: Option<&str>,
    info: Option<KeyInfo>,
    now: DateTime<Utc>,
) -> Added {
    if let Some(record) = file.keys.iter_mut().find(|r| r.key == *key) {
        record.state.reactivate();
        record.generation += 1;
        if let Some(label) = label {
            record.label = Some(label.to_owned());
        }
        if info.is_some() {
            record.info = info;
        }
        return Added::Reactivated(record.id.clone());
    }
    let id = assign_id(key, file.keys.iter());
    file.keys.push(KeyRecord {
        id: id.clone(),
        key: key.clone(),
        label: label.map(str::to_owned),
        added_at: now,
        generation: 0,
        state: Default::default(),
        info,
        extra: Default::default(),
    });
    Added::New(id)
}

/// Add `key` unless it is already stored (no reactivation): for keys given
/// at every start, such as `OPENROUTER_API_KEYS`. Returns the new ID.
pub(crate) fn ensure_key(file: &mut StoreFile, key: &ApiKey, now: DateTime<Utc>) -> Option<String> {
    if file.keys.iter().any(|r| r.key == *key) {
        return None;
    }
    Some(add_key(file, key, None, None, now).id().to_owned())
}

/// Why IDs could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdError {
    /// No key has this ID or prefix.
    #[error("no key has the ID \"{id}\"; {}", known_ids(.known))]
    Unknown {
        /// What the user typed.
        id: String,
        /// The IDs in the store.
        known: Vec<String>,
    },
    /// Several keys start with this prefix.
    #[error("\"{id}\" matches several keys ({}); give more of the ID", .matches.join(", "))]
    Ambiguous {
        /// What the user typed.
        id: String,
        /// The matching IDs.
        matches: Vec<String>,
    },
}

fn known_ids(known: &[String]) -> String {
    const SHOWN: usize = 20;
    match known.len() {
        0 => "the store has no keys (add one with `orproxy keys add`)".to_owned(),
        n if n <= SHOWN => format!("known IDs: {}", known.join(", ")),
        n => format!(
            "known IDs: {} and {} more (see `orproxy keys list`)",
            known[..SHOWN].join(", "),
            n - SHOWN
        ),
    }
}

/// Resolve user-typed IDs (exact, or a unique prefix) to record indices, in
/// the order given, without duplicates. All or nothing.
pub(crate) fn resolve_ids(file: &StoreFile, ids: &[String]) -> Result<Vec<usize>, IdError> {
    let mut out = Vec::with_capacity(ids.len());
    for wanted in ids {
        let wanted_lc = wanted.trim().to_ascii_lowercase();
        let index = match file.keys.iter().position(|r| r.id == wanted_lc) {
            Some(i) => i,
            None => {
                let matches: Vec<usize> = file
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !wanted_lc.is_empty() && r.id.starts_with(&wanted_lc))
                    .map(|(i, _)| i)
                    .collect();
                match matches.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(IdError::Unknown {
                            id: wanted.clone(),
                            known: file.keys.iter().map(|r| r.id.clone()).collect(),
                        });
                    }
                    many => {
                        return Err(IdError::Ambiguous {
                            id: wanted.clone(),
                            matches: many.iter().map(|&i| file.keys[i].id.clone()).collect(),
                        });
                    }
                }
            }
        };
        if !out.contains(&index) {
            out.push(index);
        }
    }
    Ok(out)
}

/// Reactivate the given records (indices from [`resolve_ids`]); returns their IDs.
pub(crate) fn reactivate(file: &mut StoreFile, indices: &[usize]) -> Vec<String> {
    let mut done = Vec::with_capacity(indices.len());
    for &i in indices {
        if let Some(record) = file.keys.get_mut(i) {
            record.state.reactivate();
            record.generation += 1;
            done.push(record.id.clone());
        }
    }
    done
}

/// Remove the given records; returns the removed records.
pub(crate) fn remove(file: &mut StoreFile, indices: &[usize]) -> Vec<KeyRecord> {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    let mut removed = Vec::with_capacity(sorted.len());
    for i in sorted {
        if i < file.keys.len() {
            removed.push(file.keys.remove(i));
        }
    }
    removed.reverse();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn key(s: &str) -> ApiKey {
        ApiKey::parse(s).unwrap()
    }

    #[test]
    fn add_then_readd_reactivates_and_bumps_generation() {
        let mut file = StoreFile::default();
        let k = key("sk-or-v1-aaaa");
        let id = add_key(&mut file, &k, Some("one"), None, now());
        assert!(matches!(id, Added::New(_)));
        file.keys[0].state.disabled = true;
        file.keys[0].state.consecutive_failures = 5;
        let again = add_key(&mut file, &k, None, None, now());
        assert_eq!(again, Added::Reactivated(id.id().to_owned()));
        assert_eq!(file.keys.len(), 1);
        assert!(!file.keys[0].state.disabled);
        assert_eq!(file.keys[0].state.consecutive_failures, 0);
        assert_eq!(file.keys[0].generation, 1);
        assert_eq!(file.keys[0].label.as_deref(), Some("one"));
    }

    #[test]
    fn ids_resolve_exact_prefix_unknown_and_ambiguous() {
        let mut file = StoreFile::default();
        for k in ["a", "b", "c"] {
            add_key(&mut file, &key(k), None, None, now());
        }
        // sha256: a=ca978112, b=3e23e816, c=2e7d2c03
        assert_eq!(resolve_ids(&file, &["3e23e816".into()]).unwrap(), vec![1]);
        assert_eq!(resolve_ids(&file, &["CA97".into()]).unwrap(), vec![0]);
        assert_eq!(
            resolve_ids(&file, &["2e".into(), "2e7d".into()]).unwrap(),
            vec![2]
        );
        let err = resolve_ids(&file, &["ffff".into()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("known IDs: ca978112, 3e23e816, 2e7d2c03")
        );
        file.keys[2].id = "ca00ffee".into();
        assert_eq!(
            resolve_ids(&file, &["ca".into()]),
            Err(IdError::Ambiguous {
                id: "ca".into(),
                matches: vec!["ca978112".into(), "ca00ffee".into()]
            })
        );
        assert!(matches!(
            resolve_ids(&file, &[String::new()]),
            Err(IdError::Unknown { .. })
        ));
    }

    #[test]
    fn remove_deletes_and_returns_the_records() {
        let mut file = StoreFile::default();
        for k in ["a", "b", "c"] {
            add_key(&mut file, &key(k), None, None, now());
        }
        let removed = remove(&mut file, &[2, 0]);
        let ids: Vec<&str> = removed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ca978112", "2e7d2c03"]);
        assert_eq!(file.keys.len(), 1);
        assert_eq!(file.keys[0].id, "3e23e816");
    }

    #[test]
    fn colliding_short_id_is_lengthened() {
        let mut file = StoreFile::default();
        add_key(&mut file, &key("a"), None, None, now());
        // Pretend another key already owns this 8-digit ID.
        file.keys[0].id = key("b").short_id();
        let added = add_key(&mut file, &key("b"), None, None, now());
        assert_eq!(added.id().len(), 12);
        assert!(added.id().starts_with(&file.keys[0].id));
    }
}
