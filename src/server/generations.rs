//! Which key served which generation, for `GET /v1/generation?id=...`
//! (Cline and Roo-Code ask it for a request's cost): OpenRouter answers it
//! only to the account that made the generation, so the lookup goes to
//! that key (or another key of its account). A bounded map (least recently
//! used IDs forgotten first), shared by the workers; an ID it forgot is
//! asked with any key.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// How many generation IDs are remembered.
const REMEMBERED: usize = 10_000;
/// Longest ID remembered (OpenRouter's are about 30 characters).
const MAX_ID: usize = 200;

/// Generation ID → the ID of the key that served it.
pub(crate) struct Generations(Mutex<LruCache<String, String>>);

impl Default for Generations {
    fn default() -> Self {
        Self::with_capacity(REMEMBERED)
    }
}

impl Generations {
    fn with_capacity(n: usize) -> Self {
        Self(Mutex::new(LruCache::new(
            NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
        )))
    }

    /// Generation `id` was served by key `key_id`.
    pub(crate) fn remember(&self, id: &str, key_id: &str) {
        if id.is_empty() || id.len() > MAX_ID {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            map.put(id.to_owned(), key_id.to_owned());
        }
    }

    /// The key that served generation `id`, while remembered.
    pub(crate) fn served_by(&self, id: &str) -> Option<String> {
        self.0.lock().ok()?.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_up_to_the_bound() {
        let g = Generations::with_capacity(2);
        g.remember("gen-1", "k1");
        g.remember("gen-2", "k2");
        assert_eq!(g.served_by("gen-1").as_deref(), Some("k1"));
        // gen-2 is now the least recently used: it goes first.
        g.remember("gen-3", "k1");
        assert_eq!(g.served_by("gen-2"), None);
        assert_eq!(g.served_by("gen-3").as_deref(), Some("k1"));
        assert_eq!(g.served_by("gen-1").as_deref(), Some("k1"));
        g.remember(&"x".repeat(MAX_ID + 1), "k1");
        assert_eq!(g.served_by(&"x".repeat(MAX_ID + 1)), None);
    }
}
