//! The Lua script that decides a request inside Redis, and the translation to and from it.
//!
//! The script reads Redis' own clock (`TIME`), so replicas with skewed clocks cannot hand out extra
//! tokens. All arithmetic is on integer microseconds: Lua numbers are doubles, exact up to 2^53 µs
//! (285 years), and `now + tolerance` stays below that for every valid policy. Numbers go back to
//! Redis as integers (`string.format('%d')` for stored state, integer script replies); nothing
//! passes through `tostring` or Redis' own number formatting, which may print large numbers in
//! exponent form.

use std::time::Duration;

use ratelimit_core::{Decision, Limit, Policy, RequestError, StoreError};

/// Values each limit contributes to the reply.
pub(crate) const REPLY_FIELDS: usize = 6;

/// Decides every limit of a request at one instant of Redis' clock.
///
/// KEYS: the buckets. ARGV[1]: 1 to debit when every limit admits, 0 to only look (peek).
/// Then per limit: emission interval (µs), tolerance = burst × interval (µs), cost.
/// A bucket holds its theoretical arrival time in µs; a missing bucket is full.
///
/// Reply: `{admitted, then per limit: allowed, slack, retry_after, reset_after, old_tat, new_tat}`,
/// all integers in µs. `old_tat` and `new_tat` let a cross-slot request undo exactly its own write.
pub(crate) const DECIDE: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local commit = tonumber(ARGV[1])
local reply = {1}
local new_tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[i * 3 - 1])
  local tolerance = tonumber(ARGV[i * 3])
  local cost = tonumber(ARGV[i * 3 + 1])
  local stored = redis.call('GET', KEYS[i])
  local tat = 0
  if stored then
    tat = tonumber(stored)
    if tat == nil or tat < 0 or tat ~= math.floor(tat) then
      return redis.error_reply('ERR ratelimit: bucket ' .. KEYS[i] .. ' holds no integer state')
    end
  end
  local base = math.max(tat, now)
  local new_tat = base + interval * cost
  local allow_at = new_tat - tolerance
  local n = #reply
  if allow_at <= now then
    new_tats[i] = new_tat
    reply[n + 1] = 1
    reply[n + 2] = tolerance - (new_tat - now)
    reply[n + 3] = 0
    reply[n + 4] = new_tat - now
  else
    reply[1] = 0
    reply[n + 1] = 0
    reply[n + 2] = math.max(tolerance - (base - now), 0)
    reply[n + 3] = allow_at - now
    reply[n + 4] = base - now
  end
  reply[n + 5] = tat
  reply[n + 6] = new_tat
end
if reply[1] == 1 and commit == 1 then
  for i = 1, #KEYS do
    -- Expire when the bucket is full again: whole milliseconds, rounded up, never zero.
    local ttl = math.max(math.floor((new_tats[i] - now + 999) / 1000), 1)
    redis.call('SET', KEYS[i], string.format('%d', new_tats[i]), 'PX', string.format('%d', ttl))
  end
end
return reply
"#;

/// Undoes one admitted write of a cross-slot request whose other part was denied: each bucket gets
/// its old state back, but only if nobody has moved it since (its state is still ours). A bucket
/// another request has moved keeps the debit: the store may then under-admit by that one request,
/// never over-admit.
///
/// KEYS: the buckets. ARGV per key: the state we wrote, the state before it (0: there was none).
pub(crate) const UNDO: &str = r#"
local undone = 0
for i = 1, #KEYS do
  local ours = tonumber(ARGV[i * 2 - 1])
  local before = tonumber(ARGV[i * 2])
  if tonumber(redis.call('GET', KEYS[i])) == ours then
    if before == 0 then
      redis.call('DEL', KEYS[i])
    else
      local ttl = redis.call('PTTL', KEYS[i])
      if ttl > 0 then
        redis.call('SET', KEYS[i], string.format('%d', before), 'PX', ttl)
      else
        redis.call('SET', KEYS[i], string.format('%d', before))
      end
    end
    undone = undone + 1
  end
end
return undone
"#;

/// Redis' clock counts microseconds.
pub(crate) const RESOLUTION_NS: u64 = 1_000;

/// A policy in the script's units: emission interval and tolerance in whole microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MicroPolicy {
    pub(crate) interval_us: u64,
    pub(crate) tolerance_us: u64,
}

