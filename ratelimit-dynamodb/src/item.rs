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
