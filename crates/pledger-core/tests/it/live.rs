//! A live state ([`Detail::Live`]) decides exactly as a full one: the same histories, the
//! same commands, the same events or the same rule broken, while it keeps only the open
//! releases, the latest ended ones and the artifacts in use.

use proptest::prelude::*;

use pledger_core::event::{ReviewLayer, ReviewVerdict};
use pledger_core::routing::routing_table_for;
use pledger_core::state::{Detail, RECENT};
use pledger_core::{Command, PromptState};

use crate::support::*;

/// One step of a generated history: which command, and two small numbers it picks its
/// release and version with (old ones included, and one past the last).
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    a: u8,
    b: u8,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0u8..16, any::<u8>(), any::<u8>()).prop_map(|(kind, a, b)| Step { kind, a, b }),
        60..220,
    )
}

/// The full state's world and the live one's, fed the same commands at the same times.
struct Twins {
    full: World,
    live: World,
    /// Versions published so far (vid(1) ..= vid(published)).
    published: u32,
}

impl Twins {
    fn new() -> Twins {
        let full = World::new().with(AUTHOR, register());
        let mut live = World::new();
        live.state = PromptState::live(prompt());
        live.run(AUTHOR, register());
        Twins {
            full,
            live,
            published: 0,
        }
    }

    /// Runs `command` on both; both must decide alike.
    fn run(&mut self, who: &str, command: Command) -> bool {
        let full = self.full.try_run(who, command.clone());
        let live = self.live.try_run(who, command.clone());
        assert_eq!(full, live, "{who}: {command:?}");
        if let (Ok(events), Command::PublishVersion { .. }) = (&full, &command) {
            if !events.is_empty() {
                self.published += 1;
            }
        }
        full.is_ok()
    }

    /// [`Twins::run`], whatever the outcome.
    fn go(&mut self, who: &str, command: Command) {
        self.run(who, command);
    }

    fn release(&self, pick: u8) -> u32 {
        1 + pick as u32 % (self.full.state.last_release_number() + 1)
    }

    fn version(&self, pick: u8) -> u32 {
        1 + pick as u32 % (self.published + 1)
    }

    /// A release from proposal to completion, on a new version.
    fn cycle(&mut self) {
        let n = self.published + 1;
        self.run(AUTHOR, publish(n));
        if self.full.state.stable.is_none() {
            self.run(OPS, adopt(n));
            return;
        }
        if !self.run(AUTHOR, propose(n)) {
            return;
        }
        let r = self.full.state.last_release_number();
        let baseline = self.full.state.stable.clone().expect("a stable version");
        self.run(PRODUCT, approve(r, ReviewLayer::Product));
        self.run(TECH, approve(r, ReviewLayer::Technical));
        self.run(CI, attach(r, bundle(&vid(n), &baseline)));
        self.run(CI, gate(r));
        self.run(OPS, plan_rollout(r, standard_plan()));
        self.run(OPS, start(r));
        for pair in STAGES.windows(2) {
            self.run(OPS, advance(r, pair[0]));
        }
        self.run(OPS, complete(r));
    }

    fn step(&mut self, s: &Step) {
        let (r, v) = (self.release(s.a), self.version(s.b));
        match s.kind {
            0..=3 => self.cycle(),
            4 => self.go(AUTHOR, publish(v)),
            5 => self.go(OPS, adopt(v)),
            6 => self.go(AUTHOR, propose(v)),
            7 => self.go(AUTHOR, withdraw(r)),
            8 => self.go(
                OPS,
                if s.b.is_multiple_of(2) {
                    rollback()
                } else {
                    rollback_of(r)
                },
            ),
            9 => self.go(OPS, start(r)),
            10 => self.go(OPS, advance(r, STAGES[s.b as usize % 4])),
            11 => self.go(OPS, complete(r)),
            12 => {
                let layer = [ReviewLayer::Product, ReviewLayer::Technical][s.b as usize % 2];
                let verdict =
                    [ReviewVerdict::Approve, ReviewVerdict::RequestChanges][s.b as usize / 2 % 2];
                self.go([PRODUCT, TECH][s.b as usize % 2], review(r, layer, verdict))
            }
            13 => self.go(
                OPS,
                [pause(r), resume(r), freeze(r)][s.b as usize % 3].clone(),
            ),
            14 => self.go(AUTHOR, revise(r, v)),
            _ => self.go(OPS, plan_rollout(r, standard_plan())),
        }
    }

