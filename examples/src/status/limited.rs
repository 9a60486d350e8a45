//! The most limited keys: a small Space-Saving table of denied keys whose weights decay every
//! second, so that it shows who is being denied now rather than who was an hour ago.
//!
//! Apart because it is fed from the request path (the gateway's observer, the service's
//! decision) and must stay cheap and bounded there: at most [`CAPACITY`] keys of at most
//! [`KEY_BYTES`] bytes, a `try_lock` that drops the record rather than wait, and an evicted
//! entry's buffers reused for the key that takes its place.

use parking_lot::Mutex;
use serde::Serialize;

/// How many keys the table holds. Space-Saving keeps every key denied more often than
/// 1/[`CAPACITY`] of the (decayed) denials, so the few shown are right under any churn.
pub const CAPACITY: usize = 64;

/// How much of a key is kept: a client names its own key, its size must not be the table's.
pub const KEY_BYTES: usize = 128;

/// What is left of a weight after a second: a key's weight is its denials of the last ten
/// seconds or so, and `weight × (1 − DECAY)` its denials a second.
pub const DECAY: f64 = 0.9;

/// A weight below this, after decay, drops the key: it has not been denied for a while.
const FORGOTTEN: f64 = 0.05;

/// One of the most limited keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitedKey {
    /// The rule (gateway) or domain (service) that denied it.
    pub rule: String,
    /// The key, as the rule extracted it (a client address) or the descriptor's entries.
    pub key: String,
    /// Its recent denials a second (the decayed weight times `1 − DECAY`).
    pub per_second: f64,
    /// Its denials since it entered the table (an overestimate by at most what the key it
    /// replaced had, as Space-Saving counts).
    pub denials: u64,
}

#[derive(Debug)]
struct Entry {
    rule: String,
    key: String,
    weight: f64,
    denials: u64,
}

/// The table: see the module's documentation.
#[derive(Debug, Default)]
pub struct LimitedKeys {
    entries: Mutex<Vec<Entry>>,
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl LimitedKeys {
    /// One denial of `key` under `rule`. Dropped (not waited for) while another request or the
    /// page holds the table: a key denied often is recorded by its next denial.
    pub fn record(&self, rule: &str, key: &str) {
        let Some(mut entries) = self.entries.try_lock() else {
            return;
        };
        let (rule, key) = (cut(rule, KEY_BYTES), cut(key, KEY_BYTES));
        if let Some(entry) = entries.iter_mut().find(|e| e.key == key && e.rule == rule) {
            entry.weight += 1.0;
            entry.denials += 1;
        } else if entries.len() < CAPACITY {
            entries.push(Entry {
                rule: rule.to_string(),
                key: key.to_string(),
                weight: 1.0,
                denials: 1,
            });
        } else if let Some(lightest) = entries
            .iter_mut()
            .min_by(|a, b| a.weight.total_cmp(&b.weight))
        {
            // Space-Saving: the newcomer takes the lightest entry's place and its count, so no
            // key denied more than the lightest can be missing. The buffers are reused.
            lightest.rule.clear();
            lightest.rule.push_str(rule);
            lightest.key.clear();
            lightest.key.push_str(key);
            lightest.weight += 1.0;
            lightest.denials += 1;
        }
    }

    /// A second has passed: every weight decays, and keys no longer denied are dropped.
    pub fn decay(&self) {
        let mut entries = self.entries.lock();
        for entry in entries.iter_mut() {
            entry.weight *= DECAY;
        }
        entries.retain(|e| e.weight >= FORGOTTEN);
    }

    /// The `n` most limited keys now, the most limited first.
    pub fn top(&self, n: usize) -> Vec<LimitedKey> {
        let entries = self.entries.lock();
        let mut top: Vec<LimitedKey> = entries
            .iter()
            .map(|e| LimitedKey {
                rule: e.rule.clone(),
                key: e.key.clone(),
                per_second: e.weight * (1.0 - DECAY),
                denials: e.denials,
            })
            .collect();
        top.sort_by(|a, b| {
            b.per_second
                .total_cmp(&a.per_second)
                .then(b.denials.cmp(&a.denials))
        });
        top.truncate(n);
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_denied_key_comes_first_and_the_table_stays_bounded() {
        let keys = LimitedKeys::default();
        for _ in 0..50 {
            keys.record("per-client", "10.0.0.9");
        }
        // Churn: many keys denied once each cannot push the heavy key out.
        for i in 0..1_000 {
            keys.record("per-client", &format!("172.16.{}.{}", i / 250, i % 250));
        }
        let top = keys.top(5);
        assert_eq!(top.len(), 5);
        assert_eq!(top[0].key, "10.0.0.9");
        assert!(top[0].denials >= 50);
        assert!(keys.entries.lock().len() <= CAPACITY);
    }

    #[test]
    fn keys_no_longer_denied_fade_and_are_forgotten() {
        let keys = LimitedKeys::default();
        keys.record("global", "");
        let first = keys.top(1)[0].per_second;
        keys.decay();
        assert!(keys.top(1)[0].per_second < first);
        for _ in 0..60 {
            keys.decay();
        }
        assert!(keys.top(1).is_empty());
    }

    #[test]
    fn a_huge_key_is_cut_on_a_character_boundary() {
        let keys = LimitedKeys::default();
        let huge = "é".repeat(1_000);
        keys.record("r", &huge);
        let top = keys.top(1);
        assert!(top[0].key.len() <= KEY_BYTES);
        assert!(top[0].key.chars().all(|c| c == 'é'));
    }
}
