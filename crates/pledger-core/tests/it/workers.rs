//! The workers' state machines, without NATS: the canary monitor, the gatekeeper, the
//! scheduler's checks and the feedback collector's pacing. Decisions they return are executed
//! through the decider on a [`World`], as their drivers do through the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pledger_core::canary::{ArmStats, Verdict};
use pledger_core::event::{Notice, ReviewLayer};
use pledger_core::outcome::parse_outcome_message;
use pledger_core::redact::{RedactionPolicy, Redactor};
use pledger_core::routing::StageVisit;
use pledger_core::sim::{ArmProfile, SimRng};
use pledger_core::window::ReleaseWindows;
use pledger_core::workers::canary::{
    earlier_stages, ended_visits, prompt_view, stage_visit, tally, view_may_be_stale, ControlKind,
    Executed, JudgementPoint, Monitor, OutcomeMessage, Report, StageStats, ADVANCE_RETRY,
    HISTORY_EVERY, STATUS_EVERY,
};
use pledger_core::workers::feedback::{
    collect, recurrence_slot, Collector, Known, Submission, NEW_CASES_PER_MINUTE,
};
use pledger_core::workers::gatekeeper::{gate_action, GateAction};
use pledger_core::workers::scheduler::{digest_due, needs_status, notices, NoticeLimits};
use pledger_core::{Command, DurationSpec, Rule};

use crate::support::*;

const MONITOR: &str = "canary-monitor";

/// `n` outcomes drawn with a fixed seed, with exactly `fallbacks` fallbacks.
fn arm(n: u64, fallbacks: u64, seed: u64) -> ArmStats {
    let mut rng = SimRng::new(seed);
    let mut s = ArmStats::new();
    for _ in 0..n {
        s.observe(&ArmProfile::default().draw(&mut rng));
    }
    s.fallback = fallbacks;
    s
}

/// Counts for the first stage of the plans below (it sends its whole segment to the
/// candidate, so the control is the baseline outside the segment).
fn stats(candidate: ArmStats, control: ArmStats) -> StageStats {
    StageStats {
        candidate,
        control_in_segment: ArmStats::new(),
        baseline_outside_segment: control,
    }
}

fn healthy() -> StageStats {
    stats(arm(600, 6, 1), arm(600, 6, 2))
}

/// A fallback regression: 30% against 1%.
fn breached() -> StageStats {
    stats(arm(600, 180, 3), arm(600, 6, 4))
}

/// r1 rolling out at `internal` with a plan that advances and rolls back automatically.
fn automatic() -> World {
    let mut plan = standard_plan();
    plan.advance.automatic = true;
    plan.rollback.as_mut().unwrap().automatic = true;
    gate_passed()
        .with(OPS, plan_rollout(1, plan))
        .with(OPS, start(1))
}

/// Windows recorded when they compiled, that no longer do (a time zone the tz database lost).
fn broken_windows() -> ReleaseWindows {
    ReleaseWindows {
        timezone: "Mars/Olympus_Mons".into(),
        open: vec![],
        closed: vec![],
    }
}

/// Executes the monitor's commands through the decider, as the driver does through the
/// ledger, and reports back; returns the reports.
fn execute(
    w: &mut World,
    monitor: &mut Monitor,
    commands: Vec<Command>,
    at: Instant,
) -> Vec<Report> {
    let release = rid(1);
    commands
        .into_iter()
        .map(|c| {
            let result = match w.try_run(MONITOR, c.clone()) {
                Ok(_) => Executed::Recorded,
                Err(r) => Executed::Refused(r),
            };
            monitor.executed(&release, &c, result, at)
        })
        .collect()
}

fn names(commands: &[Command]) -> Vec<&'static str> {
    commands.iter().map(|c| c.name()).collect()
}

