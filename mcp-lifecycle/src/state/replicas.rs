//! Replica planning for one server: which instances to create and which to
//! remove so that the server converges on its desired count and its current
//! spec, without ever lowering the number of ready instances on the way.
//!
//! - Failed instances waiting for their retry are live: they count against
//!   the desired count and are retried in place, never replaced.
//! - A spec change (or a digest rollout) is a rolling replacement with one
//!   surge instance and none unavailable: a new instance must be ready before
//!   a ready old one is removed, so a bad new spec never takes a server down.
//! - Scaling down removes the least useful instances first: failed, pending,
//!   starting, unhealthy, then ready; newest first within a class.
//!
//! No I/O: the controller carries out the returned actions.

use super::instance::InstancePhase;
use crate::ports::InstanceId;

/// What the planner needs to know about one instance.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaView<'a> {
    /// Its id.
    pub id: &'a InstanceId,
    /// Its creation order within the server (larger is newer).
    pub ordinal: u64,
    /// Whether it runs the server's current spec (and rollout digest).
    pub current: bool,
    /// Its phase.
    pub phase: &'a InstancePhase,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAction {
    /// Create this many new instances from the current spec.
    Create(u32),
    /// Stop and remove this instance.
    Remove(InstanceId),
}

fn removal_rank(phase: &InstancePhase) -> u8 {
    match phase {
        InstancePhase::Failed { .. } => 0,
        InstancePhase::Pending => 1,
        InstancePhase::Starting { .. } => 2,
        InstancePhase::Unhealthy { .. } => 3,
        InstancePhase::Ready { .. } => 4,
        InstancePhase::Stopping { .. } | InstancePhase::Stopped => 5,
    }
}

