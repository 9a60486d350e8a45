//! The statistics key of a rule, as envoyproxy/ratelimit names it.
//!
//! Apart because its layout (where the domain and the first level end) is what the Prometheus
//! labels are cut from, and it is built both while matching and again for `detailed_metric`.

/// A rule's statistics key, as envoyproxy/ratelimit builds it: the domain, then one part per
/// level, joined with `.` (`edge.tenant_acme.plan`). A level's part is `key_value` for a node
/// with a value (the pattern itself for a wildcard) and `key` for a key-only node; with
/// `value_to_metric` on that level's node, or `detailed_metric` on the last node (every level
/// then), it is `key_value` with the request's value.
///
/// envoyproxy/ratelimit's Prometheus mapping splits the key at its dots into labels `domain`,
/// `key1` and `key2`; this one keeps where the domain and the first level end, so that a dot
/// inside a value does not move a label ([`key2`](Self::key2) is every level after the first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatKey {
    full: String,
    domain_end: usize,
    key1_end: Option<usize>,
}

impl StatKey {
    /// A key of `domain` with no level yet.
    pub fn new(domain: &str) -> Self {
        // Room for a couple of levels, so that pushing them rarely reallocates.
        let mut full = String::with_capacity(domain.len() + 48);
        full.push_str(domain);
        StatKey {
            domain_end: full.len(),
            full,
            key1_end: None,
        }
    }

    /// Appends one level: `key`, or `key_value` when `value` is given.
    pub fn push(&mut self, key: &str, value: Option<&str>) {
        self.full.push('.');
        self.full.push_str(key);
        if let Some(value) = value {
            self.full.push('_');
            self.full.push_str(value);
        }
        if self.key1_end.is_none() {
            self.key1_end = Some(self.full.len());
        }
    }

    /// The whole key, `domain.part.part`, as envoyproxy/ratelimit's statsd names carry it.
    pub fn full(&self) -> &str {
        &self.full
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        &self.full[..self.domain_end]
    }

    /// The first level's part (empty for a key of no level).
    pub fn key1(&self) -> &str {
        match self.key1_end {
            Some(end) => &self.full[self.domain_end + 1..end],
            None => "",
        }
    }

    /// The parts of every level after the first, joined with `.`; `None` for a one-level key.
    pub fn key2(&self) -> Option<&str> {
        let end = self.key1_end?;
        (end < self.full.len()).then(|| &self.full[end + 1..])
    }
}
