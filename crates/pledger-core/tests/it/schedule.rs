//! Release windows in the decider, scheduler notices and the weekly digest.

use pledger_core::decide::{Command, Rule};
use pledger_core::digest::DigestBuilder;
use pledger_core::event::{Notice, ReviewLayer};
use pledger_core::{DurationSpec, Event};

use crate::support::*;

/// Weekdays 09:00 to 16:00 UTC. T0 is Tuesday 2026-11-24 09:00 UTC, so worlds start inside.
const WEEKDAYS: &str =
    "timezone = \"UTC\"\n[[open]]\ncron = \"0 0 9 * * Mon-Fri\"\nduration = \"7h\"\n";
/// Never on Tuesdays (UTC): closes every world that starts at T0.
const NOT_TUESDAY: &str =
    "timezone = \"UTC\"\n[[closed]]\ncron = \"0 0 0 * * Tue\"\nduration = \"1d\"\nnote = \"no Tuesday releases\"\n";

fn force(command: Command, reason: &str) -> Command {
    match command {
        Command::StartRollout {
            release,
            bucketing_salt,
            ..
        } => Command::StartRollout {
            release,
            bucketing_salt,
            force_reason: Some(reason.into()),
        },
        Command::CompleteRelease { release, .. } => Command::CompleteRelease {
            release,
            force_reason: Some(reason.into()),
        },
        Command::AdvanceStage {
            release,
            from_stage,
            readiness,
            ..
        } => Command::AdvanceStage {
            release,
            from_stage,
            force_reason: Some(reason.into()),
            readiness,
        },
        other => other,
    }
}

#[test]
fn start_advance_and_complete_wait_for_an_open_window() {
    // Inside the window: everything proceeds.
    let w = planned().with_fleet_windows(WEEKDAYS).with(OPS, start(1));
    assert!(w.release(1).status.stage().is_some());

    // Closed: start, advance and complete are refused, naming the blackout and the next opening.
    let closed = planned().with_fleet_windows(NOT_TUESDAY);
    let r = closed.decide(OPS, &start(1)).unwrap_err();
    assert_eq!(r.rule, Rule::OutsideReleaseWindow);
    assert!(r.message.contains("no Tuesday releases"), "{}", r.message);
    assert!(
        r.message.contains("2026-11-25T00:00:00.000Z"),
        "{}",
        r.message
    );

    let rolling_closed = rolling().with_fleet_windows(NOT_TUESDAY);
    assert_eq!(
        rolling_closed
            .decide(OPS, &advance(1, "internal"))
            .unwrap_err()
            .rule,
        Rule::OutsideReleaseWindow
    );
    let last_closed = at_last_stage().with_fleet_windows(NOT_TUESDAY);
    assert_eq!(
        last_closed.decide(OPS, &complete(1)).unwrap_err().rule,
        Rule::OutsideReleaseWindow
    );

    // Safety actions never wait: freeze, pause and rollback go through a closed window.
    rolling_closed.clone().with(OPS, freeze(1));
    rolling_closed.clone().with(OPS, pause(1));
    rolling_closed.with(OPS, rollback());
}

#[test]
fn a_person_can_force_past_a_closed_window_with_a_reason_that_is_recorded() {
    let mut w = planned().with_fleet_windows(NOT_TUESDAY);
    let r = w
        .decide(OPS, &force(start(1), "  "))
        .expect_err("a blank reason is refused");
    assert_eq!(r.rule, Rule::ReasonRequired);
    let events = w.run(OPS, force(start(1), "security fix, approved by on-call"));
    match &events[..] {
        [Event::RolloutStarted(e)] => {
            assert!(e.forced);
            assert_eq!(
                e.reason.as_deref(),
                Some("security fix, approved by on-call")
            );
        }
        other => panic!("{other:?}"),
    }
    // A start inside a window is not marked forced, even with --force: it overrode nothing.
    let events = planned().with_fleet_windows(WEEKDAYS).run(OPS, start(1));
    assert!(matches!(&events[..], [Event::RolloutStarted(e)] if !e.forced && e.reason.is_none()));
    let events = planned()
        .with_fleet_windows(WEEKDAYS)
        .run(OPS, force(start(1), "habit"));
    assert!(matches!(&events[..], [Event::RolloutStarted(e)] if !e.forced && e.reason.is_none()));
}

#[test]
fn a_prompts_own_windows_replace_the_global_ones_until_cleared() {
    let always = windows("timezone = \"UTC\"");
    let w = planned().with_fleet_windows(NOT_TUESDAY).with(
        OWNER,
        Command::SetReleaseWindows {
            windows: Some(always.clone()),
        },
    );
    assert_eq!(w.state.windows, Some(always.clone()));
    w.decide(OPS, &start(1))
        .expect("the prompt's own (always open) windows apply");
    // Setting the same windows again records nothing.
    assert_noop(
        &w,
        OWNER,
        Command::SetReleaseWindows {
            windows: Some(always),
        },
    );
    let cleared = w.with(OWNER, Command::SetReleaseWindows { windows: None });
    assert_eq!(cleared.state.windows, None);
    assert_eq!(
        cleared.decide(OPS, &start(1)).unwrap_err().rule,
        Rule::OutsideReleaseWindow
    );
}

#[test]
fn windows_that_do_not_compile_are_refused_naming_the_field() {
    let mut bad = windows("timezone = \"UTC\"");
    bad.timezone = "Mars/Olympus_Mons".into();
    let r = adopted()
        .decide(OWNER, &Command::SetReleaseWindows { windows: Some(bad) })
        .unwrap_err();
    assert_eq!(r.rule, Rule::InvalidInput);
    assert!(r.message.contains("timezone"), "{}", r.message);
}

