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
/// returns (wrong length, a flag that is not 0 or 1, a negative duration) is [`StoreError::BadReply`].
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
        if allowed == (retry != 0) || old_tat < 0 || new_tat < 0 {
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
