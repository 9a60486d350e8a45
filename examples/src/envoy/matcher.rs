//! Wildcard values: a `*` anywhere in a configured value, any number of times, each standing for
//! zero or more characters (`/api/*`, `*.example.com`, `/v*/users/*/orders`).
//!
//! Matching is linear in the value's length for each literal segment, with no backtracking
//! beyond the greedy leftmost choice, which is exact for patterns whose only metacharacter is
//! `*`: once a segment has been found at its leftmost place, a later place can only leave less
//! room for the segments after it. A request's value is attacker-chosen, so no pattern may cost
//! more than `segments × value length`.

/// Whether a configured value is a pattern (has a `*`).
pub fn is_pattern(value: &str) -> bool {
    value.contains('*')
}

/// Whether `value` matches `pattern`: the text before the first `*` at the start, the text after
/// the last `*` at the end (not overlapping it), and every text between stars in order between
/// them. Allocates nothing: it runs on every request that reaches a wildcard node.
pub fn matches(pattern: &str, value: &str) -> bool {
    let Some((prefix, rest_of_pattern)) = pattern.split_once('*') else {
        return pattern == value;
    };
    let (middle, suffix) = rest_of_pattern
        .rsplit_once('*')
        .unwrap_or(("", rest_of_pattern));
    if value.len() < prefix.len() + suffix.len() {
        return false;
    }
    let Some(rest) = value.strip_prefix(prefix) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(suffix) else {
        return false;
    };
    for segment in middle.split('*').filter(|s| !s.is_empty()) {
        match rest.find(segment) {
            Some(at) => rest = &rest[at + segment.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_without_a_star_is_no_pattern() {
        assert!(!is_pattern("/api"));
        assert!(is_pattern("/api/*"));
        assert!(matches("/api", "/api"));
        assert!(!matches("/api", "/api/x"));
    }

    #[test]
    fn stars_match_zero_or_more_characters_anywhere() {
        assert!(matches("foo*", "foo"));
        assert!(matches("foo*", "foobar"));
        assert!(!matches("foo*", "fo"));
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", ".example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("/v*/users/*/orders", "/v2/users/42/orders"));
        assert!(matches("/v*/users/*/orders", "/v/users//orders"));
        assert!(!matches("/v*/users/*/orders", "/v2/users/42/order"));
        assert!(matches("*", ""));
        assert!(matches("a**b", "ab"));
        assert!(matches("*ab*ab*", "xxabyyab"));
        assert!(!matches("*ab*ab*", "xxab"));
        // The prefix and the suffix may not share characters.
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("ab*ba", "abba"));
    }
}