fn stale(candidate: u32) -> Notice {
    Notice::StaleReview {
        candidate: vid(candidate),
        missing: vec![ReviewLayer::Product, ReviewLayer::Technical],
        waiting: DurationSpec::parse("3d").unwrap(),
    }
}

#[test]
fn notices_are_recorded_once_per_candidate_or_stage_visit() {
    let raise = |notice: Notice| Command::RaiseNotice {
        release: rid(1),
        notice,
    };
    let w = proposed().with("scheduler", raise(stale(2)));
    assert_noop(&w, "scheduler", raise(stale(2)));
    // A revised candidate waits afresh; a notice about the old one no longer applies.
    let w = w.with(AUTHOR, revise(1, 3));
    assert_eq!(
        w.decide("scheduler", &raise(stale(2))).unwrap_err().rule,
        Rule::CandidateUnchanged
    );
    w.with("scheduler", raise(stale(3)));

    let bake = |stage: &str| {
        raise(Notice::BakeReached {
            stage: stage.into(),
        })
    };
    let w = rolling().with("scheduler", bake("internal"));
    assert_noop(&w, "scheduler", bake("internal"));
    assert_eq!(
        w.decide("scheduler", &bake("canary")).unwrap_err().rule,
        Rule::StageMoved
    );
    // The next stage visit gets its own notice.
    let w = w
        .with(OPS, advance(1, "internal"))
        .with("scheduler", bake("canary"));
    assert_eq!(w.release(1).notices.len(), 2);
    // A stale-review notice about a release that is rolling out is refused.
    assert_eq!(
        w.decide("scheduler", &raise(stale(2))).unwrap_err().rule,
        Rule::ReleaseNotOpen
    );
}

#[test]
fn the_digest_reports_the_week_and_ignores_what_came_after_it() {
    // r1 ships; r2 freezes and rolls back; r3 fails its gate and waits for reviews.
    let mut w = completed()
        .with(CI, collect_case("ab", 1))
        .with(AUTHOR, propose(3));
    w.run(PRODUCT, approve(2, ReviewLayer::Product));
    w.run(TECH, approve(2, ReviewLayer::Technical));
    let mut worse = bundle(&vid(3), &vid(2));
    worse.latency_ms.candidate_p95 = worse.latency_ms.baseline_p95 * 3.0;
    worse.covers_regressions = vec![format!("{PROMPT}-rc-{}", "ab".repeat(6))];
    w.run(CI, attach(2, worse.clone()));
    w.run(CI, gate(2));
    w.run(LEAD, accept_tradeoff(2));
    w.run(CI, gate(2));
    w.run(OPS, plan_rollout(2, standard_plan()));
    w.run(OPS, start(2));
    w.run(OPS, freeze(2));
    w.run(OPS, rollback());
    // A proposal that nobody reviews.
    w.run(AUTHOR, publish(4));
    w.run(AUTHOR, propose(4));
    let end = w.now.plus(DurationSpec::parse("4d").unwrap());
    // After the week: ignored.
    w.tick(5 * 86_400_000);
    w.run(
        OPS,
        Command::CloseRegressionCase {
            case_id: format!("{PROMPT}-rc-{}", "ab".repeat(6)),
            reason: "after the week".into(),
        },
    );

    let compose = |log: &[pledger_core::Envelope]| {
        let mut b = DigestBuilder::new(
            "2026-W48",
            T0,
            end,
            "UTC",
            DurationSpec::parse("3d").unwrap(),
        );
        for e in log {
            b.observe(e);
        }
        b.finish()
    };
    let d = compose(&w.log);
    assert_eq!(d.shipped.len(), 1);
    assert_eq!(d.shipped[0].release, rid(1));
    assert_eq!(d.frozen.len(), 1);
    assert_eq!(d.frozen[0].release, rid(2));
    assert_eq!(d.rolled_back.len(), 1);
    assert_eq!(d.rolled_back[0].reason, "escalations up");
    assert_eq!(d.gates_failed.len(), 1, "{:?}", d.gates_failed);
    assert!(
        d.gates_failed[0]
            .failed_checks
            .iter()
            .any(|c| c.starts_with("latency_p95")),
        "{:?}",
        d.gates_failed
    );
    assert_eq!(d.tradeoffs.len(), 1);
    assert_eq!(d.tradeoffs[0].accepted_by.as_str(), LEAD);
    // The case was still open when the week ended.
    assert_eq!(d.open_cases.len(), 1);
    assert_eq!(d.open_cases[0].count, 1);
    // r3 (proposed, never reviewed, 4 days before the end) is stale.
    assert_eq!(
        d.stale_reviews
            .iter()
            .map(|s| s.release.clone())
            .collect::<Vec<_>>(),
        vec![rid(3)]
    );
    assert!(!d.is_quiet());
    // The same ledger composes the same digest, whoever composes it.
    assert_eq!(compose(&w.log), d);
    // A week with nothing in it is quiet.
    let mut quiet = DigestBuilder::new(
        "2026-W50",
        end.plus(DurationSpec::parse("7d").unwrap()),
        end.plus(DurationSpec::parse("14d").unwrap()),
        "UTC",
        DurationSpec::parse("30d").unwrap(),
    );
    for e in &completed().log {
        quiet.observe(e);
    }
    assert!(quiet.finish().is_quiet());
}
