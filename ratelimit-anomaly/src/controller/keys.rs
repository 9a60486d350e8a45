//! Single keys far above their peers and their own past: penalised for a time to live, lifted
//! when it expires. Histories of heavy keys are kept in bounded memory that churn cannot wipe.

use std::collections::HashMap;

use super::{Action, Cohort, Controller, Reason, Signal, State, Until};
use crate::baseline::Ewma;
use crate::monitor::{Dimension, TickStats};

/// What a typical heavy key sends: the median of the heavy hitters (at least 1). Against the
/// median rather than the mean of all keys, so that a naturally skewed (Zipf) population does not
/// make its head look abusive.
fn peer_rate(heavy: &[crate::sketch::HeavyHitter]) -> f64 {
    if heavy.is_empty() {
        return 1.0;
    }
    let mut counts: Vec<u32> = heavy.iter().map(|h| h.count).collect();
    counts.sort_unstable();
    f64::from(counts[counts.len() / 2]).max(1.0)
}

/// Keys whose history is kept: the heavy hitters of recent ticks, bounded.
pub(super) const KEY_HISTORY: usize = 4096;

/// The history of `key` in `histories`, made when missing. When the table is full, the history
/// seen least often makes room: a flood of one-tick keys only displaces its own kind, and the
/// histories of keys seen for a long time survive any churn (starting over when full, as before,
/// let an attacker wipe every key's past by cycling keys through the heavy hitters).
pub(super) fn remember<K: std::hash::Hash + Eq + Clone>(
    histories: &mut HashMap<K, Ewma>,
    key: K,
    half_life: f64,
) -> &mut Ewma {
    if histories.len() >= KEY_HISTORY && !histories.contains_key(&key) {
        let newest = histories
            .iter()
            .min_by_key(|(_, history)| history.seen())
            .map(|(k, _)| k.clone());
        if let Some(newest) = newest {
            histories.remove(&newest);
        }
    }
    histories
        .entry(key)
        .or_insert_with(|| Ewma::with_half_life(half_life))
}

impl Controller {
    pub(super) fn expire_penalties(&mut self, actions: &mut Vec<Action>) {
        let now = self.tick;
        let expired: Vec<(Dimension, String)> = self
            .penalties
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for (dimension, key) in expired {
            self.penalties.remove(&(dimension, key.clone()));
            actions.push(Action::LiftKey {
                dimension,
                reason: Reason {
                    signal: Signal::Expired,
                    score: 0.0,
                    observed: 0.0,
                    baseline: 0.0,
                    key: Some(key.clone()),
                    ttl: None,
                    cohort: Cohort::Key {
                        dimension,
                        key: key.clone(),
                    },
                    until: Until::Lifted,
                },
                key,
            });
        }
    }

    pub(super) fn judge_keys(&mut self, stats: &TickStats, actions: &mut Vec<Action>) {
        let ttl_ticks = (self.config.penalty_ttl.as_secs_f64() / self.config.tick.as_secs_f64())
            .ceil()
            .max(1.0) as u64;
        if self.tick <= self.config.detector.warmup_ticks {
            // Learn who is normally heavy before judging anyone.
            self.learn_keys(stats);
            return;
        }
        for &dimension in &self.config.key_dimensions {
            let keys = stats.dimension(dimension);
            let peer_rate = peer_rate(&keys.heavy);
            for hitter in &keys.heavy {
                let id = (dimension, hitter.key.clone());
                let rate = f64::from(hitter.count);
                let past = self.key_history.get(&id).filter(|h| h.seen() >= 10);
                let abusive = hitter.count >= self.config.key_min_requests
                    && rate >= self.config.key_peer_factor * peer_rate
                    && past.is_none_or(|p| rate >= self.config.key_baseline_factor * p.mean());
                let allowed = self.config.allow_list.contains(&hitter.key);
                if abusive && !allowed && !self.penalties.contains_key(&id) {
                    self.penalties.insert(id, self.tick + ttl_ticks);
                    actions.push(Action::PenalizeKey {
                        dimension,
                        key: hitter.key.clone(),
                        ttl: self.config.penalty_ttl,
                        reason: Reason {
                            signal: Signal::KeyRate,
                            score: rate / peer_rate,
                            observed: rate,
                            baseline: past.map_or(peer_rate, Ewma::mean),
                            key: Some(hitter.key.clone()),
                            ttl: Some(self.config.penalty_ttl),
                            cohort: Cohort::Key {
                                dimension,
                                key: hitter.key.clone(),
                            },
                            until: Until::Expires {
                                tick: self.tick + ttl_ticks,
                                ttl: self.config.penalty_ttl,
                            },
                        },
                    });
                }
            }
        }
        if self.state == State::Normal {
            self.learn_keys(stats);
        }
    }

    /// Folds the heavy hitters' rates into their histories (bounded: see [`remember`]).
    pub(super) fn learn_keys(&mut self, stats: &TickStats) {
        for &dimension in &self.config.key_dimensions {
            for hitter in &stats.dimension(dimension).heavy {
                let id = (dimension, hitter.key.clone());
                if self.penalties.contains_key(&id) {
                    continue;
                }
                remember(&mut self.key_history, id, 60.0).update(f64::from(hitter.count));
            }
        }
    }
}
