//! The conditional writes a decision makes, as DynamoDB expressions with their names and values.
//!
//! Kept apart and built in one place because the single-key `UpdateItem`, each `Update` of a
//! transaction and the give-back must send exactly the same conditions: a drift between them would
//! let one path admit what another denies.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use ratelimit_core::Policy;

use crate::item::{OP_ATTRIBUTE, TAT_ATTRIBUTE, TTL_ATTRIBUTE, expiry_seconds, number};

// The two conditional writes. A full bucket (no state, or a state at or before now) is set to
// `now + cost·T`; a partly spent one is advanced by `cost·T` in place, on the condition that the
// result stays within the tolerance. Because the second is an increment, concurrent admissions on a
// busy key never conflict with one another: only a bucket crossing between full and spent, or
// running out, fails a condition. Both conditions also ask for a number of the right range, so that
// an item written by hand as a string or a negative fails them and is read (and refused as
// malformed) rather than overwritten; the type test comes first because some emulators fail on
// comparing a string with a number. A fraction of a nanosecond in the past is not caught: it is
// overwritten as the full bucket it describes.
const SET_FULL: &str = "SET #tat = :tat, #exp = :exp, #op = :op";
const IF_FULL: &str =
    "attribute_not_exists(#tat) OR (attribute_type(#tat, :number) AND #tat BETWEEN :zero AND :now)";
// The advance also refuses to apply a second time for the same decision: an SDK retry after a
// reply lost on the way back (the write was applied) must not debit twice. The failed condition
// then returns the item, and its `op` tells the decision that its own write is the one there.
const ADVANCE: &str = "SET #tat = #tat + :inc, #exp = :exp, #op = :op";
const IF_ROOM: &str = "attribute_type(#tat, :number) AND #tat > :now AND #tat <= :last \
                       AND (attribute_not_exists(#op) OR #op <> :op)";
// A give-back restores the state before one decision's write, only while that write is still the
// item's last one (its `op`, and the state it left). Anything else there (a later debit, a reset
// and a new item, an earlier give-back of the same write retried by the SDK) keeps the debit: the
// store then under-admits by that one request, never over-admits, and a give-back never applies
// twice. An unconditional `tat - inc` would turn each of those into credit nobody was given.
const GIVE_BACK: &str = "SET #tat = :before REMOVE #op";
const IF_OURS: &str = "#op = :op AND #tat = :ours";

/// One conditional write: what goes into an `UpdateItem` or a transaction's `Update`.
pub(super) struct Write {
    /// The update expression.
    pub(super) update: &'static str,
    /// The condition expression.
    pub(super) condition: &'static str,
    /// The expression attribute names: exactly those the expressions use (DynamoDB refuses others).
    pub(super) names: HashMap<String, String>,
    /// The expression attribute values, likewise.
    pub(super) values: HashMap<String, AttributeValue>,
    /// The state the write leaves when it is known before it is sent: a full bucket's and a
    /// give-back's. An advance adds to whatever is there, so its result is read from the reply.
    pub(super) leaves: Option<u64>,
}

impl Write {
    /// The debit of `cost` on `policy` at `now` by the decision `token`: an advance in place when
    /// the bucket is `spent` (its state after now), else the write of a full bucket.
    pub(super) fn debit(policy: &Policy, cost: u32, now: u64, token: &str, spent: bool) -> Write {
        let increment = increment(policy, cost);
        let mut values = HashMap::from([
            (":op".to_string(), AttributeValue::S(token.to_string())),
            (":now".to_string(), number(now)),
            (":number".to_string(), number_type()),
        ]);
        if spent {
            // The highest state that still admits: `tat + inc - τ <= now`. cost <= burst, so inc <= τ.
            let full_by = now.saturating_add(policy.tolerance_ns());
            values.insert(":inc".into(), number(increment));
            values.insert(":last".into(), number(full_by.saturating_sub(increment)));
            values.insert(":exp".into(), number(expiry_seconds(full_by)));
            Write {
                update: ADVANCE,
                condition: IF_ROOM,
                names: names(true),
                values,
                leaves: None,
            }
        } else {
            let new_tat = now.saturating_add(increment);
            values.insert(":zero".into(), number(0));
            values.insert(":tat".into(), number(new_tat));
            values.insert(":exp".into(), number(expiry_seconds(new_tat)));
            Write {
                update: SET_FULL,
                condition: IF_FULL,
                names: names(true),
                values,
                leaves: Some(new_tat),
            }
        }
    }

    /// The give-back of the decision `token`'s write, which left `ours`, to the state `before` it
    /// (see [`GIVE_BACK`]).
    pub(super) fn give_back(token: &str, ours: u64, before: u64) -> Write {
        Write {
            update: GIVE_BACK,
            condition: IF_OURS,
            names: names(false),
            values: HashMap::from([
                (":op".to_string(), AttributeValue::S(token.to_string())),
                (":ours".to_string(), number(ours)),
                (":before".to_string(), number(before)),
            ]),
            leaves: Some(before),
        }
    }
}

/// The attribute names of the expressions above; a give-back leaves the expiry as it is.
fn names(with_expiry: bool) -> HashMap<String, String> {
    let mut names = HashMap::from([
        ("#tat".to_string(), TAT_ATTRIBUTE.to_string()),
        ("#op".to_string(), OP_ATTRIBUTE.to_string()),
    ]);
    if with_expiry {
        names.insert("#exp".into(), TTL_ATTRIBUTE.to_string());
    }
    names
}

/// The operand of `attribute_type` that names DynamoDB's number type.
fn number_type() -> AttributeValue {
    AttributeValue::S("N".to_string())
}

/// `cost·T` in nanoseconds; `cost <= burst` keeps it within the tolerance, below 2^62.
pub(super) fn increment(policy: &Policy, cost: u32) -> u64 {
    policy
        .emission_interval_ns()
        .saturating_mul(u64::from(cost))
}
