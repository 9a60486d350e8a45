//! One bucket, one item: the attribute names, and reading a bucket's state back out of an item.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use ratelimit_core::StoreError;

/// The partition key (a string): the store's prefix followed by the limit's key.
pub const KEY_ATTRIBUTE: &str = "pk";

/// The bucket's state: its theoretical arrival time, in integer nanoseconds since the Unix epoch.
/// A bucket is full when this is at or before now; a missing item or attribute is a full bucket.
pub const TAT_ATTRIBUTE: &str = "tat";

/// When the item may be deleted, in epoch seconds: after the bucket is full again. DynamoDB's TTL
/// deletion lags by hours or days, so a stale item still reads as a full bucket (its `tat` is past).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The write that last debited the bucket: a token unique to one decision (a string). It lets a
/// decision recognise its own write when the SDK retried it after a lost reply, and lets a give-back
/// undo exactly that write and only once.
pub const OP_ATTRIBUTE: &str = "op";

/// The token of the write that left `item` as it is, if the item has one (a string).
pub(crate) fn op_of(item: &HashMap<String, AttributeValue>) -> Option<&str> {
    match item.get(OP_ATTRIBUTE) {
        Some(AttributeValue::S(token)) => Some(token),
        _ => None,
    }
}

/// A token no other decision of any process will use: 128 random bits, in hex.
pub(crate) fn op_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The bucket state in `item`: `None` when the item or its `tat` is absent (a full bucket).
///
/// Anything else that is not a non-negative integer number of nanoseconds is an error: a string,
/// a fraction, a negative or a number past `u64`. A corrupt bucket must not read as a full one.
pub(crate) fn tat_of(
    item: Option<&HashMap<String, AttributeValue>>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    let Some(value) = item.and_then(|item| item.get(TAT_ATTRIBUTE)) else {
        return Ok(None);
    };
    let AttributeValue::N(number) = value else {
        return Err(StoreError::BadReply(format!(
            "item {key:?}: attribute {TAT_ATTRIBUTE:?} is not a number: {value:?}"
        )));
    };
    // Digits only: DynamoDB normalises numbers, so a valid state never has a sign, point or exponent.
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::BadReply(format!(
            "item {key:?}: attribute {TAT_ATTRIBUTE:?} is not a whole number of nanoseconds: {number:?}"
        )));
    }
    number.parse::<u64>().map(Some).map_err(|_| {
        StoreError::BadReply(format!(
            "item {key:?}: attribute {TAT_ATTRIBUTE:?} is out of range: {number:?}"
        ))
    })
}

