//! Release windows and the scheduler end to end, on a clock the test controls
//! (`PLEDGER_CLOCK_FILE`): nothing here sleeps to let time pass.

use std::time::Duration;

use pledger_e2e::*;
use serde_json::Value;

use crate::fixture::*;

/// Weekdays 09:00 to 16:00 UTC, never Friday after 12:00.
const WINDOWS: &str = r#"
timezone = "UTC"

[[open]]
cron = "0 0 9 * * Mon-Fri"
duration = "7h"

[[closed]]
cron = "0 0 12 * * Fri"
duration = "12h"
note = "no Friday afternoon releases"
"#;

const AUTO_PLAN: &str = r#"
[[stages]]
name = "internal"
match = { user_kind = "internal" }
percent = 100
min_samples = 100

[[stages]]
name = "everyone"
percent = 100
min_samples = 100000

[guardrails]
escalation_rate = { max_increase = 0.05 }

[rollback]
criteria = "escalation rate five points above the control"
automatic = true

[advance]
automatic = true
"#;

/// 1,200 healthy requests, half of them from internal users.
fn healthy_traffic(w: &World, seed: &str) {
    w.json(
        "svc",
        &[
            "sim",
            "triage",
            "--requests",
            "1200",
            "--seed",
            seed,
            "--segment",
            "user_kind=internal:1",
            "--segment",
            "user_kind=customer:1",
        ],
    );
}

fn show(w: &World, release: &str) -> Value {
    w.json("auditor", &["release", "show", release])
}