/// Plans creations and removals for a server that wants `desired` instances.
pub fn plan_replicas(desired: u32, instances: &[ReplicaView<'_>]) -> Vec<ReplicaAction> {
    let desired = desired as usize;
    let live: Vec<&ReplicaView<'_>> = instances.iter().filter(|v| v.phase.is_live()).collect();
    let mut new: Vec<&ReplicaView<'_>> = live.iter().copied().filter(|v| v.current).collect();
    let old: Vec<&ReplicaView<'_>> = live.iter().copied().filter(|v| !v.current).collect();
    let mut actions = Vec::new();

    // Least useful first, newest first within a class.
    new.sort_by_key(|v| (removal_rank(v.phase), std::cmp::Reverse(v.ordinal)));
    if new.len() > desired {
        let surplus = new.len() - desired;
        for v in new.drain(..surplus) {
            actions.push(ReplicaAction::Remove(v.id.clone()));
        }
    }
    let is_ready = |v: &&&ReplicaView<'_>| matches!(v.phase, InstancePhase::Ready { .. });
    let ready_new = new.iter().filter(is_ready).count();

    // Old instances that do not serve are removed at once: nothing depends on them.
    let mut old_ready: Vec<&ReplicaView<'_>> = Vec::new();
    for v in &old {
        if matches!(v.phase, InstancePhase::Ready { .. }) && desired > 0 {
            old_ready.push(v);
        } else {
            actions.push(ReplicaAction::Remove(v.id.clone()));
        }
    }
    // Remove old ready ones only while enough others stay ready; oldest first.
    old_ready.sort_by_key(|v| v.ordinal);
    let mut ready_total = ready_new + old_ready.len();
    let mut kept_old = old_ready.len();
    for v in &old_ready {
        if ready_total > desired {
            actions.push(ReplicaAction::Remove(v.id.clone()));
            ready_total -= 1;
            kept_old -= 1;
        }
    }
    // Create the missing new ones; while old ones remain, surge by one at most.
    let missing = desired.saturating_sub(new.len());
    let budget = if kept_old > 0 {
        (desired + 1).saturating_sub(new.len() + kept_old)
    } else {
        missing
    };
    let create = missing.min(budget);
    if create > 0 {
        actions.push(ReplicaAction::Create(
            u32::try_from(create).unwrap_or(u32::MAX),
        ));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn ready() -> InstancePhase {
        InstancePhase::Ready {
            since: Timestamp::EPOCH,
        }
    }
    fn failed() -> InstancePhase {
        InstancePhase::Failed {
            next_retry_at: Timestamp::EPOCH,
            reason: "x".into(),
        }
    }

    struct Fixture {
        ids: Vec<InstanceId>,
        rows: Vec<(bool, InstancePhase)>,
    }

    impl Fixture {
        fn new(rows: Vec<(bool, InstancePhase)>) -> Self {
            let ids = (0..rows.len())
                .map(|i| InstanceId::new("s", i as u64))
                .collect();
            Fixture { ids, rows }
        }
        fn plan(&self, desired: u32) -> Vec<ReplicaAction> {
            let views: Vec<ReplicaView<'_>> = self
                .rows
                .iter()
                .enumerate()
                .map(|(i, (current, phase))| ReplicaView {
                    id: &self.ids[i],
                    ordinal: i as u64,
                    current: *current,
                    phase,
                })
                .collect();
            plan_replicas(desired, &views)
        }
    }

    fn rm(i: u64) -> ReplicaAction {
        ReplicaAction::Remove(InstanceId::new("s", i))
    }

    #[test]
    fn scale_up_and_down() {
        assert_eq!(Fixture::new(vec![]).plan(3), vec![ReplicaAction::Create(3)]);
        let f = Fixture::new(vec![
            (true, ready()),
            (true, ready()),
            (true, InstancePhase::Pending),
        ]);
        assert_eq!(f.plan(3), vec![]);
        assert_eq!(f.plan(1), vec![rm(2), rm(1)]);
        assert_eq!(f.plan(0), vec![rm(2), rm(1), rm(0)]);
    }

    #[test]
    fn failed_in_backoff_counts_against_budget() {
        let f = Fixture::new(vec![(true, ready()), (true, failed())]);
        assert_eq!(f.plan(2), vec![], "no replacement for a failed instance");
        assert_eq!(f.plan(1), vec![rm(1)], "the failed one goes first");
    }

    #[test]
    fn rolling_replacement_surges_by_one() {
        // Two old ready, spec changed: create one new, remove nothing yet.
        let f = Fixture::new(vec![(false, ready()), (false, ready())]);
        assert_eq!(f.plan(2), vec![ReplicaAction::Create(1)]);
        // New one starting: wait.
        let f = Fixture::new(vec![
            (false, ready()),
            (false, ready()),
            (true, InstancePhase::Pending),
        ]);
        assert_eq!(f.plan(2), vec![]);
        // New one ready: remove the oldest, and the budget allows the next new one.
        let f = Fixture::new(vec![(false, ready()), (false, ready()), (true, ready())]);
        assert_eq!(f.plan(2), vec![rm(0), ReplicaAction::Create(1)]);
        // A bad new image keeps failing: the old ones keep serving.
        let f = Fixture::new(vec![(false, ready()), (false, ready()), (true, failed())]);
        assert_eq!(f.plan(2), vec![]);
    }

    #[test]
    fn old_instances_that_do_not_serve_go_at_once() {
        // One old stays serving; two new may start beside it (surge of one).
        let f = Fixture::new(vec![(false, failed()), (false, ready())]);
        assert_eq!(f.plan(2), vec![rm(0), ReplicaAction::Create(2)]);
    }

    fn arb_rows() -> impl Strategy<Value = Vec<(bool, u8)>> {
        proptest::collection::vec((any::<bool>(), 0u8..6), 0..8)
    }

    fn phase_of(k: u8) -> InstancePhase {
        match k {
            0 => InstancePhase::Pending,
            1 => InstancePhase::Starting {
                since: Timestamp::EPOCH,
            },
            2 => ready(),
            3 => InstancePhase::Unhealthy {
                since: Timestamp::EPOCH,
            },
            4 => failed(),
            _ => InstancePhase::Stopped,
        }
    }

    proptest! {
        /// Never removes a ready instance while that would leave fewer ready
        /// than desired; never exceeds desired + 1 live during a rollout;
        /// converges to exactly desired current instances when nothing fails.
        #[test]
        fn planning_is_safe(desired in 0u32..5, rows in arb_rows()) {
            let f = Fixture::new(rows.iter().map(|(c, k)| (*c, phase_of(*k))).collect());
            let actions = f.plan(desired);
            let removed: Vec<usize> = actions.iter().filter_map(|a| match a {
                ReplicaAction::Remove(id) => f.ids.iter().position(|x| x == id),
                ReplicaAction::Create(_) => None,
            }).collect();
            let created: u32 = actions.iter().map(|a| if let ReplicaAction::Create(n) = a { *n } else { 0 }).sum();
            let ready_before = f.rows.iter().filter(|(_, p)| matches!(p, InstancePhase::Ready { .. })).count();
            let ready_after = f.rows.iter().enumerate().filter(|(i, (_, p))| matches!(p, InstancePhase::Ready { .. }) && !removed.contains(i)).count();
            if ready_after < ready_before {
                prop_assert!(ready_after >= desired as usize, "removed ready below desired");
            }
            let live_after = f.rows.iter().enumerate().filter(|(i, (_, p))| p.is_live() && !removed.contains(i)).count() + created as usize;
            let old_left = f.rows.iter().enumerate().filter(|(i, (c, p))| !c && p.is_live() && !removed.contains(i)).count();
            if old_left > 0 {
                prop_assert!(live_after <= desired as usize + 1 || created == 0);
            } else {
                let new_live = f.rows.iter().enumerate().filter(|(i, (c, p))| *c && p.is_live() && !removed.contains(i)).count() + created as usize;
                prop_assert_eq!(new_live, desired as usize);
            }
        }
    }
}