    /// What the live state keeps, and that it agrees with the full one on it.
    fn check(&self) {
        let (full, live) = (&self.full.state, &self.live.state);
        assert_eq!(live.detail, Detail::Live);
        assert_eq!(live.version_order, full.version_order);
        assert_eq!(live.ended, full.ended);
        assert_eq!(live.stable, full.stable);
        assert_eq!(live.last_release_number(), full.last_release_number());
        assert_eq!(full.ended.len() + open(full), full.releases.len());
        for (n, r) in &live.releases {
            assert_eq!(
                Some(r),
                full.releases.get(n),
                "r{n} kept as the full state has it"
            );
        }
        assert!(
            live.releases.len() <= open(full) + RECENT,
            "{} kept",
            live.releases.len()
        );
        assert!(
            live.versions.len() <= RECENT + 1 + 2 * live.releases.len(),
            "{} artifacts kept",
            live.versions.len()
        );
        for (v, p) in &live.versions {
            assert_eq!(Some(p), full.versions.get(v));
        }
        // Every ended release reads the same through the view as through its full record,
        // in what decisions read of it.
        for n in 1..=full.last_release_number() {
            let id = rid(n);
            let (a, b) = (full.release(&id).unwrap(), live.release(&id).unwrap());
            assert_eq!(
                (
                    a.status.name(),
                    &a.candidate,
                    &a.baseline,
                    &a.author,
                    a.proposed_at
                ),
                (
                    b.status.name(),
                    &b.candidate,
                    &b.baseline,
                    &b.author,
                    b.proposed_at
                ),
                "r{n}"
            );
        }
        // Routing reads the same, once a reader fetched what the live state let go of.
        let mut filled = live.clone();
        for v in filled.missing_artifacts() {
            filled.keep_artifact(&v, full.versions[&v].clone());
        }
        assert!(filled.missing_artifacts().is_empty());
        assert_eq!(routing_table_for(&filled, 7), routing_table_for(full, 7));
        // And a live state survives its snapshot's JSON whole.
        let again: PromptState =
            serde_json::from_slice(&serde_json::to_vec(live).unwrap()).unwrap();
        assert_eq!(&again, live);
    }
}

fn open(state: &PromptState) -> usize {
    state
        .releases
        .values()
        .filter(|r| r.status.ended().is_none())
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_live_state_decides_as_the_full_state_does(steps in steps()) {
        let mut twins = Twins::new();
        for s in &steps {
            twins.step(s);
            twins.check();
        }
    }
}

/// The generated histories reach what the property is about: more ended releases and
/// versions than a live state keeps, and decisions about releases it no longer keeps.
#[test]
fn a_long_history_leaves_a_live_state_small() {
    let mut twins = Twins::new();
    for i in 0..40u8 {
        twins.cycle();
        if i % 5 == 0 {
            // An old version proposed again: its artifact comes back from the full read.
            twins.run(AUTHOR, propose(1 + i as u32 / 2));
        }
    }
    twins.check();
    let (full, live) = (&twins.full.state, &twins.live.state);
    assert!(full.ended.len() >= 30, "{} ended", full.ended.len());
    assert!(live.releases.len() <= open(full) + RECENT);
    assert!(live.versions.len() < full.versions.len() / 2);
    // A command about an ended release the live state no longer keeps in full.
    assert!(!live.releases.contains_key(&2));
    twins.run(OPS, rollback_of(2));
    twins.run(AUTHOR, withdraw(2));
    twins.run(PRODUCT, approve(2, ReviewLayer::Product));
    twins.run(OPS, rollback());
    twins.check();
    // The most recent completed release still serving, as both states see it.
    let (full, live) = (&twins.full.state, &twins.live.state);
    let serving = live.last_completed_serving().map(|r| r.id.clone());
    assert_eq!(serving, full.last_completed_serving().map(|r| r.id.clone()));
}