#[test]
fn a_breach_freezes_and_rolls_back_even_when_the_global_windows_no_longer_compile() {
    let mut w = automatic();
    w.fleet_windows = Some(broken_windows());
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();

    // Healthy and ready: the automatic advance is refused by the windows that do not compile.
    let view = prompt_view(&w.state);
    let judged = m.judge(&rid(1), &view, &healthy(), w.now, at).unwrap();
    assert_eq!(names(&judged.commands), ["advance"]);
    let reports = execute(&mut w, &mut m, judged.commands, at);
    let [Report::AdvanceDeferred { rejection, status }] = reports.as_slice() else {
        panic!("{reports:?}");
    };
    assert_eq!(rejection.rule, Rule::InvalidInput);
    assert!(
        rejection.message.contains("do not compile"),
        "{}",
        rejection.message
    );
    let status = status.as_ref().unwrap();
    assert!(status
        .advance_refused
        .as_ref()
        .unwrap()
        .contains("invalid-input"));
    assert_eq!(status.waiting_for_window, None);
    assert_eq!(w.status(1), "rolling_out");

    // The monitor goes on: not tried again before ADVANCE_RETRY, and the status says why.
    let again = m
        .judge(
            &rid(1),
            &view,
            &healthy(),
            w.now,
            at + Duration::from_millis(500),
        )
        .unwrap();
    assert!(again.commands.is_empty());
    assert!(again.status.advance_refused.is_some());
    let retried = m
        .judge(&rid(1), &view, &healthy(), w.now, at + ADVANCE_RETRY)
        .unwrap();
    assert_eq!(names(&retried.commands), ["advance"]);
    let reports = execute(&mut w, &mut m, retried.commands, at + ADVANCE_RETRY);
    assert_eq!(reports, [Report::StillDeferred]);

    // A regression: frozen and rolled back, windows or not.
    let later = at + ADVANCE_RETRY * 2;
    let judged = m.judge(&rid(1), &view, &breached(), w.now, later).unwrap();
    assert_eq!(judged.status.judgement.verdict, Verdict::Breached);
    assert!(judged.publish, "a new verdict is published at once");
    assert_eq!(names(&judged.commands), ["freeze", "rollback"]);
    let reports = execute(&mut w, &mut m, judged.commands, later);
    assert_eq!(reports, [Report::Recorded, Report::Recorded]);
    assert_eq!(w.status(1), "rolled_back");
    assert_eq!(w.state.stable, Some(vid(1)));
    // The rollout is over: the monitor forgets it.
    let view = prompt_view(&w.state);
    assert!(m.judge(&rid(1), &view, &breached(), w.now, later).is_none());
    assert!(m.tracked().is_empty());
}

#[test]
fn a_closed_window_defers_the_advance_and_says_when_it_opens() {
    let mut w = automatic();
    // Always closed: a blackout covering every minute.
    w.fleet_windows = Some(windows(
        "timezone = \"UTC\"\n[[closed]]\ncron = \"0 * * * * *\"\nduration = \"2m\"\n",
    ));
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let judged = m
        .judge(&rid(1), &prompt_view(&w.state), &healthy(), w.now, at)
        .unwrap();
    let reports = execute(&mut w, &mut m, judged.commands, at);
    let [Report::AdvanceDeferred { rejection, status }] = reports.as_slice() else {
        panic!("{reports:?}");
    };
    assert_eq!(rejection.rule, Rule::OutsideReleaseWindow);
    let status = status.as_ref().unwrap();
    assert_eq!(
        status.waiting_for_window.as_deref(),
        Some(rejection.message.as_str())
    );
    assert_eq!(status.advance_refused, None);
    // Windows open again (here: removed): the next try after ADVANCE_RETRY advances.
    w.fleet_windows = None;
    let judged = m
        .judge(
            &rid(1),
            &prompt_view(&w.state),
            &healthy(),
            w.now,
            at + ADVANCE_RETRY,
        )
        .unwrap();
    assert_eq!(
        judged.status.waiting_for_window.as_deref(),
        Some(rejection.message.as_str())
    );
    let reports = execute(&mut w, &mut m, judged.commands, at + ADVANCE_RETRY);
    assert_eq!(reports, [Report::Recorded]);
    assert_eq!(w.release(1).status.stage(), Some(1));
    // The advance cleared the deferral.
    let judged = m
        .judge(
            &rid(1),
            &prompt_view(&w.state),
            &StageStats::default(),
            w.now,
            at + ADVANCE_RETRY,
        )
        .unwrap();
    assert_eq!(judged.status.waiting_for_window, None);
}

#[test]
fn each_situation_gets_one_decision_across_replicas_and_restarts() {
    let mut w = automatic();
    let (mut a, mut b) = (
        Monitor::new(Default::default(), "a"),
        Monitor::new(Default::default(), "b"),
    );
    let at = Instant::now();
    let view = prompt_view(&w.state);
    // Both replicas see the breach on the same view and both decide to freeze and roll back.
    let from_a = a
        .judge(&rid(1), &view, &breached(), w.now, at)
        .unwrap()
        .commands;
    let from_b = b
        .judge(&rid(1), &view, &breached(), w.now, at)
        .unwrap()
        .commands;
    assert_eq!(names(&from_a), ["freeze", "rollback"]);
    assert_eq!(format!("{from_a:?}"), format!("{from_b:?}"));
    // The ledger takes the first replica's; the second finds nothing left to do.
    assert_eq!(
        execute(&mut w, &mut a, from_a, at),
        [Report::Recorded, Report::Recorded]
    );
    let reports = execute(&mut w, &mut b, from_b, at);
    assert!(
        matches!(&reports[0], Report::NotNeeded(r) if r.rule == Rule::NotRollingOut),
        "{reports:?}"
    );
    // A rollback of a rolled-back release is a no-op: the decider records nothing.
    assert_eq!(
        w.kinds()
            .iter()
            .filter(|k| **k == "release.rollout_frozen")
            .count(),
        1
    );
    assert_eq!(
        w.kinds()
            .iter()
            .filter(|k| **k == "release.rolled_back")
            .count(),
        1
    );
}

