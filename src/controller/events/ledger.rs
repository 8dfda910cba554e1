//! Which violation Events to publish. Each violation's Event has a name derived from the policy,
//! the control and the offending object, so the API server itself refuses a second Event for it:
//! after a restart or a leader change, the Events an earlier process published count as
//! announced. In memory, onus keeps only the violations failing now (per live policy) and, for
//! a bounded while, the fixed ones, so one that comes back continues its Event's series.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
    time::{Duration, Instant},
};

/// How long a fixed violation is remembered (the API server keeps Events for an hour by default);
/// one that comes back later gets its Event created again, or found still there.
pub const RECURRENCE_MEMORY: Duration = Duration::from_secs(3600);
/// At most this many fixed violations are remembered; the oldest go first.
pub const MAX_FIXED: usize = 10_000;
/// How long a violation whose Event the API server forbade waits before it is offered again:
/// a missing permission is usually fixed by hand, not in seconds, and a forbidden Event must
/// not take the place of others in every evaluation meanwhile.
pub const FORBIDDEN_RETRY: Duration = Duration::from_secs(300);

/// How to publish one violation's Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// Create it; one already there (published by an earlier process) is left as it is.
    Create,
    /// The violation was fixed and has come back: continue the Event's series at `count`.
    Recur { count: i32 },
}

/// The bookkeeping; Event names identify violations (they include the policy's uid). Names are
/// remembered as 64-bit digests: a large cluster has thousands of violations per policy, and
/// the digest is an eighth of a name's memory (a collision would at worst leave one Event
/// unpublished; the violation stays in status). The digest is keyed with random keys of this
/// process: whoever names objects cannot precompute two names that collide (with fixed keys, a
/// birthday search of about 2^32 names finds a pair, and one violation's Event would stay
/// unpublished while its decoy fails).
#[derive(Debug, Default)]
pub struct Ledger {
    keys: RandomState,
    /// Per policy uid: the Events of its violations failing now, with their series count.
    current: HashMap<String, HashMap<u64, i32>>,
    /// Events of violations fixed within [`RECURRENCE_MEMORY`]: series count and when fixed.
    fixed: HashMap<u64, (i32, Instant)>,
    /// Events the API server forbade: not offered again before this time.
    forbidden: HashMap<u64, Instant>,
}

impl Ledger {
    /// The digest a violation's Event is remembered by, from the parts that make its name
    /// (policy uid, control, offender).
    pub fn digest(&self, parts: &[&str]) -> u64 {
        self.keys.hash_one(parts)
    }

