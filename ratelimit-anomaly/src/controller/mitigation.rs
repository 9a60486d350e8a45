//! Acting on the aggregate: the newcomers' budget first, then one route or the global limit,
//! and relaxing step by step once the traffic is calm. Kept apart from the state machine, which
//! decides *when* to act; this decides *on whom* and *how much*.

use super::{Action, Cohort, Controller, Reason, Signal, State, Until};
use crate::monitor::{Dimension, TickStats};

impl Controller {
    /// Tightens where the surge is: one route, when a single route carries most of it (its rise
    /// over its normal level is at least 80% of the total rise); otherwise the global limit.
    pub(super) fn tighten(&mut self, stats: &TickStats, reason: Reason, actions: &mut Vec<Action>) {
        self.last_tightened = self.tick;
        // The cohort that arrived with the anomaly first: a shared budget for newcomers sized from
        // their normal level, before anyone who was already here is touched. Persistent newcomers
        // (sources active every tick) get a budget of their own, sized from theirs, so that a flood
        // cannot spend the budget of people arriving with it.
        let newcomers = stats.newcomer_requests as f64;
        let normal = self.newcomers.mean();
        let floor = self.config.newcomer_floor;
        let newcomers_reason = |observed: f64, baseline: f64| Reason {
            signal: Signal::NewcomerSurge,
            observed,
            baseline,
            key: None,
            cohort: Cohort::Newcomers,
            ..reason.clone()
        };
        match self.newcomer_budget {
            None if self.newcomers.seen() > 10
                && newcomers > self.config.newcomer_factor * normal.max(1.0) =>
            {
                let headroom = self.config.newcomer_headroom;
                let normal_persistent = self.persistent.mean().min(normal);
                let fresh = ((headroom * (normal - normal_persistent)).ceil() as u32).max(floor);
                let persistent = ((headroom * normal_persistent).ceil() as u32).max(floor);
                self.set_newcomer_budget(
                    (fresh, persistent),
                    newcomers_reason(newcomers, normal),
                    actions,
                );
                return;
            }
            // Still hurting with the budget in force: halve what the newcomers share (it grows
            // again while the backend is healthy) before touching anyone else.
            Some((fresh, persistent)) if fresh > floor => {
                let fresh = ((f64::from(fresh) * self.config.tighten_factor) as u32).max(floor);
                self.set_newcomer_budget(
                    (fresh, persistent),
                    newcomers_reason(newcomers, normal),
                    actions,
                );
                return;
            }
            _ => {}
        }
        if let Some((route, rate, normal)) = self.surging_route(stats) {
            let before = self.route_factors.get(&route).copied().unwrap_or(1.0);
            let factor = (before * self.config.tighten_factor).max(self.config.floor);
            if factor < before {
                self.route_factors.insert(route.clone(), factor);
                actions.push(Action::ScaleRoute {
                    reason: Reason {
                        signal: Signal::RouteRate,
                        observed: rate,
                        baseline: normal,
                        key: Some(route.clone()),
                        cohort: Cohort::Route(route.clone()),
                        ..reason
                    },
                    route,
                    factor,
                });
            }
            return;
        }
        let factor = (self.factor * self.config.tighten_factor).max(self.config.floor);
        if factor < self.factor {
            self.factor = factor;
            actions.push(Action::ScaleGlobal { factor, reason });
        }
    }

    /// Puts the newcomers' budget (fresh, persistent) in force, for `reason`.
    fn set_newcomer_budget(
        &mut self,
        (fresh, persistent): (u32, u32),
        reason: Reason,
        actions: &mut Vec<Action>,
    ) {
        self.newcomer_budget = Some((fresh, persistent));
        actions.push(Action::LimitNewcomers {
            per_tick: fresh,
            persistent_per_tick: persistent,
            reason,
        });
    }

    /// While mitigating on a healthy backend, newcomers (not persistent) turned away for want of
    /// budget get more of it: doubled, up to what they asked for, once a tightening has had
    /// `confirm_ticks` to show its effect. A flash crowd arriving during a flood is served once the
    /// flood's persistent sources are held to their own budget; if the crowd itself makes the
    /// backend unhealthy, the next tightening halves the budget again.
    pub(super) fn grow_newcomer_budget(&mut self, stats: &TickStats, actions: &mut Vec<Action>) {
        let Some((fresh, persistent)) = self.newcomer_budget else {
            return;
        };
        if self.tick - self.last_tightened < u64::from(self.config.confirm_ticks) {
            return;
        }
        let asked = stats
            .newcomer_requests
            .saturating_sub(stats.persistent_requests);
        let refused = stats
            .newcomer_limited
            .saturating_sub(stats.persistent_limited);
        if refused == 0 || asked <= u64::from(fresh) {
            return;
        }
        let grown = u32::try_from(asked)
            .unwrap_or(u32::MAX)
            .min(fresh.saturating_mul(2));
        self.set_newcomer_budget(
            (grown, persistent),
            Reason {
                signal: Signal::HealthyBackend,
                score: 0.0,
                observed: asked as f64,
                baseline: f64::from(fresh),
                key: None,
                ttl: None,
                cohort: Cohort::Newcomers,
                until: Until::Calm {
                    quiet_ticks: self.config.quiet_ticks,
                },
            },
            actions,
        );
    }

    pub(super) fn surging_route(&self, stats: &TickStats) -> Option<(String, f64, f64)> {
        let rise = stats.requests as f64 - self.traffic.mean();
        if rise <= 0.0 {
            return None;
        }
        stats
            .dimension(Dimension::Route)
            .heavy
            .iter()
            .filter_map(|hitter| {
                let normal = self.route_history.get(&hitter.key)?.mean();
                let rate = f64::from(hitter.count);
                (rate - normal >= 0.8 * rise).then(|| (hitter.key.clone(), rate, normal))
            })
            .next()
    }

    pub(super) fn relax(&mut self, reason: Reason, actions: &mut Vec<Action>) {
        let step = |factor: f64, by: f64| {
            let relaxed = (factor + by).min(1.0);
            // Steps of 0.1 add up to 0.9999999999999999.
            if relaxed > 1.0 - 1e-9 { 1.0 } else { relaxed }
        };
        let calm = Reason {
            signal: Signal::Calm,
            ..reason
        };
        let until = |factor: f64| {
            if factor >= 1.0 {
                Until::Lifted
            } else {
                Until::Relaxing
            }
        };
        if self.factor < 1.0 {
            self.factor = step(self.factor, self.config.relax_step);
            actions.push(Action::ScaleGlobal {
                factor: self.factor,
                reason: Reason {
                    cohort: Cohort::Everyone,
                    until: until(self.factor),
                    ..calm.clone()
                },
            });
        }
        let mut routes: Vec<String> = self.route_factors.keys().cloned().collect();
        routes.sort();
        for route in routes {
            let factor = step(self.route_factors[&route], self.config.relax_step);
            if factor >= 1.0 {
                self.route_factors.remove(&route);
            } else {
                self.route_factors.insert(route.clone(), factor);
            }
            actions.push(Action::ScaleRoute {
                reason: Reason {
                    cohort: Cohort::Route(route.clone()),
                    until: until(factor),
                    ..calm.clone()
                },
                route,
                factor,
            });
        }
        if self.factor >= 1.0 && self.route_factors.is_empty() {
            if self.newcomer_budget.take().is_some() {
                actions.push(Action::LiftNewcomers {
                    reason: Reason {
                        cohort: Cohort::Newcomers,
                        until: Until::Lifted,
                        ..calm
                    },
                });
            }
            self.state = State::Normal;
        }
    }
}