#[test]
fn a_monitor_restarted_between_freeze_and_rollback_rolls_back() {
    let mut w = automatic();
    let mut before = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let commands = before
        .judge(&rid(1), &prompt_view(&w.state), &breached(), w.now, at)
        .unwrap()
        .commands;
    // The freeze is recorded, then the process dies before the rollback.
    execute(&mut w, &mut before, commands[..1].to_vec(), at);
    assert_eq!(w.status(1), "frozen");
    let mut after = Monitor::new(Default::default(), "a");
    let judged = after
        .judge(&rid(1), &prompt_view(&w.state), &breached(), w.now, at)
        .unwrap();
    assert_eq!(names(&judged.commands), ["rollback"], "not frozen twice");
    execute(&mut w, &mut after, judged.commands, at);
    assert_eq!(w.status(1), "rolled_back");
}

#[test]
fn the_stage_counts_of_a_rollout_go_when_it_ends_and_not_before() {
    let mut w = automatic();
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let rolling = prompt_view(&w.state);
    let visit = stage_visit(rolling.rollout.as_ref().unwrap());
    // Another release whose id starts like this one's (r10), of a prompt rolling out.
    let mut other = rolling.clone();
    other.rollout.as_mut().unwrap().release = rid(10);
    let r10 = stage_visit(other.rollout.as_ref().unwrap());
    let visits = [visit.as_str(), r10.as_str(), "not-a-release/0/0"];
    assert_eq!(
        ended_visits(visits, [&rolling, &other]),
        ["not-a-release/0/0"],
        "only what belongs to no active rollout"
    );
    let commands = m
        .judge(&rid(1), &rolling, &breached(), w.now, at)
        .unwrap()
        .commands;
    execute(&mut w, &mut m, commands[..1].to_vec(), at);
    let frozen = prompt_view(&w.state);
    assert!(
        ended_visits([visit.as_str()], [&frozen]).is_empty(),
        "a frozen rollout still counts"
    );
    let judged = m.judge(&rid(1), &frozen, &breached(), w.now, at).unwrap();
    execute(&mut w, &mut m, judged.commands, at);
    assert_eq!(w.status(1), "rolled_back");
    let after = prompt_view(&w.state);
    assert_eq!(
        ended_visits([visit.as_str(), r10.as_str()], [&after, &other]),
        std::slice::from_ref(&visit),
        "r1 ended; r10 still rolls out"
    );
    // The monitor forgets it too.
    assert!(m.judge(&rid(1), &after, &breached(), w.now, at).is_none());
    assert!(m.tracked().is_empty());
}

#[test]
fn a_frozen_rollout_without_automatic_rollback_waits_for_a_person() {
    let mut w = rolling();
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let judged = m
        .judge(&rid(1), &prompt_view(&w.state), &breached(), w.now, at)
        .unwrap();
    assert_eq!(names(&judged.commands), ["freeze"]);
    execute(&mut w, &mut m, judged.commands, at);
    let judged = m
        .judge(&rid(1), &prompt_view(&w.state), &breached(), w.now, at)
        .unwrap();
    assert!(judged.commands.is_empty(), "{:?}", judged.commands);
}

#[test]
fn a_stage_advances_only_when_ready_baked_rolling_and_automatic() {
    let at = Instant::now();
    let ready = |w: &World| {
        let mut m = Monitor::new(Default::default(), "a");
        m.judge(&rid(1), &prompt_view(&w.state), &healthy(), w.now, at)
            .unwrap()
    };
    // Automatic, ready: advance, with the readiness the decider checks.
    let w = automatic();
    let judged = ready(&w);
    let [Command::AdvanceStage {
        from_stage,
        readiness: Some(r),
        ..
    }] = judged.commands.as_slice()
    else {
        panic!("{:?}", judged.commands);
    };
    assert_eq!(from_stage, "internal");
    assert_eq!(
        (r.candidate_samples, r.control_samples, r.breached),
        (600, 600, false)
    );
    assert_eq!(judged.status.control, ControlKind::OutsideSegment);
    // Not automatic: ready, but nothing done.
    let judged = ready(&rolling());
    assert!(judged.status.ready && judged.commands.is_empty());
    // Paused: nothing.
    let judged = ready(&automatic().with(OPS, pause(1)));
    assert!(judged.commands.is_empty());
    // Not enough samples for the stage: not ready.
    let mut plan = standard_plan();
    plan.advance.automatic = true;
    plan.stages[0].min_samples = 1000;
    let w = gate_passed()
        .with(OPS, plan_rollout(1, plan.clone()))
        .with(OPS, start(1));
    let judged = ready(&w);
    assert!(!judged.status.ready && judged.commands.is_empty());
    // Not baked: not ready; baked a moment later: advance.
    plan.stages[0].min_samples = 0;
    plan.stages[0].min_bake = DurationSpec::parse("10m").unwrap();
    let mut w = gate_passed()
        .with(OPS, plan_rollout(1, plan))
        .with(OPS, start(1));
    assert!(!ready(&w).status.ready);
    w.tick(10 * 60_000);
    assert_eq!(names(&ready(&w).commands), ["advance"]);
    // The last stage completes the release.
    let mut w = automatic();
    for pair in STAGES.windows(2) {
        w.run(OPS, advance(1, pair[0]));
    }
    let judged = ready(&w);
    assert_eq!(names(&judged.commands), ["complete"]);
    execute(
        &mut w,
        &mut Monitor::new(Default::default(), "a"),
        judged.commands,
        at,
    );
    assert_eq!(w.status(1), "completed");
}