    /// Brings `policy`'s entry to the Events of its violations failing now (`failing`: digest
    /// and what to publish it from), forgets policies not in `live`, and returns up to `max`
    /// Events to publish, in the order of `failing`.
    pub fn update<T>(
        &mut self,
        policy: &str,
        failing: Vec<(u64, T)>,
        live: &HashSet<String>,
        now: Instant,
        max: usize,
    ) -> Vec<(u64, T, Announce)> {
        // A deleted policy's violations are gone with it; their Events expire on their own.
        self.current
            .retain(|uid, _| uid == policy || live.contains(uid));
        self.fixed
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < RECURRENCE_MEMORY);
        self.forbidden
            .retain(|_, until| now.saturating_duration_since(*until) < RECURRENCE_MEMORY);
        let seen = self.current.entry(policy.to_string()).or_default();
        let now_failing: HashSet<u64> = failing.iter().map(|(d, _)| *d).collect();
        let gone: Vec<u64> = seen
            .keys()
            .filter(|d| !now_failing.contains(*d))
            .copied()
            .collect();
        for d in gone {
            if let Some(count) = seen.remove(&d) {
                self.fixed.insert(d, (count, now));
            }
        }
        let mut publish = Vec::new();
        for (d, item) in failing {
            if publish.len() >= max {
                break;
            }
            if seen.contains_key(&d) {
                continue;
            }
            match self.forbidden.get(&d) {
                Some(until) if *until > now => continue,
                Some(_) => {
                    self.forbidden.remove(&d);
                }
                None => {}
            }
            let (announce, count) = match self.fixed.remove(&d) {
                Some((count, _)) => {
                    let count = count.saturating_add(1);
                    (Announce::Recur { count }, count)
                }
                None => (Announce::Create, 1),
            };
            seen.insert(d, count);
            publish.push((d, item, announce));
        }
        if self.fixed.len() > MAX_FIXED {
            let mut by_age: Vec<(Instant, u64)> =
                self.fixed.iter().map(|(d, (_, at))| (*at, *d)).collect();
            by_age.sort();
            for (_, d) in by_age.into_iter().take(self.fixed.len() - MAX_FIXED) {
                self.fixed.remove(&d);
            }
        }
        publish
    }

    /// Records that an Event whose series was to continue had expired and was created anew.
    pub fn recreated(&mut self, policy: &str, digest: u64) {
        if let Some(count) = self
            .current
            .get_mut(policy)
            .and_then(|seen| seen.get_mut(&digest))
        {
            *count = 1;
        }
    }

    /// Counts a violation whose Event could not be published as not announced: the next
    /// [`Ledger::update`] that finds it failing offers it again (one that came back keeps its
    /// series count).
    pub fn unannounce(&mut self, policy: &str, digest: u64, announce: Announce, now: Instant) {
        let Some(seen) = self.current.get_mut(policy) else {
            return;
        };
        if seen.remove(&digest).is_some()
            && let Announce::Recur { count } = announce
        {
            self.fixed.insert(digest, (count.saturating_sub(1), now));
        }
    }

    /// Counts a violation whose Event the API server forbade as not announced, and holds it
    /// back for [`FORBIDDEN_RETRY`]: a permission may be granted later, but it is not retried
    /// in every evaluation.
    pub fn forbidden(&mut self, policy: &str, digest: u64, announce: Announce, now: Instant) {
        self.unannounce(policy, digest, announce, now);
        self.forbidden.insert(digest, now + FORBIDDEN_RETRY);
    }

    /// How many violations are remembered in all (current and fixed).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.values().map(HashMap::len).sum::<usize>() + self.fixed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Violations identified by their names (the digest of the one-part name).
    fn names(names: &[&str]) -> Vec<(u64, String)> {
        names.iter().map(|n| (key(n), n.to_string())).collect()
    }

    /// A stand-in digest for tests: any injective function of the name will do.
    fn key(name: &str) -> u64 {
        name.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    }

    fn live(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|n| n.to_string()).collect()
    }

    fn created(names: &[&str]) -> Vec<(u64, String, Announce)> {
        names
            .iter()
            .map(|n| (key(n), n.to_string(), Announce::Create))
            .collect()
    }

    #[test]
    fn each_violation_is_published_once_while_it_fails() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        let failing = names(&["a", "b"]);
        let p = live(&["p"]);
        assert_eq!(
            ledger.update("p", failing.clone(), &p, t, 20),
            created(&["a", "b"])
        );
        assert_eq!(ledger.update("p", failing.clone(), &p, t, 20), []);
    }

    #[test]
    fn at_most_max_events_per_update_and_the_rest_later() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        let failing = names(&["a", "b", "c"]);
        let p = live(&["p"]);
        assert_eq!(
            ledger.update("p", failing.clone(), &p, t, 2),
            created(&["a", "b"])
        );
        assert_eq!(
            ledger.update("p", failing.clone(), &p, t, 2),
            created(&["c"])
        );
    }

    #[test]
    fn a_fixed_violation_that_comes_back_continues_its_series() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        let p = live(&["p"]);
        ledger.update("p", names(&["a"]), &p, t, 20);
        assert_eq!(ledger.update("p", names(&[]), &p, t, 20), []);
        let back = ledger.update("p", names(&["a"]), &p, t + Duration::from_secs(60), 20);
        assert_eq!(
            back,
            [(key("a"), "a".to_string(), Announce::Recur { count: 2 })]
        );
        ledger.update("p", names(&[]), &p, t, 20);
        let again = ledger.update("p", names(&["a"]), &p, t + Duration::from_secs(61), 20);
        assert_eq!(
            again,
            [(key("a"), "a".to_string(), Announce::Recur { count: 3 })]
        );
    }

    #[test]
    fn a_violation_fixed_long_ago_is_forgotten() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        let p = live(&["p"]);
        ledger.update("p", names(&["a"]), &p, t, 20);
        ledger.update("p", names(&[]), &p, t, 20);
        let later = t + RECURRENCE_MEMORY + Duration::from_secs(1);
        ledger.update("p", names(&[]), &p, later, 20);
        assert_eq!(ledger.len(), 0);
        assert_eq!(
            ledger.update("p", names(&["a"]), &p, later, 20),
            created(&["a"])
        );
    }

    #[test]
    fn a_deleted_policy_is_forgotten() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        ledger.update("gone", names(&["g1", "g2"]), &live(&["gone", "p"]), t, 20);
        ledger.update("p", names(&["a"]), &live(&["p"]), t, 20);
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn the_memory_of_fixed_violations_is_bounded() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        let p = live(&["p"]);
        let many: Vec<(u64, String)> = (0..MAX_FIXED + 5)
            .map(|i| (i as u64, format!("v{i}")))
            .collect();
        ledger.update("p", many, &p, t, usize::MAX);
        ledger.update("p", names(&[]), &p, t, 20);
        assert_eq!(ledger.len(), MAX_FIXED);
    }

    #[test]
    fn digests_are_keyed_so_collisions_cannot_be_precomputed() {
        // With the fixed keys of `DefaultHasher::new()`, every process digests a name alike,
        // and a pair of colliding names found offline hides one Event for good.
        use std::hash::{DefaultHasher, Hash, Hasher};
        let fixed = |name: &[&str]| {
            let mut h = DefaultHasher::new();
            name.hash(&mut h);
            h.finish()
        };
        let (a, b) = (Ledger::default(), Ledger::default());
        let name = [
            "onus",
            "uid-1",
            "WKL-03",
            "apps/v1",
            "Deployment",
            "shop",
            "web",
        ];
        assert_ne!(a.digest(&name), fixed(&name));
        assert_ne!(a.digest(&name), b.digest(&name));
        assert_eq!(a.digest(&name), a.digest(&name));
    }

    #[test]
    fn a_recreated_event_restarts_its_series() {
        let (mut ledger, t) = (Ledger::default(), Instant::now());
        let p = live(&["p"]);
        ledger.update("p", names(&["a"]), &p, t, 20);
        ledger.update("p", names(&[]), &p, t, 20);
        ledger.update("p", names(&["a"]), &p, t, 20);
        ledger.recreated("p", key("a"));
        ledger.update("p", names(&[]), &p, t, 20);
        let back = ledger.update("p", names(&["a"]), &p, t, 20);
        assert_eq!(
            back,
            [(key("a"), "a".to_string(), Announce::Recur { count: 2 })]
        );
    }
}
