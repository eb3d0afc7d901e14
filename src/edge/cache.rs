//! The edge's cache: complete upstream responses kept as their Cache-Control allows,
//! bounded in bytes, least recently used out first.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;

use super::Head;

/// The longest an edge keeps anything: a year, what an immutable object is given.
/// An upstream's larger `max-age` (up to u64::MAX) is cut to it, never overflowing.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// A response worth keeping for how long; `None` for one that must not be kept.
pub(super) fn lifetime(head: &Head) -> Option<Duration> {
    if head.status != StatusCode::OK {
        return None;
    }
    let cc = head
        .cache_control
        .as_ref()?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let mut max_age = None;
    for directive in cc.split(',').map(str::trim) {
        match directive {
            "no-store" | "no-cache" | "private" => return None,
            d => {
                if let Some(v) = d.strip_prefix("max-age=") {
                    max_age = v.trim().parse::<u64>().ok();
                }
            }
        }
    }
    max_age
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s).min(LONGEST))
}

/// The largest entry a cache of `budget` bytes keeps: an eighth of it.
pub(super) fn max_object(budget: u64) -> u64 {
    budget / 8
}

struct Entry {
    head: Head,
    body: Bytes,
    stored: Instant,
    expires: Instant,
    /// Position in the recency order.
    tick: u64,
}

pub(super) struct Cached {
    pub(super) head: Head,
    pub(super) body: Bytes,
    pub(super) age_s: u64,
}

pub(super) struct Cache {
    budget: u64,
    bytes: u64,
    entries: HashMap<String, Entry>,
    /// tick -> key, oldest first.
    recency: BTreeMap<u64, String>,
    next_tick: u64,
}

impl Cache {
    pub(super) fn new(budget: u64) -> Self {
        Self {
            budget,
            bytes: 0,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_tick: 0,
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn cost(key: &str, body: &Bytes) -> u64 {
        (key.len() + body.len() + 128) as u64
    }

    pub(super) fn get(&mut self, key: &str, now: Instant) -> Option<Cached> {
        let entry = self.entries.get_mut(key)?;
        if now >= entry.expires {
            self.remove(key);
            return None;
        }
        self.recency.remove(&entry.tick);
        self.next_tick += 1;
        entry.tick = self.next_tick;
        self.recency.insert(entry.tick, key.to_string());
        Some(Cached {
            head: entry.head.clone(),
            body: entry.body.clone(),
            age_s: now.duration_since(entry.stored).as_secs(),
        })
    }

    /// Keeps a complete response if its head allows; evicts the least recently used
    /// entries to stay within the budget. One entry may take at most an eighth of it.
    pub(super) fn insert(&mut self, key: String, head: Head, body: Bytes, now: Instant) {
        let Some(life) = lifetime(&head) else {
            return;
        };
        let cost = Self::cost(&key, &body);
        if cost > max_object(self.budget) {
            return;
        }
        self.remove(&key);
        while self.bytes + cost > self.budget {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= Self::cost(&oldest, &e.body);
            }
        }
        self.next_tick += 1;
        self.recency.insert(self.next_tick, key.clone());
        self.bytes += cost;
        self.entries.insert(
            key,
            Entry {
                head,
                body,
                stored: now,
                expires: now.checked_add(life).unwrap_or(now),
                tick: self.next_tick,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.recency.remove(&e.tick);
            self.bytes -= Self::cost(key, &e.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn head(status: StatusCode, cc: &'static str) -> Head {
        Head {
            status,
            cache_control: Some(HeaderValue::from_static(cc)),
            content_type: None,
        }
    }

    #[test]
    fn a_huge_max_age_is_cut_to_a_year_without_overflow() {
        let huge = head(StatusCode::OK, "public, max-age=18446744073709551615");
        assert_eq!(lifetime(&huge), Some(LONGEST));
        let mut cache = Cache::new(1 << 20);
        let now = Instant::now();
        cache.insert("k".into(), huge, Bytes::from_static(b"x"), now);
        assert!(cache.get("k", now + Duration::from_secs(3600)).is_some());
    }

    #[test]
    fn only_ok_responses_with_a_max_age_are_kept() {
        let imm = "public, max-age=31536000, immutable";
        assert_eq!(
            lifetime(&head(StatusCode::OK, imm)),
            Some(Duration::from_secs(31_536_000))
        );
        assert_eq!(
            lifetime(&head(StatusCode::OK, "public, max-age=1")),
            Some(Duration::from_secs(1))
        );
        assert_eq!(lifetime(&head(StatusCode::OK, "no-store")), None);
        assert_eq!(lifetime(&head(StatusCode::OK, "no-cache")), None);
        assert_eq!(lifetime(&head(StatusCode::OK, "public, max-age=0")), None);
        assert_eq!(
            lifetime(&head(StatusCode::NOT_FOUND, "public, max-age=60")),
            None
        );
        assert_eq!(
            lifetime(&head(StatusCode::BAD_REQUEST, "public, max-age=1")),
            None
        );
    }

    #[test]
    fn entries_expire_and_the_least_recently_used_go_first() {
        let now = Instant::now();
        let mut c = Cache::new(8 * 1_000);
        let imm = head(StatusCode::OK, "public, max-age=31536000, immutable");
        let body = Bytes::from(vec![0u8; 700]);
        for k in ["a", "b", "c"] {
            c.insert(k.into(), imm.clone(), body.clone(), now);
        }
        // "a" used again: "b" is now the oldest.
        assert!(c.get("a", now).is_some());
        for k in ["d", "e", "f", "g", "h", "i", "j"] {
            c.insert(k.into(), imm.clone(), body.clone(), now);
        }
        assert!(c.bytes() <= 8_000);
        assert!(c.get("b", now).is_none(), "least recently used evicted");
        assert!(c.get("j", now).is_some());
        // Too big for the budget: not kept at all.
        c.insert(
            "big".into(),
            imm.clone(),
            Bytes::from(vec![0u8; 5_000]),
            now,
        );
        assert!(c.get("big", now).is_none());
        // A playlist lives for its max-age, and says how old it is.
        c.insert(
            "p".into(),
            head(StatusCode::OK, "public, max-age=2"),
            Bytes::from_static(b"x"),
            now,
        );
        let hit = c
            .get("p", now + Duration::from_millis(1_500))
            .expect("fresh");
        assert_eq!(hit.age_s, 1);
        assert!(
            c.get("p", now + Duration::from_secs(2)).is_none(),
            "expired"
        );
    }
}