#[test]
fn the_status_is_written_on_a_new_verdict_at_once_and_otherwise_paced() {
    let w = rolling();
    let view = prompt_view(&w.state);
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let j = |m: &mut Monitor, s: &StageStats, after: Duration| {
        m.judge(&rid(1), &view, s, w.now, at + after)
            .unwrap()
            .publish
    };
    assert!(j(&mut m, &healthy(), Duration::ZERO), "first judgement");
    assert!(!j(&mut m, &healthy(), Duration::from_millis(50)));
    assert!(
        j(&mut m, &breached(), Duration::from_millis(60)),
        "verdict changed"
    );
    assert!(!j(&mut m, &breached(), Duration::from_millis(100)));
    assert!(j(
        &mut m,
        &breached(),
        Duration::from_millis(60) + STATUS_EVERY
    ));
}

#[test]
fn judgement_history_records_a_new_verdict_at_once_and_otherwise_every_history_every() {
    let w = rolling();
    let view = prompt_view(&w.state);
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let j = |m: &mut Monitor, s: &StageStats, after: Duration| {
        m.judge(&rid(1), &view, s, w.now, at + after).unwrap()
    };
    assert!(
        j(&mut m, &healthy(), Duration::ZERO).record,
        "first judgement"
    );
    let paced = j(&mut m, &healthy(), STATUS_EVERY * 2);
    assert!(
        paced.publish && !paced.record,
        "the status is written more often than history"
    );
    let changed = j(&mut m, &breached(), Duration::from_secs(1));
    assert!(changed.record, "verdict changed");
    let point = JudgementPoint::of(&changed.status);
    assert_eq!(point.verdict, pledger_core::canary::Verdict::Breached);
    assert_eq!(point.replica, "a");
    assert!(point.guardrails.iter().any(|g| g.breached));
    assert!(!j(&mut m, &breached(), Duration::from_secs(2)).record);
    assert!(j(&mut m, &breached(), Duration::from_secs(1) + HISTORY_EVERY).record);
    // A point is small: a rollout records one every HISTORY_EVERY for hours.
    assert!(serde_json::to_vec(&point).unwrap().len() < 4096);
}

