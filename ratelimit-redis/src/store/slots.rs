//! Requests across Redis Cluster slots: one script call per slot, in slot order, undone when a
//! later slot denies.
//!
//! Apart because a cluster cannot run one script over keys of several slots: all or nothing here
//! is a sequence of calls and undos, with its own promise (it only under-admits).

use ratelimit_core::{Limit, StoreError, Verdict};

use crate::script::{self, LimitReply};

use super::RedisStore;
use super::connection::Source;

impl RedisStore {
    /// The limits grouped by cluster slot, in ascending slot order; one group on a single server.
    pub(super) fn slot_groups<'a>(&self, limits: &[Limit<'a>]) -> Vec<Vec<Limit<'a>>> {
        if matches!(self.shared.source, Source::Standalone(..)) {
            return vec![limits.to_vec()];
        }
        let mut slotted: Vec<(u16, Limit<'a>)> = limits
            .iter()
            .map(|l| {
                let slot = crate::slot::slot(self.redis_key(l.key).as_bytes());
                (slot, *l)
            })
            .collect();
        slotted.sort_by_key(|(slot, _)| *slot);
        let mut groups: Vec<(u16, Vec<Limit<'a>>)> = Vec::new();
        for (slot, limit) in slotted {
            match groups.last_mut() {
                Some((last, group)) if *last == slot => group.push(limit),
                _ => groups.push((slot, vec![limit])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Decides a request whose limits span several slots; see the type's documentation.
    pub(super) async fn acquire_across_slots(
        &self,
        limits: &[Limit<'_>],
        groups: &[Vec<Limit<'_>>],
    ) -> Result<Verdict, StoreError> {
        // Step 1: look at every slot; a denial anywhere ends it with nothing written.
        let mut looked = Vec::with_capacity(groups.len());
        for group in groups {
            let reply = self.decide(group, false).await?;
            looked.push(script::parse_reply(&reply, group)?);
        }
        if looked.iter().any(|(admitted, _)| !admitted) {
            return Ok(in_request_order(limits, groups, false, &looked));
        }
        // Step 2: debit slot by slot, undoing the ones done if a later one denies.
        let mut debited: Vec<Vec<LimitReply>> = Vec::with_capacity(groups.len());
        for (i, group) in groups.iter().enumerate() {
            let reply = self.decide(group, true).await?;
            let (admitted, replies) = script::parse_reply(&reply, group)?;
            if !admitted {
                for (done, done_replies) in groups.iter().zip(&debited) {
                    // A restore that fails keeps its debit, and the request is still denied: an
                    // error here would hand the decision to a failure policy, which may admit a
                    // request a limit has just denied. Keeping the debit only under-admits.
                    let _kept = self.undo(done, done_replies).await;
                }
                let mut answers: Vec<(bool, Vec<LimitReply>)> =
                    debited.into_iter().map(|r| (true, r)).collect();
                answers.push((false, replies));
                answers.extend(looked.into_iter().skip(i + 1));
                return Ok(in_request_order(limits, groups, false, &answers));
            }
            debited.push(replies);
        }
        let answers: Vec<(bool, Vec<LimitReply>)> =
            debited.into_iter().map(|r| (true, r)).collect();
        Ok(in_request_order(limits, groups, true, &answers))
    }
}

/// Puts per-group replies back in the order of the request's limits.
pub(super) fn in_request_order(
    limits: &[Limit<'_>],
    groups: &[Vec<Limit<'_>>],
    admitted: bool,
    answers: &[(bool, Vec<LimitReply>)],
) -> Verdict {
    let mut decisions = Vec::with_capacity(limits.len());
    for limit in limits {
        let found = groups
            .iter()
            .zip(answers)
            .find_map(|(group, (_, replies))| {
                group
                    .iter()
                    .position(|l| l.key == limit.key)
                    .and_then(|i| replies.get(i))
                    .map(|r| r.decision)
            });
        if let Some(decision) = found {
            decisions.push(decision);
        }
    }
    Verdict::new(admitted, decisions)
}