/// A number attribute, written from an integer (DynamoDB numbers are decimal strings: no f64 on the way).
pub(crate) fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The epoch second at or after `nanos`, plus one: when an item whose bucket fills at `nanos` may go.
pub(crate) fn expiry_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;
    use proptest::prelude::*;

    /// What `tat_of` must make of an item, written from the schema rather than from the code: no
    /// `tat` is a full bucket; a number of decimal digits only that fits a u64 is that state;
    /// anything else is a bad reply, never a full bucket.
    fn expected(item: &HashMap<String, AttributeValue>) -> Result<Option<u64>, ()> {
        match item.get(TAT_ATTRIBUTE) {
            None => Ok(None),
            Some(AttributeValue::N(n))
                if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) =>
            {
                n.parse::<u64>().map(Some).map_err(drop)
            }
            Some(_) => Err(()),
        }
    }

    fn check(item: &HashMap<String, AttributeValue>) -> Result<(), TestCaseError> {
        let decoded = tat_of(Some(item), "k");
        let _ = op_of(item);
        match (expected(item), decoded) {
            (Ok(want), Ok(got)) => prop_assert_eq!(want, got),
            (Err(()), Err(StoreError::BadReply(_))) => {}
            (want, got) => {
                return Err(TestCaseError::fail(format!(
                    "{item:?}: expected {want:?}, got {got:?}"
                )));
            }
        }
        Ok(())
    }

    /// Number strings near the edges: digits, signs, points, exponents, spaces, u64's limit.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "[0-9]{0,25}",
            "[-+ .eE0-9]{0,12}",
            // A sign, a space or a point next to digits: what a lenient integer parser accepts.
            "[-+ .]?[0-9]{1,6}[ .]?",
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            ".*",
        ]
    }

    fn value() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            number_text().prop_map(AttributeValue::N),
            ".*".prop_map(AttributeValue::S),
            "[0-9]{1,20}".prop_map(AttributeValue::S),
            any::<bool>().prop_map(AttributeValue::Bool),
            any::<bool>().prop_map(AttributeValue::Null),
            proptest::collection::vec(any::<u8>(), 0..8)
                .prop_map(|b| AttributeValue::B(Blob::new(b))),
            proptest::collection::vec(number_text(), 0..3).prop_map(AttributeValue::Ns),
            proptest::collection::vec(".*", 0..3).prop_map(AttributeValue::Ss),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(AttributeValue::L),
                proptest::collection::hash_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(AttributeValue::M),
            ]
        })
    }

    fn items() -> impl Strategy<Value = HashMap<String, AttributeValue>> {
        let name = prop_oneof![
            Just(TAT_ATTRIBUTE.to_string()),
            Just(KEY_ATTRIBUTE.to_string()),
            Just(TTL_ATTRIBUTE.to_string()),
            Just(OP_ATTRIBUTE.to_string()),
            Just("TAT".to_string()),
            ".{0,6}",
        ];
        proptest::collection::hash_map(name, value(), 0..5)
    }

    proptest! {
        #[test]
        fn arbitrary_items_decode_as_the_schema_says(item in items()) {
            check(&item)?;
        }

        #[test]
        fn near_integers_decode_as_the_schema_says(
            n in prop_oneof!["[-+ .]?[0-9]{1,6}[ .eE]?[0-9]?", "0*[0-9]{18,21}"],
        ) {
            check(&HashMap::from([(TAT_ATTRIBUTE.to_string(), AttributeValue::N(n))]))?;
        }

        #[test]
        fn arbitrary_tat_values_decode_as_the_schema_says(tat in value()) {
            check(&HashMap::from([(TAT_ATTRIBUTE.to_string(), tat)]))?;
        }
    }

    /// The corpus under `tests/corpus/tat_of/`: items worth keeping, each with the verdict it must
    /// get. Format, one item a line: `attr NAME TYPE VALUE` (TYPE one of N, S, BOOL, NULL; VALUE
    /// the rest of the line, possibly empty), then `expect none`, `expect some N` or `expect bad`;
    /// `#` starts a comment.
    #[test]
    fn corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/tat_of");
        let mut replayed = 0;
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| unreachable!("{dir}: {e}"));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| unreachable!("{e}")).path();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| unreachable!("{e}"));
            let mut item = HashMap::new();
            let mut expect = None;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("attr ") {
                    let mut parts = rest.splitn(3, ' ');
                    let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let raw = parts.next().unwrap_or("").to_string();
                    let value = match kind {
                        "N" => AttributeValue::N(raw),
                        "S" => AttributeValue::S(raw),
                        "BOOL" => AttributeValue::Bool(raw == "true"),
                        "NULL" => AttributeValue::Null(true),
                        other => unreachable!("{}: unknown type {other:?}", path.display()),
                    };
                    item.insert(name.to_string(), value);
                } else if let Some(rest) = line.strip_prefix("expect ") {
                    expect = Some(match rest.trim() {
                        "none" => Ok(None),
                        "bad" => Err(()),
                        some => Ok(some
                            .strip_prefix("some ")
                            .and_then(|n| n.parse::<u64>().ok())),
                    });
                }
            }
            let Some(expect) = expect else {
                unreachable!("{}: no expect line", path.display());
            };
            assert_eq!(
                expected(&item),
                expect,
                "{}: the schema disagrees",
                path.display()
            );
            let decoded = tat_of(Some(&item), "k");
            match (expect, decoded) {
                (Ok(want), Ok(got)) => assert_eq!(want, got, "{}", path.display()),
                (Err(()), Err(StoreError::BadReply(_))) => {}
                (want, got) => unreachable!("{}: expected {want:?}, got {got:?}", path.display()),
            }
            replayed += 1;
        }
        assert!(replayed >= 8, "only {replayed} corpus files in {dir}");
    }

    fn item(value: AttributeValue) -> HashMap<String, AttributeValue> {
        HashMap::from([(TAT_ATTRIBUTE.to_string(), value)])
    }

    #[test]
    fn missing_is_full() {
        assert_eq!(tat_of(None, "k").ok(), Some(None));
        assert_eq!(tat_of(Some(&HashMap::new()), "k").ok(), Some(None));
    }

    #[test]
    fn integers_parse() {
        let item = item(AttributeValue::N("1764547200123456789".into()));
        assert_eq!(
            tat_of(Some(&item), "k").ok(),
            Some(Some(1_764_547_200_123_456_789))
        );
    }

    #[test]
    fn malformed_states_are_errors() {
        for bad in [
            AttributeValue::S("12".into()),
            AttributeValue::Bool(true),
            AttributeValue::N("-5".into()),
            AttributeValue::N("1.5".into()),
            AttributeValue::N("1e9".into()),
            AttributeValue::N("".into()),
            AttributeValue::N("99999999999999999999999".into()),
        ] {
            let result = tat_of(Some(&item(bad.clone())), "k");
            assert!(
                matches!(result, Err(StoreError::BadReply(_))),
                "{bad:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn expiry_rounds_up() {
        assert_eq!(expiry_seconds(0), 1);
        assert_eq!(expiry_seconds(1), 2);
        assert_eq!(expiry_seconds(1_000_000_000), 2);
    }
}