impl MicroPolicy {
    /// The interval is rounded up to whole microseconds: never faster than the policy says.
    pub(crate) fn from_policy(policy: &Policy) -> Result<Self, RequestError> {
        let interval_ns = policy.emission_interval_ns();
        if interval_ns < RESOLUTION_NS {
            return Err(RequestError::RateTooFine {
                emission_interval_ns: interval_ns,
                resolution_ns: RESOLUTION_NS,
            });
        }
        let interval_us = interval_ns.div_ceil(RESOLUTION_NS);
        Ok(MicroPolicy {
            interval_us,
            // Cannot overflow: the policy's tolerance in ns fits 2^62, this is at most that / 1000 + burst.
            tolerance_us: interval_us.saturating_mul(u64::from(policy.burst())),
        })
    }
}

/// One limit's part of a script reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitReply {
    pub(crate) decision: Decision,
    pub(crate) old_tat: i64,
    pub(crate) new_tat: i64,
}

/// Checks a script reply and turns it into decisions. Any reply that is not what the script
/// returns (wrong length, a flag that is not 0 or 1, a negative duration, a state that did not move
/// forward, an overall verdict that disagrees with the limits') is [`StoreError::BadReply`].
pub(crate) fn parse_reply(
    reply: &[i64],
    limits: &[Limit<'_>],
) -> Result<(bool, Vec<LimitReply>), StoreError> {
    let expected = 1 + REPLY_FIELDS * limits.len();
    if reply.len() != expected {
        return Err(StoreError::BadReply(format!(
            "the decision script returned {} values for {} limits, expected {expected}",
            reply.len(),
            limits.len()
        )));
    }
    let admitted = flag(reply.first().copied())?;
    let mut decisions = Vec::with_capacity(limits.len());
    for (limit, fields) in limits
        .iter()
        .zip(reply.get(1..).unwrap_or(&[]).chunks_exact(REPLY_FIELDS))
    {
        let &[allowed, slack, retry, reset, old_tat, new_tat] = fields else {
            return Err(StoreError::BadReply("short decision reply".into()));
        };
        let allowed = flag(Some(allowed))?;
        let micro = MicroPolicy::from_policy(&limit.policy)?;
        let (slack, retry, reset) = (
            non_negative(slack)?,
            non_negative(retry)?,
            non_negative(reset)?,
        );
        // The script always moves a bucket forward: `new_tat` is at least one interval past
        // `old_tat`, whether it was written or not.
        if allowed == (retry != 0) || old_tat < 0 || new_tat <= old_tat {
            return Err(StoreError::BadReply(format!(
                "inconsistent decision for {:?}: allowed={allowed} retry_after={retry}us",
                limit.key
            )));
        }
        let remaining = u32::try_from(slack / micro.interval_us).unwrap_or(u32::MAX);
        decisions.push(LimitReply {
            decision: Decision::new(
                allowed,
                limit.policy.burst(),
                remaining,
                Duration::from_micros(retry),
                Duration::from_micros(reset),
            ),
            old_tat,
            new_tat,
        });
    }
    // The script admits exactly when every limit does. A reply that says otherwise is not one it
    // sent, and believing its first flag could admit a request that a limit denied.
    if admitted != decisions.iter().all(|d| d.decision.is_allowed()) {
        return Err(StoreError::BadReply(format!(
            "the decision script said admitted={admitted} against its limits' decisions"
        )));
    }
    Ok((admitted, decisions))
}

fn flag(value: Option<i64>) -> Result<bool, StoreError> {
    match value {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        other => Err(StoreError::BadReply(format!(
            "expected a 0 or 1 flag from the decision script, got {other:?}"
        ))),
    }
}

fn non_negative(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| {
        StoreError::BadReply(format!(
            "negative duration {value}us from the decision script"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 3] = ["a", "b", "c"];

    fn policy() -> Policy {
        Policy::per_second(10).unwrap_or_else(|_| unreachable!())
    }

    fn n_limits(n: usize) -> Vec<Limit<'static>> {
        KEYS.iter()
            .take(n)
            .map(|k| Limit::new(k, policy()))
            .collect()
    }

    /// What the script can send for `n` limits, written from the script's side independently of
    /// `parse_reply`: an overall flag that is the conjunction of the limits', and per limit a 0/1
    /// flag, non-negative durations, a retry-after exactly when denied, and a state moved forward.
    fn well_formed(reply: &[i64], n: usize) -> bool {
        if reply.len() != 1 + 6 * n {
            return false;
        }
        let mut all = true;
        for fields in reply[1..].chunks(6) {
            let (allowed, slack, retry, reset, old, new) = (
                fields[0], fields[1], fields[2], fields[3], fields[4], fields[5],
            );
            if !(allowed == 0 || allowed == 1) || slack < 0 || retry < 0 || reset < 0 {
                return false;
            }
            if (allowed == 1) != (retry == 0) || old < 0 || new <= old {
                return false;
            }
            all &= allowed == 1;
        }
        reply[0] == i64::from(all)
    }

    /// One limit's part of a reply the script could send (values up to 2^53, Lua's exact range).
    fn limit_fields() -> impl Strategy<Value = [i64; 6]> {
        let micros = 0i64..(1 << 53);
        (
            any::<bool>(),
            micros.clone(),
            1i64..(1 << 53),
            micros.clone(),
            micros,
            1i64..(1 << 40),
        )
            .prop_map(|(allowed, slack, retry, reset, old, step)| {
                [
                    i64::from(allowed),
                    slack,
                    if allowed { 0 } else { retry },
                    reset,
                    old,
                    old + step,
                ]
            })
    }

    fn reply_of(fields: &[[i64; 6]]) -> Vec<i64> {
        let admitted = fields.iter().all(|f| f[0] == 1);
        std::iter::once(i64::from(admitted))
            .chain(fields.iter().flatten().copied())
            .collect()
    }

    /// `parse_reply` on `reply` agrees with [`well_formed`]; for a well-formed reply, the
    /// decisions carry its numbers.
    fn check(reply: &[i64], n: usize) -> Result<(), TestCaseError> {
        let limits = n_limits(n);
        let parsed = parse_reply(reply, &limits);
        if !well_formed(reply, n) {
            prop_assert!(
                matches!(parsed, Err(StoreError::BadReply(_))),
                "{reply:?} for {n} limits gave {parsed:?}"
            );
            return Ok(());
        }
        let (admitted, replies) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => return Err(TestCaseError::fail(format!("{reply:?}: {error}"))),
        };
        prop_assert_eq!(admitted, reply[0] == 1);
        prop_assert_eq!(replies.len(), n);
        let interval_us = 100_000u64;
        for (fields, parsed) in reply[1..].chunks(6).zip(&replies) {
            let d = parsed.decision;
            prop_assert_eq!(d.is_allowed(), fields[0] == 1);
            prop_assert_eq!(d.limit(), policy().burst());
            let slack = u64::try_from(fields[1]).unwrap_or_default();
            let remaining = u32::try_from(slack / interval_us).unwrap_or(u32::MAX);
            prop_assert_eq!(d.remaining(), remaining.min(policy().burst()));
            // Decisions hold nanoseconds in a u64: longer waits saturate there.
            let micros = |v: i64| {
                Duration::from_nanos(u64::try_from(v).unwrap_or_default().saturating_mul(1_000))
            };
            prop_assert_eq!(d.retry_after(), micros(fields[2]));
            prop_assert_eq!(d.reset_after(), micros(fields[3]));
            prop_assert_eq!((parsed.old_tat, parsed.new_tat), (fields[4], fields[5]));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_replies_never_panic(
            reply in proptest::collection::vec(any::<i64>(), 0..24),
            n in 1usize..=3,
        ) {
            check(&reply, n)?;
        }

        #[test]
        fn well_formed_replies_round_trip(
            fields in proptest::collection::vec(limit_fields(), 1..=3),
        ) {
            let reply = reply_of(&fields);
            prop_assert!(well_formed(&reply, fields.len()));
            check(&reply, fields.len())?;
        }

        /// A well-formed reply with one value changed to anything, or one value dropped or added,
        /// or its overall verdict or one limit's flag turned over: the near misses an arbitrary
        /// vector almost never hits.
        #[test]
        fn damaged_replies_are_bad_replies(
            fields in proptest::collection::vec(limit_fields(), 1..=3),
            at in any::<prop::sample::Index>(),
            value in prop_oneof![any::<i64>(), -2i64..3, Just(i64::MIN), Just(i64::MAX)],
            damage in 0u8..5,
        ) {
            let mut reply = reply_of(&fields);
            let i = at.index(reply.len());
            match damage {
                0 => reply[i] = value,
                1 => { reply.remove(i); }
                2 => reply.insert(i, value),
                3 => reply[0] = 1 - reply[0],
                _ => {
                    let flag = 1 + 6 * at.index(fields.len());
                    reply[flag] = 1 - reply[flag];
                }
            }
            check(&reply, fields.len())?;
        }
    }

    /// The corpus under `tests/corpus/parse_reply/`: replies worth keeping (found by the properties
    /// above or written by hand), each with the verdict it must get. Format, one item a line:
    /// `limits N`, `expect ok|bad`, `reply v1 v2 ...`; `#` starts a comment.
    #[test]
    fn corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/parse_reply");
        let mut replayed = 0;
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| unreachable!("{dir}: {e}"));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| unreachable!("{e}")).path();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| unreachable!("{e}"));
            let (mut n, mut expect_ok, mut reply) = (None, None, None);
            for line in text.lines().map(str::trim) {
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("limits") => n = words.next().and_then(|w| w.parse::<usize>().ok()),
                    Some("expect") => expect_ok = words.next().map(|w| w == "ok"),
                    Some("reply") => {
                        reply = words
                            .map(str::parse::<i64>)
                            .collect::<Result<Vec<_>, _>>()
                            .ok()
                    }
                    _ => {}
                }
            }
            let (Some(n), Some(expect_ok), Some(reply)) = (n, expect_ok, reply) else {
                unreachable!("{}: needs limits, expect and reply lines", path.display());
            };
            let limits = n_limits(n);
            let parsed = parse_reply(&reply, &limits);
            assert_eq!(parsed.is_ok(), expect_ok, "{}: {parsed:?}", path.display());
            assert_eq!(well_formed(&reply, n), expect_ok, "{}", path.display());
            if let Err(error) = check(&reply, n) {
                unreachable!("{}: {error}", path.display());
            }
            replayed += 1;
        }
        assert!(replayed >= 8, "only {replayed} corpus files in {dir}");
    }

    fn limits(policy: Policy) -> Vec<Limit<'static>> {
        vec![Limit::new("a", policy)]
    }

    #[test]
    fn replies_that_make_no_sense_are_bad_replies() {
        let policy = Policy::per_second(10).unwrap_or_else(|_| unreachable!());
        let limits = limits(policy);
        let bad =
            |reply: &[i64]| matches!(parse_reply(reply, &limits), Err(StoreError::BadReply(_)));
        assert!(bad(&[]), "empty");
        assert!(bad(&[1, 1, 0, 0, 100]), "too short");
        assert!(bad(&[2, 1, 0, 0, 100, 0, 100]), "flag out of range");
        assert!(bad(&[1, 1, -5, 0, 100, 0, 100]), "negative slack");
        assert!(
            bad(&[1, 1, 0, 7, 100, 0, 100]),
            "admitted with a retry-after"
        );
        assert!(
            bad(&[0, 0, 0, 0, 100, 0, 100]),
            "denied without a retry-after"
        );
        let (admitted, replies) = parse_reply(&[1, 1, 200_000, 0, 800_000, 0, 5], &limits)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(admitted);
        assert_eq!(replies[0].decision.remaining(), 2);
    }

    #[test]
    fn rates_finer_than_a_microsecond_are_refused() {
        let policy = Policy::per_second(2_000_000).unwrap_or_else(|_| unreachable!());
        assert_eq!(
            MicroPolicy::from_policy(&policy),
            Err(RequestError::RateTooFine {
                emission_interval_ns: 500,
                resolution_ns: 1_000
            })
        );
        let odd = Policy::per_second(3).unwrap_or_else(|_| unreachable!());
        // 333,333,334 ns rounds up to 333,334 us: never faster than asked.
        assert_eq!(
            MicroPolicy::from_policy(&odd).map(|m| m.interval_us),
            Ok(333_334)
        );
    }
}