#[test]
fn a_chart_shows_the_candidate_crossing_its_ceiling_and_the_test_interval_reaching_the_bound() {
    let w = rolling();
    let view = prompt_view(&w.state);
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let mut points = Vec::new();
    for (i, stats) in [healthy(), healthy(), breached()].iter().enumerate() {
        let mut judged = m
            .judge(&rid(1), &view, stats, w.now, at + HISTORY_EVERY * i as u32)
            .unwrap();
        judged.status.updated_at =
            pledger_core::Timestamp::from_unix_millis(w.now.unix_millis() + 5_000 * i as i64);
        points.push(JudgementPoint::of(&judged.status));
        // The same judgement from a second replica a moment later is drawn once.
        let mut twin = JudgementPoint::of(&judged.status);
        twin.replica = "b".into();
        twin.at = pledger_core::Timestamp::from_unix_millis(twin.at.unix_millis() + 300);
        points.push(twin);
    }
    points.reverse(); // Out of order on the wire: sorted by time.
    let charts = pledger_core::chart::charts(&points);
    assert_eq!(charts.points, 6);
    assert_eq!(charts.t.len(), 3, "one point per moment: {:?}", charts.t);
    assert!(charts.t.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(charts.breached_at, Some(charts.t[2]));
    assert_eq!(charts.stages.len(), 1);
    let breached: Vec<_> = charts.charts.iter().filter(|c| c.breached[2]).collect();
    assert!(!breached.is_empty(), "the breach is drawn");
    for c in &breached {
        assert!(!c.breached[0]);
        let lower = c.lower[2].expect("an interval where there are samples");
        assert!(
            lower >= 0.0,
            "{}: lower edge {lower} at the breach",
            c.guardrail
        );
        assert!(
            c.lower[0].unwrap() < 0.0,
            "{}: below the bound while healthy",
            c.guardrail
        );
        assert!(c.upper[2].unwrap() >= c.excess[2].unwrap());
        assert!(
            c.candidate[2].unwrap() > c.ceiling[2].unwrap(),
            "{}",
            c.guardrail
        );
        assert!(c.latest.starts_with("breached"), "{}", c.latest);
    }
    let json = serde_json::to_value(&charts).unwrap();
    assert_eq!(
        json["charts"][0]["t"],
        serde_json::Value::Null,
        "t is shared, not repeated"
    );
}

#[test]
fn a_long_history_is_thinned_but_keeps_every_change_of_verdict() {
    let w = rolling();
    let view = prompt_view(&w.state);
    let mut m = Monitor::new(Default::default(), "a");
    let at = Instant::now();
    let healthy_point = JudgementPoint::of(
        &m.judge(&rid(1), &view, &healthy(), w.now, at)
            .unwrap()
            .status,
    );
    let breached_point = JudgementPoint::of(
        &m.judge(&rid(1), &view, &breached(), w.now, at)
            .unwrap()
            .status,
    );
    let n = pledger_core::chart::MAX_CHART_POINTS * 3;
    let points: Vec<JudgementPoint> = (0..n)
        .map(|i| {
            let mut p = if i == 4_001 {
                breached_point.clone()
            } else {
                healthy_point.clone()
            };
            p.at =
                pledger_core::Timestamp::from_unix_millis(w.now.unix_millis() + 5_000 * i as i64);
            p
        })
        .collect();
    let charts = pledger_core::chart::charts(&points);
    assert_eq!(charts.points, n);
    assert!(
        charts.t.len() <= pledger_core::chart::MAX_CHART_POINTS,
        "{}",
        charts.t.len()
    );
    let kept_breach = charts
        .verdict
        .iter()
        .filter(|v| **v == pledger_core::canary::Verdict::Breached)
        .count();
    assert_eq!(kept_breach, 1);
    assert_eq!(
        charts.t.last(),
        Some(&((w.now.unix_millis() + 5_000 * (n as i64 - 1)) as f64 / 1000.0))
    );
}

#[test]
fn outcomes_are_placed_by_arm_and_segment_and_bad_ones_dead_lettered() {
    let mut w = rolling();
    w.run(OPS, advance(1, "internal")); // canary: 5% of all traffic
    let view = prompt_view(&w.state);
    let mut views = BTreeMap::new();
    views.insert(prompt(), view.clone());
    let outcome = |version: &str, extra: &str| {
        format!(
            r#"{{"prompt":"{PROMPT}","version":"{version}","request_id":"q","fallback":false,"escalated":false,"manually_corrected":false,"refusal":false,"latency_ms":100,"tokens_in":1,"tokens_out":1{extra}}}"#
        )
    };
    let (cand, base, other) = (vid(2).to_string(), vid(1).to_string(), vid(3).to_string());
    let payload = format!(
        "[{},{},{},{}]",
        outcome(&cand, ""),
        outcome(&base, ""),
        outcome(&other, ""),
        outcome("sha256:", ""),
    );
    let subject = pledger_core::names::outcome_subject(&prompt());
    let messages = vec![
        OutcomeMessage {
            sequence: 7,
            subject: subject.clone(),
            outcomes: parse_outcome_message(payload.as_bytes()),
        },
        OutcomeMessage {
            sequence: 8,
            subject: pledger_core::names::outcome_subject(
                &pledger_core::PromptName::parse("another-prompt").unwrap(),
            ),
            outcomes: parse_outcome_message(outcome(&cand, "").as_bytes()),
        },
        OutcomeMessage {
            sequence: 9,
            subject: subject.clone(),
            outcomes: parse_outcome_message(b"not json"),
        },
    ];
    let has = |p: &pledger_core::PromptName, v: &pledger_core::VersionId| {
        *p == prompt() && w.state.version_order.contains(v)
    };
    let t = tally(&messages, &views, &BTreeSet::new(), has);
    let (release, s) = t.stats.values().next().unwrap();
    assert_eq!(release, &rid(1));
    assert_eq!(s.candidate.samples, 1);
    assert_eq!(
        s.control_in_segment.samples, 1,
        "no match: every request is in the segment"
    );
    assert_eq!(t.counters.other_version, 1);
    assert_eq!(t.counters.outcomes_applied, 2);
    let reasons: Vec<(u64, &str)> = t
        .dead
        .iter()
        .map(|d| (d.sequence, d.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0 == 7 && reasons[0].1.starts_with("element 3"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == 8
            && reasons[1]
                .1
                .contains("published on pledger.outcomes.another-prompt")
    );
    assert_eq!(reasons[2].0, 9);
    assert_eq!(t.counters.dead_lettered, 3);
    assert_eq!(t.releases().into_iter().collect::<Vec<_>>(), [rid(1)]);
    // An outcome naming a version the view has not seen asks for a fresh read.
    let o = parse_outcome_message(outcome(&cand, "").as_bytes())
        .remove(0)
        .unwrap();
    assert!(!view_may_be_stale(&view, &o, &BTreeSet::new(), true));
    assert!(view_may_be_stale(&view, &o, &BTreeSet::new(), false));
    // The view is the size of open work: a count of versions, not the versions.
    assert_eq!(view.versions, 3);
}

/// The outcome of one candidate request on `stage_visit` (none: an older client).
fn candidate_outcome(visit: Option<&str>, tier: &str) -> pledger_core::outcome::Outcome {
    let visit = visit
        .map(|v| format!(r#","stage_visit":"{v}""#))
        .unwrap_or_default();
    let text = format!(
        r#"{{"prompt":"{PROMPT}","version":"{}","arm":"candidate","attrs":{{"tier":"{tier}"}},"request_id":"q","fallback":false,"escalated":false,"manually_corrected":false,"refusal":false,"latency_ms":100,"tokens_in":1,"tokens_out":1{visit}}}"#,
        vid(2)
    );
    parse_outcome_message(text.as_bytes()).remove(0).unwrap()
}

#[test]
fn an_outcome_counts_in_the_stage_visit_it_was_served_in() {
    let mut w = rolling();
    let internal = stage_visit(prompt_view(&w.state).rollout.as_ref().unwrap());
    w.run(OPS, advance(1, "internal"));
    let view = prompt_view(&w.state);
    let canary = stage_visit(view.rollout.as_ref().unwrap());
    assert_ne!(internal, canary, "a new stage is a new visit");
    let baseline_internal = {
        let mut o = candidate_outcome(Some(&internal), "internal");
        o.version = vid(1);
        o.arm = Some(pledger_core::routing::Arm::Baseline);
        o
    };
    let never_seen = format!("{}/0/{}", rid(1), T0_MILLIS + 1);
    let other_release = format!("{}/0/{}", rid(2), T0_MILLIS);
    let outcomes = vec![
        Ok(candidate_outcome(Some(&internal), "internal")),
        Ok(baseline_internal),
        Ok(candidate_outcome(Some(&canary), "external")),
        Ok(candidate_outcome(None, "external")),
        Ok(candidate_outcome(Some(&never_seen), "internal")),
        Ok(candidate_outcome(Some(&other_release), "internal")),
    ];
    let messages = vec![OutcomeMessage {
        sequence: 1,
        subject: pledger_core::names::outcome_subject(&prompt()),
        outcomes,
    }];
    let views = BTreeMap::from([(prompt(), view.clone())]);
    let known: BTreeSet<String> = [internal.clone(), canary.clone()].into();
    let t = tally(&messages, &views, &known, |_, _| true);
    let counts = |visit: &str| {
        t.stats
            .get(visit)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    // Served in `internal`, processed after the advance: counted in `internal`, and placed
    // by that stage's segment (tier=internal is in it).
    assert_eq!(counts(&internal).candidate.samples, 1);
    assert_eq!(counts(&internal).control_in_segment.samples, 1);
    // Naming the current visit, or none (processing time): the current stage.
    assert_eq!(counts(&canary).candidate.samples, 2);
    // A visit the monitor never saw, or another release's: not placed anywhere.
    assert_eq!(t.counters.unknown_stage_visit, 2);
    assert_eq!(t.counters.outcomes_applied, 4);
    assert_eq!(t.stats.len(), 2, "{:?}", t.stats.keys());

    // A visit not seen yet may be one the view is behind on: the driver reads the ledger.
    let o = candidate_outcome(Some(&never_seen), "internal");
    assert!(view_may_be_stale(&view, &o, &known, true));
    assert!(!view_may_be_stale(
        &view,
        &candidate_outcome(Some(&internal), "x"),
        &known,
        true
    ));
    assert!(!view_may_be_stale(
        &view,
        &candidate_outcome(Some(&canary), "x"),
        &known,
        true
    ));
    // Stage visits are checked allocation-free on the ingest path: the same rule as parse.
    for text in [
        internal.as_str(),
        canary.as_str(),
        never_seen.as_str(),
        "triage-r1/0/-5",
    ] {
        assert!(StageVisit::is_valid(text), "{text}");
        assert!(StageVisit::parse(text).is_some(), "{text}");
    }
    for text in [
        "",
        "triage-r1/0",
        "triage-r1/00/5",
        "triage-r1/0/05",
        "triage-r1/0/-0",
        "triage/0/5",
        "Triage-r1/0/5",
        "triage-r1/x/5",
        "triage-r1/0/99999999999999999999",
    ] {
        assert!(!StageVisit::is_valid(text), "{text}");
        assert!(StageVisit::parse(text).is_none(), "{text}");
    }

    // The status shows the earlier visit's counts.
    let r = view.rollout.as_ref().unwrap();
    let earlier = earlier_stages(
        r,
        &[
            (internal.clone(), counts(&internal)),
            (canary.clone(), counts(&canary)),
        ],
    );
    assert_eq!(earlier.len(), 1, "{earlier:?}");
    assert_eq!(
        (
            earlier[0].stage.as_str(),
            earlier[0].stage_index,
            earlier[0].candidate_samples,
            earlier[0].control_samples
        ),
        ("internal", 0, 1, 0),
        "`internal` sends its whole segment to the candidate: its control is the baseline \
         outside the segment, which had no requests"
    );
}

#[test]
fn the_gatekeeper_runs_the_gate_the_decider_would_record_once() {
    let ctx = |w: &World| w.ctx("gatekeeper");
    // Not approved yet: nothing (the decider refuses).
    let w = proposed().with(CI, attach(1, bundle(&vid(2), &vid(1))));
    assert_eq!(
        gate_action(&w.state, &w.release(1), &ctx(&w)),
        GateAction::Nothing
    );
    // Approved with a bundle: decide; once decided on this evidence: nothing.
    let mut w = evaluated();
    assert_eq!(
        gate_action(&w.state, &w.release(1), &ctx(&w)),
        GateAction::Decide
    );
    w.run("gatekeeper", gate(1));
    assert_eq!(
        gate_action(&w.state, &w.release(1), &ctx(&w)),
        GateAction::Nothing
    );
    // Failing only on cost (waivable): wait for a trade-off, then decide with it.
    let costly = BundleBuilder::new(&vid(2), &vid(1))
        .cost(0.02, 0.01)
        .build();
    let mut w = approved().with(CI, attach(1, costly));
    assert_eq!(
        gate_action(&w.state, &w.release(1), &ctx(&w)),
        GateAction::AwaitTradeoff
    );
    w.run(LEAD, accept_tradeoff(1));
    assert_eq!(
        gate_action(&w.state, &w.release(1), &ctx(&w)),
        GateAction::Decide
    );
    // A gatekeeper without the role is refused by the decider: nothing.
    let w = evaluated().with_roles("gatekeeper", &[pledger_core::identity::Role::Reviewer]);
    assert_eq!(
        gate_action(&w.state, &w.release(1), &ctx(&w)),
        GateAction::Nothing
    );
}

#[test]
fn the_scheduler_raises_each_notice_once_per_situation() {
    let limits = NoticeLimits {
        stale_review_after: DurationSpec::parse("3d").unwrap(),
        stuck_after: DurationSpec::parse("2h").unwrap(),
    };
    // A review waiting past the limit.
    let mut w = proposed().with(PRODUCT, approve(1, ReviewLayer::Product));
    assert!(notices([&w.state], &BTreeMap::new(), &limits, w.now).is_empty());
    w.tick(3 * 24 * 3_600_000);
    let found = notices([&w.state], &BTreeMap::new(), &limits, w.now);
    let [(release, Notice::StaleReview { missing, .. })] = found.as_slice() else {
        panic!("{found:?}");
    };
    assert_eq!(release, &rid(1));
    assert_eq!(missing.len(), 1);
    w.run(
        "scheduler",
        Command::RaiseNotice {
            release: rid(1),
            notice: found[0].1.clone(),
        },
    );
    assert!(
        notices([&w.state], &BTreeMap::new(), &limits, w.now).is_empty(),
        "once"
    );

    // A stage past its bake time without its samples, for longer than the limit.
    let mut plan = standard_plan();
    plan.stages[0].min_samples = 100;
    plan.stages[0].min_bake = DurationSpec::parse("1h").unwrap();
    let mut w = gate_passed()
        .with(OPS, plan_rollout(1, plan))
        .with(OPS, start(1));
    assert!(needs_status([&w.state], w.now).is_empty(), "not baked");
    w.tick(3 * 3_600_000);
    assert_eq!(needs_status([&w.state], w.now), [rid(1)]);
    let found = notices([&w.state], &BTreeMap::new(), &limits, w.now);
    assert!(
        matches!(
            found.as_slice(),
            [(
                _,
                Notice::StuckOnData {
                    samples: 0,
                    min_samples: 100,
                    ..
                }
            )]
        ),
        "{found:?}"
    );
}

#[test]
fn the_digest_owed_is_the_latest_firings_once() {
    let schedule = pledger_core::window::CronSchedule::parse("0 0 9 * * Mon", "UTC").unwrap();
    // Wednesday 2026-11-25: the latest firing is Monday 2026-11-23 09:00.
    let now = ts("2026-11-25T12:00:00Z");
    let (fired, week) = digest_due(&schedule, "UTC", now, None).unwrap().unwrap();
    assert_eq!(fired, ts("2026-11-23T09:00:00Z"));
    assert_eq!(week.label, "2026-W47");
    assert!(digest_due(&schedule, "UTC", now, Some(fired))
        .unwrap()
        .is_none());
    // Down for three weeks: one digest is owed, the latest week's.
    let (_, week) = digest_due(&schedule, "UTC", ts("2026-12-16T12:00:00Z"), Some(fired))
        .unwrap()
        .unwrap();
    assert_eq!(week.label, "2026-W50");
}

#[test]
fn feedback_is_folded_by_fingerprint_and_new_cases_are_rate_limited_per_prompt() {
    let redactor = Redactor::new(&RedactionPolicy::default()).unwrap();
    let text = |example: &str| {
        format!(
            r#"{{"prompt":"{PROMPT}","version":"{}","request_id":"q","fallback":false,"escalated":true,"manually_corrected":false,"refusal":false,"latency_ms":1,"tokens_in":1,"tokens_out":1,"feedback":{{"tag":"unexpected_refusal","example":"{example}"}}}}"#,
            vid(2)
        )
    };
    let outcomes: Vec<_> = ["mail me at a@b.example", "mail me at c@d.example", "other"]
        .iter()
        .map(|e| parse_outcome_message(text(e).as_bytes()).remove(0).unwrap())
        .collect();
    let c = collect(
        &redactor,
        outcomes.iter().enumerate().map(|(i, o)| (i as u64 + 1, o)),
    );
    assert_eq!(c.pending.len(), 2, "two e-mails redact to one failure");
    let merged = c.pending.values().find(|p| p.count == 2).unwrap();
    assert!(!merged.example.contains("a@b.example"));
    assert_eq!(merged.through_sequence, 2);
    assert_eq!(c.counters[&prompt()].reports, 3);

    let mut collector = Collector::new();
    let at = Instant::now();
    let now = ts("2026-11-27T10:15:00Z");
    let mut case = merged.clone();
    for i in 0..NEW_CASES_PER_MINUTE {
        case.fingerprint = format!("{i:064x}");
        assert_eq!(
            collector.next_submission(&case, Known::New, at, now),
            Submission::Submit
        );
    }
    case.fingerprint = "f".repeat(64);
    assert_eq!(
        collector.next_submission(&case, Known::New, at, now),
        Submission::RateLimited
    );
    assert_eq!(
        collector.next_submission(&case, Known::New, at + Duration::from_secs(60), now),
        Submission::Submit,
        "a new minute"
    );
    // A known case is recorded again once per UTC hour of the ledger's clock.
    let recorded = |last: &str| Known::Recorded {
        last: Some(ts(last)),
    };
    for (last, now, expected) in [
        (
            "2026-11-27T10:15:00Z",
            "2026-11-27T10:59:59Z",
            Submission::Later,
        ),
        (
            "2026-11-27T10:15:00Z",
            "2026-11-27T11:00:00Z",
            Submission::Submit,
        ),
        (
            "2026-11-27T10:59:59Z",
            "2026-11-27T11:00:01Z",
            Submission::Submit,
        ),
        // A clock that went back does not record twice in the later slot.
        (
            "2026-11-27T12:00:00Z",
            "2026-11-27T11:30:00Z",
            Submission::Later,
        ),
    ] {
        assert_eq!(
            collector.next_submission(&case, recorded(last), at, ts(now)),
            expected,
            "last {last}, now {now}"
        );
    }
    // A store from before coalescing knows the case but not when: recorded now.
    assert_eq!(
        collector.next_submission(&case, Known::Recorded { last: None }, at, now),
        Submission::Submit
    );
}

#[test]
fn a_failure_reported_every_second_for_a_day_adds_at_most_24_recurrences_and_counts_exactly() {
    // The driver's loop, in the core: reports accumulate in the pending case; each second the
    // collector decides; a submission records the pending count and empties it.
    let mut collector = Collector::new();
    let at = Instant::now();
    let start = ts("2026-11-27T00:00:00.500Z");
    let mut pending = 0u64;
    let mut recorded_count = 0u64;
    let mut known = Known::New;
    let mut events = Vec::new();
    let case = pledger_core::workers::feedback::PendingCase {
        prompt: prompt(),
        fingerprint: "a".repeat(64),
        tag: pledger_core::outcome::FeedbackTag::UnexpectedRefusal,
        example: "refused".into(),
        version: vid(2),
        release: None,
        count: 0,
        through_sequence: 0,
    };
    for second in 0..86_400i64 {
        let now = start.plus(DurationSpec::from_millis(second as u64 * 1000));
        pending += 1;
        let decision =
            collector.next_submission(&case, known, at + Duration::from_secs(second as u64), now);
        if decision == Submission::Submit {
            events.push((now, pending));
            recorded_count += pending;
            pending = 0;
            known = Known::Recorded { last: Some(now) };
        }
    }
    // One collected event, then at most one recurrence per hour.
    assert!(events.len() <= 25, "{} events in a day", events.len());
    assert_eq!(events.len(), 24, "the first report, then one per new hour");
    let slots: std::collections::BTreeSet<i64> =
        events.iter().map(|(t, _)| recurrence_slot(*t)).collect();
    assert_eq!(slots.len(), events.len(), "never two in one hour");
    // Exact: what is recorded plus what is still pending is every report.
    assert_eq!(recorded_count + pending, 86_400);
    assert_eq!(events[1].1, 3_600, "an hour of reports in one event");
}