#[test]
fn rollouts_wait_for_a_window_and_the_monitor_advances_once_it_opens() {
    // Saturday noon.
    let w = World::with_clock("2026-11-28T12:00:00.000Z");
    let windows = w.file("windows.toml", WINDOWS);
    w.run("lead", &["windows", "set", "--global", "--file", &windows])
        .ok();
    let shown = w.run("auditor", &["windows", "show"]).ok();
    assert!(shown.stdout.contains("CLOSED"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("Mon 2026-11-30 09:00"),
        "{}",
        shown.stdout
    );

    let _monitor = w.worker("canary", "0");
    let p = gated(&w, "triage");
    let plan = w.file("auto-plan.toml", AUTO_PLAN);
    w.run("maria", &["rollout", "plan", &p.release, &plan]).ok();
    let before = w.event_count("triage");
    let refused = w
        .run("maria", &["rollout", "start", &p.release])
        .rejected("outside-release-window");
    assert!(
        refused
            .stderr
            .contains("next window opens at 2026-11-30T09:00:00.000Z"),
        "{}",
        refused.stderr
    );
    assert_eq!(w.event_count("triage"), before, "a refusal records nothing");

    // A person may override, with a reason that is recorded.
    w.run(
        "maria",
        &[
            "rollout",
            "start",
            &p.release,
            "--force",
            "--reason",
            "weekend hotfix agreed with on-call",
        ],
    )
    .ok();
    let started = &show(&w, &p.release)["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["kind"] == "release.rollout_started")
        .cloned()
        .expect("started");
    assert!(started.to_string().contains("weekend hotfix"), "{started}");

    // Healthy traffic makes the stage ready, but the window is closed: the monitor waits and
    // says why in its status.
    healthy_traffic(&w, "3");
    let waiting = w.wait_for(
        "the monitor to wait for the window",
        Duration::from_secs(30),
        || {
            show(&w, &p.release)["canary"]["waiting_for_window"]
                .as_str()
                .map(str::to_string)
        },
    );
    assert!(waiting.contains("2026-11-30T09:00:00.000Z"), "{waiting}");
    assert_eq!(w.count("triage", "release.stage_advanced"), 0);
    assert_eq!(show(&w, &p.release)["release"]["status"]["stage"], 0);

    // Monday 09:00:05: the window opens and the monitor advances on its own.
    w.set_clock("2026-11-30T09:00:05.000Z");
    w.wait_for(
        "the advance inside the window",
        Duration::from_secs(30),
        || (show(&w, &p.release)["release"]["status"]["stage"] == 1).then_some(()),
    );
    assert_eq!(w.count("triage", "release.stage_advanced"), 1);
    let advanced = show(&w, &p.release)["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["kind"] == "release.stage_advanced")
        .cloned()
        .unwrap();
    assert!(
        !advanced.to_string().contains("\"forced\":true"),
        "{advanced}"
    );
}

fn digests(w: &World) -> Vec<(String, String)> {
    w.json("auditor", &["digest", "--list"])["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["week"].as_str().unwrap().to_string(),
                d["recorded_by"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn weeks(w: &World) -> Vec<String> {
    digests(w).into_iter().map(|(week, _)| week).collect()
}

/// Waits until the scheduler's log says `needle` at least `times` times.
fn wait_for_log(w: &World, s: &WorkerProcess, needle: &str, times: usize) {
    let found = w.try_wait_for(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(s.log_path()).unwrap_or_default();
        (log.matches(needle).count() >= times).then_some(())
    });
    assert!(
        found.is_some(),
        "no `{needle}` ×{times} in the scheduler's log:\n{}",
        std::fs::read_to_string(s.log_path()).unwrap_or_default()
    );
}

#[test]
fn two_schedulers_record_one_digest_per_week_and_a_restart_neither_repeats_nor_misses() {
    // Thursday of week 48: a proposal that nobody reviews.
    let w = World::with_clock("2026-11-26T10:00:00.000Z");
    let p = proposed(&w, "triage");

    // Monday 08:59 of week 49: the last firing (Monday 23 Nov 09:00) covers week 47.
    w.set_clock("2026-11-30T08:59:00.000Z");
    let mut a = w.worker("scheduler", "a");
    let mut b = w.worker("scheduler", "b");
    wait_for_log(&w, &a, "week 2026-W47 has its digest", 1);
    wait_for_log(&w, &b, "week 2026-W47 has its digest", 1);
    assert_eq!(weeks(&w), ["2026-W47"]);

    // 09:00:01: the schedule fires for week 48, in both replicas; one digest is recorded.
    w.set_clock("2026-11-30T09:00:01.000Z");
    wait_for_log(&w, &a, "week 2026-W48 has its digest", 1);
    wait_for_log(&w, &b, "week 2026-W48 has its digest", 1);
    assert_eq!(weeks(&w), ["2026-W47", "2026-W48"]);
    let recorded = w.json("auditor", &["digest", "--week", "2026-11-25"]);
    let stale = &recorded["digest"]["stale_reviews"];
    assert_eq!(stale[0]["release"], p.release.as_str(), "{recorded}");
    assert!(
        recorded["status"]
            .as_str()
            .unwrap()
            .starts_with("recorded by scheduler"),
        "{recorded}"
    );

    // SIGKILL one replica and restart it: it finds week 48 recorded and adds nothing.
    a.kill9();
    a.start();
    wait_for_log(&w, &a, "week 2026-W48 has its digest (recorded before)", 1);
    assert_eq!(weeks(&w), ["2026-W47", "2026-W48"]);

    // Both down across the next firing (Monday 7 Dec): the first back catches up once.
    a.kill9();
    b.kill9();
    w.set_clock("2026-12-08T10:00:00.000Z");
    b.start();
    wait_for_log(&w, &b, "week 2026-W49 has its digest (recorded now)", 1);
    assert_eq!(weeks(&w), ["2026-W47", "2026-W48", "2026-W49"]);

    // Down across two firings: one catch-up digest (the latest week), not one per firing.
    b.kill9();
    w.set_clock("2026-12-22T10:00:00.000Z");
    a.start();
    b.start();
    wait_for_log(&w, &a, "week 2026-W51 has its digest", 1);
    wait_for_log(&w, &b, "week 2026-W51 has its digest", 1);
    assert_eq!(weeks(&w), ["2026-W47", "2026-W48", "2026-W49", "2026-W51"]);
    // The skipped week can still be recorded on demand, once.
    let on_demand = w.json("auditor", &["digest", "--week", "2026-W50"]);
    assert!(
        on_demand["status"]
            .as_str()
            .unwrap()
            .starts_with("recorded now by auditor"),
        "{on_demand}"
    );
    let again = w.json("lead", &["digest", "--week", "2026-W50"]);
    assert!(
        again["status"]
            .as_str()
            .unwrap()
            .starts_with("recorded by auditor"),
        "{again}"
    );
    assert_eq!(digests(&w).len(), 5);
    // The current week is a preview, never recorded.
    let preview = w.json("auditor", &["digest", "--week", "2026-12-22"]);
    assert!(
        preview["status"].as_str().unwrap().contains("not recorded"),
        "{preview}"
    );
    assert_eq!(digests(&w).len(), 5);
}

#[test]
fn the_scheduler_reports_a_stale_review_once() {
    let w = World::with_clock("2026-11-23T10:00:00.000Z");
    let p = proposed(&w, "triage");
    let s = w.worker("scheduler", "0");
    // Four days later the proposal still lacks both approvals.
    w.set_clock("2026-11-27T10:00:00.000Z");
    w.wait_for("the stale-review notice", Duration::from_secs(30), || {
        (w.count("triage", "release.notice_raised") == 1).then_some(())
    });
    let text = w.run("auditor", &["audit", "log", "triage"]).ok().stdout;
    assert!(
        text.contains(&format!("{} needs a person", p.release)),
        "{text}"
    );
    // Later ticks see it recorded and add nothing: the week's digest (recorded at the next
    // firing, by the same scheduler) comes after it in the log.
    w.set_clock("2026-11-30T09:00:01.000Z");
    wait_for_log(&w, &s, "week 2026-W48 has its digest", 1);
    assert_eq!(w.count("triage", "release.notice_raised"), 1);
}

const MANUAL_PLAN: &str = r#"
[[stages]]
name = "internal"
match = { user_kind = "internal" }
percent = 100
min_samples = 100
min_bake = "30m"

[[stages]]
name = "everyone"
percent = 100
min_samples = 100000
min_bake = "1h"

[guardrails]
escalation_rate = { max_increase = 0.05 }

[rollback]
criteria = "escalation rate five points above the control"
automatic = true
"#;

#[test]
fn the_scheduler_reports_a_baked_stage_waiting_for_a_person_and_a_stage_stuck_on_data() {
    let w = World::with_clock("2026-11-24T10:00:00.000Z");
    let _monitor = w.worker("canary", "0");
    let _scheduler = w.worker("scheduler", "0");
    let p = gated(&w, "triage");
    let plan = w.file("manual-plan.toml", MANUAL_PLAN);
    w.run("maria", &["rollout", "plan", &p.release, &plan]).ok();
    w.run("maria", &["rollout", "start", &p.release]).ok();
    healthy_traffic(&w, "5");
    // Past the bake time: the stage is ready, and the plan advances by hand.
    w.set_clock("2026-11-24T10:31:00.000Z");
    w.wait_for("the bake-reached notice", Duration::from_secs(30), || {
        (w.count("triage", "release.notice_raised") == 1).then_some(())
    });
    let log = w.run("auditor", &["audit", "log", "triage"]).ok().stdout;
    assert!(
        log.contains("stage `internal` baked and is healthy"),
        "{log}"
    );
    assert_eq!(w.count("triage", "release.stage_advanced"), 0);

    // The last stage needs 100,000 samples per arm it will not get: three hours after its
    // bake time it is reported as stuck, and stays where it is.
    w.run("maria", &["rollout", "advance", &p.release]).ok();
    w.set_clock("2026-11-24T14:40:00.000Z");
    w.wait_for("the stuck-on-data notice", Duration::from_secs(30), || {
        (w.count("triage", "release.notice_raised") == 2).then_some(())
    });
    let log = w.run("auditor", &["audit", "log", "triage"]).ok().stdout;
    assert!(log.contains("stage `everyone` is"), "{log}");
    assert!(log.contains("not passed"), "{log}");
    assert_eq!(w.count("triage", "release.completed"), 0);
    assert_eq!(show(&w, &p.release)["state"], "rolling_out");
}
