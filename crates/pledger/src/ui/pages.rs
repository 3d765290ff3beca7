//! The release pages' HTML (maud). Every verdict is written in words beside its colour, and
//! every number the charts draw is also in a table, so the pages read without JavaScript.

use maud::{html, Markup, DOCTYPE};
use pledger_core::canary::{GuardrailJudgement, Judgement, Verdict};
use pledger_core::diff::ArtifactDiff;
use pledger_core::event::{Event, ReviewVerdict};
use pledger_core::state::{PromptState, ReleaseState, ReleaseStatus};
use pledger_core::{ReleaseId, Timestamp, VersionId};
use pledger_infra::worker::canary::CanaryStatus;
use pledger_infra::{Family, Recorded};

use crate::schedule::PageDigest;

fn layout(title: &str, source: &str, active: &str, body: Markup, scripts: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pledger" }
                link rel="stylesheet" href="/assets/uPlot.min.css";
                link rel="stylesheet" href="/assets/pledger.css";
            }
            body {
                header.top {
                    a.brand href="/" { "pledger" }
                    nav {
                        a href="/" aria-current=[(active == "prompts").then_some("page")] { "Prompts" }
                        a href="/digest" aria-current=[(active == "digest").then_some("page")] { "Digest" }
                        a href="/audit" aria-current=[(active == "audit").then_some("page")] { "Audit" }
                    }
                }
                main { (body) }
                footer {
                    "Read-only. Ledger at " code { (source) } ". Changes are signed "
                    code { "pledger" } " commands."
                }
                (scripts)
            }
        }
    }
}

fn short(v: &VersionId) -> &str {
    v.short()
}

fn time(t: Timestamp) -> Markup {
    let text = t.to_rfc3339();
    html! { time datetime=(text) { (text.replace('T', " ")) } }
}

/// A release state as a badge: a symbol and the word, so colour is never alone.
fn state_badge(state: &str) -> Markup {
    let symbol = match state {
        "rolling_out" => "▶",
        "paused" => "⏸",
        "frozen" => "■",
        "completed" => "✓",
        "rolled_back" => "↩",
        "withdrawn" => "✕",
        _ => "●",
    };
    html! { span.badge data-state=(state) { (symbol) " " (state.replace('_', " ")) } }
}

fn verdict_badge(v: Verdict) -> Markup {
    let (symbol, word) = match v {
        Verdict::Holding => ("…", "holding: not enough data yet"),
        Verdict::Healthy => ("✓", "healthy"),
        Verdict::Breached => ("▲", "breached"),
    };
    html! { span.badge data-verdict=(v.name()) { (symbol) " " (word) } }
}

pub fn error(status: u16, message: &str) -> Markup {
    layout(
        "error",
        "",
        "",
        html! {
            h1 { "Error " (status) }
            p.error role="alert" { (message) }
            p { a href="/" { "All prompts" } }
        },
        html! {},
    )
}

// ---------------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------------

/// One line of the prompts page.
pub struct PromptRow {
    name: String,
    owner: String,
    stable: Option<VersionId>,
    active: Option<(ReleaseId, String, String)>,
    open_cases: usize,
    last_change: Option<Timestamp>,
}

/// The latest time anything on `state` happened that the state keeps.
fn last_change(state: &PromptState) -> Option<Timestamp> {
    let versions = state.versions.values().map(|v| v.published_at);
    let releases = state.releases.values().flat_map(|r| {
        let mut at = vec![r.proposed_at, r.candidate_since];
        at.extend(r.reviews.values().map(|x| x.at));
        match &r.status {
            ReleaseStatus::RollingOut {
                stage_entered_at, ..
            }
            | ReleaseStatus::Frozen {
                stage_entered_at, ..
            } => at.push(*stage_entered_at),
            ReleaseStatus::Completed { at: t } | ReleaseStatus::RolledBack { at: t, .. } => {
                at.push(*t)
            }
            _ => {}
        }
        at
    });
    let ended = state.ended.iter().filter_map(|e| e.at);
    let cases = state.regression_cases.values().map(|c| c.last_seen);
    versions.chain(releases).chain(ended).chain(cases).max()
}

impl PromptRow {
    pub fn of(family: &Family) -> PromptRow {
        let s = &family.state;
        PromptRow {
            name: s.name.to_string(),
            owner: s.owner.clone().unwrap_or_default(),
            stable: s.stable.clone(),
            active: s.active_rollout().map(|r| {
                let stage = r
                    .status
                    .stage()
                    .and_then(|i| r.plan.as_ref()?.stages.get(i))
                    .map(|st| format!("{} ({}%)", st.name, st.percent))
                    .unwrap_or_default();
                (r.id.clone(), r.status.name().to_string(), stage)
            }),
            open_cases: s
                .regression_cases
                .values()
                .filter(|c| c.closed.is_none())
                .count(),
            last_change: last_change(s),
        }
    }
}

pub fn prompts(source: &str, rows: &[PromptRow]) -> Markup {
    let body = html! {
        h1 { "Prompts" }
        @if rows.is_empty() {
            p { "No prompt is registered yet (" code { "pledger prompt register NAME --owner TEAM" } ")." }
        } @else {
            div.scroll {
                table #prompts {
                    thead { tr {
                        th { "prompt" } th { "owner" } th { "stable" } th { "active release" }
                        th { "stage" } th.num { "open regression cases" } th { "last change" }
                    } }
                    tbody {
                        @for r in rows {
                            tr data-prompt=(r.name) {
                                td { a href={ "/prompts/" (r.name) } { (r.name) } }
                                td { (r.owner) }
                                td { @match &r.stable { Some(v) => code { (short(v)) }, None => "none" } }
                                @match &r.active {
                                    Some((id, state, stage)) => {
                                        td { a href={ "/releases/" (id) } { (id.to_string()) } " " (state_badge(state)) }
                                        td { (stage) }
                                    }
                                    None => { td { "none" } td { "–" } }
                                }
                                td.num { (r.open_cases) }
                                td { @match r.last_change { Some(t) => (time(t)), None => "–" } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Prompts", source, "prompts", body, html! {})
}

// ---------------------------------------------------------------------------------------------
// Prompt
// ---------------------------------------------------------------------------------------------

pub fn prompt(
    source: &str,
    family: &Family,
    diff: Option<&(VersionId, VersionId, ArtifactDiff)>,
) -> Markup {
    let s = &family.state;
    let name = s.name.to_string();
    let versions: Vec<&VersionId> = s.versions.keys().collect();
    let ordered: Vec<(&VersionId, &pledger_core::state::PublishedVersion)> = {
        let mut v: Vec<_> = s.versions.iter().collect();
        v.sort_by_key(|(_, p)| std::cmp::Reverse(p.published_at));
        v
    };
    let body = html! {
        h1 { "Prompt " code { (name) } }
        p { "Owner " strong { (s.owner.clone().unwrap_or_default()) } ". Stable version "
            @match &s.stable { Some(v) => code { (short(v)) }, None => "none" } "." }
        section {
            h2 { "Versions" }
            div.scroll { table #versions {
                thead { tr { th { "version" } th { "published" } th { "by" } th { "model" } th { "temperature" } th { "tools" } th { "notes" } } }
                tbody { @for (id, v) in &ordered {
                    tr {
                        td { code { (short(id)) } @if s.stable.as_ref() == Some(*id) { " " span.badge data-state="completed" { "✓ stable" } } }
                        td { (time(v.published_at)) }
                        td { (v.published_by.as_str()) }
                        td { (v.artifact.model.family) @if let Some(n) = &v.artifact.model.name { " / " (n) } }
                        td.num { (v.artifact.model.temperature) }
                        td { (serde_json::to_string(&v.artifact.tools).unwrap_or_default()) }
                        td { (v.artifact.notes.clone().unwrap_or_default()) }
                    }
                } }
            } }
        }
        section #diff {
            h2 { "Compare two versions" }
            form method="get" action={ "/prompts/" (name) } {
                label { "from " select name="from" { @for v in &versions { option value=(v.to_string()) selected[diff.is_some_and(|d| &d.0 == *v)] { (short(v)) } } } }
                " "
                label { "to " select name="to" { @for v in &versions { option value=(v.to_string()) selected[diff.is_some_and(|d| &d.1 == *v)] { (short(v)) } } } }
                " " button type="submit" { "Show the diff" }
            }
            @if let Some((from, to, d)) = diff {
                pre.diff { (crate::render::artifact_diff(&from.to_string(), &to.to_string(), d)) }
            }
        }
        section {
            h2 { "Releases" }
            div.scroll { table #releases {
                thead { tr { th { "release" } th { "state" } th { "author" } th { "candidate" } th { "baseline" } th { "proposed" } } }
                tbody { @for r in s.releases.values().rev() {
                    tr {
                        td { a href={ "/releases/" (r.id) } { (r.id.to_string()) } }
                        td { (state_badge(r.status.name())) }
                        td { (r.author.as_str()) }
                        td { code { (short(&r.candidate)) } }
                        td { @match &r.baseline { Some(b) => code { (short(b)) }, None => "none" } }
                        td { (time(r.proposed_at)) }
                    }
                } }
            } }
        }
        section {
            h2 { "Regression cases" }
            @if s.regression_cases.is_empty() { p { "None collected." } } @else {
                div.scroll { table #cases {
                    thead { tr { th { "case" } th { "tag" } th { "release" } th.num { "count" } th { "first seen" } th { "last seen" } th { "state" } th { "example" } } }
                    tbody { @for c in s.regression_cases.values() {
                        tr {
                            td { code { (c.case_id) } }
                            td { (serde_json::to_value(c.tag).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                            td { @match &c.release { Some(r) => a href={ "/releases/" (r) } { (r.to_string()) }, None => "–" } }
                            td.num { (c.count) }
                            td { (time(c.first_seen)) }
                            td { (time(c.last_seen)) }
                            td { @match &c.closed { Some(why) => { "closed: " (why) }, None => strong { "open" } } }
                            td { (c.example) }
                        }
                    } }
                } }
            }
        }
        (ignored_section(family, None))
    };
    layout(&format!("Prompt {name}"), source, "prompts", body, html! {})
}

/// Messages the read ignored (on `subject`, or on the family when `None`), with the reason.
fn ignored_section(family: &Family, subject: Option<&str>) -> Markup {
    let ignored: Vec<_> = family
        .ignored
        .iter()
        .filter(|i| subject.is_none_or(|s| i.finding.subject == s))
        .collect();
    html! {
        @if !ignored.is_empty() {
            section #ignored {
                h2 { "Ignored messages (" (ignored.len()) ")" }
                p { "Messages on the ledger that failed verification: they changed nothing." }
                div.scroll { table {
                    thead { tr { th.num { "sequence" } th { "kind claimed" } th { "actor claimed" } th { "check" } th { "reason" } } }
                    tbody { @for i in &ignored {
                        tr.ignored {
                            td.num { (i.finding.sequence) }
                            td { (i.finding.kind.clone().unwrap_or_else(|| "?".into())) }
                            td { (i.finding.actor.clone().unwrap_or_else(|| "?".into())) }
                            td.nowrap { "✕ ignored (" (i.finding.check.code()) ")" }
                            td { (i.finding.reason) }
                        }
                    } }
                } }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Release
// ---------------------------------------------------------------------------------------------

pub fn release(
    source: &str,
    release: &ReleaseId,
    family: &Family,
    status: Option<&CanaryStatus>,
) -> Markup {
    let body = html! {
        div #release data-release=(release.to_string()) {
            p.crumbs { a href={ "/prompts/" (release.prompt()) } { "← " (release.prompt().to_string()) } }
            div #live aria-live="polite" { (release_live(release, family, status)) }
            section #charts-section {
                h2 { "Guardrails over time" }
                p.note { "Each guardrail has two charts. Values: the candidate, the control and the candidate's ceiling (what its bound allows). Test: the excess over the bound with the sequential test's interval; the guardrail breaches when the interval's lower edge is above the threshold line at 0. Points come from the canary monitor's judgement history (not signed; the freeze itself is a signed ledger event)." }
                div #charts { noscript { p { "The charts need JavaScript; every number is in the tables above." } } }
                p #charts-status.note {}
            }
        }
    };
    layout(
        &format!("Release {release}"),
        source,
        "prompts",
        body,
        html! {
            script src="/assets/uPlot.iife.min.js" {}
            script src="/assets/release.js" {}
        },
    )
}

/// The part of the release page that the event stream replaces.
pub fn release_live(release: &ReleaseId, family: &Family, status: Option<&CanaryStatus>) -> Markup {
    let state = &family.state;
    let Some(r) = state.release(release) else {
        return html! { p.error { "There is no release " (release.to_string()) "." } };
    };
    let r: &ReleaseState = &r;
    let subject = pledger_infra::ledger::subject_for(&pledger_core::event::Aggregate::Release(
        release.clone(),
    ));
    let history: Vec<&Recorded> = family
        .events
        .iter()
        .filter(|e| e.subject == subject)
        .collect();
    let freeze = history.iter().rev().find_map(|e| match &e.envelope.event {
        Event::RolloutFrozen(f) => Some((*e, f)),
        _ => None,
    });
    let gate = r.current_gate(&state.policy_digest);
    html! {
        h1 { "Release " code { (release.to_string()) } " " (state_badge(r.status.name())) }
        @match &r.status {
            ReleaseStatus::Frozen { reason, .. } => p #state-reason.alert role="alert" { "■ Frozen: traffic is routed back to the baseline. " (reason) },
            ReleaseStatus::RolledBack { reason, at } => p #state-reason.alert role="alert" { "↩ Rolled back at " (time(*at)) ": " (reason) },
            ReleaseStatus::Withdrawn { reason } => p #state-reason { "✕ Withdrawn: " (reason) },
            ReleaseStatus::Completed { at } => p #state-reason { "✓ Completed at " (time(*at)) ": the candidate is the stable version." },
            _ => {}
        }
        dl.facts {
            dt { "author" } dd { (r.author.as_str()) }
            dt { "candidate" } dd { code { (short(&r.candidate)) } }
            dt { "baseline" } dd { @match &r.baseline { Some(b) => code { (short(b)) }, None => "none" } }
            dt { "rationale" } dd { (r.rationale) }
            @for c in &r.expected_changes { dt { "expects" } dd { (c) } }
        }
        section #reviews {
            h2 { "Reviews" }
            ul {
                @for layer in [pledger_core::event::ReviewLayer::Product, pledger_core::event::ReviewLayer::Technical] {
                    li data-layer=(layer.to_string()) {
                        strong { (layer.to_string()) } ": "
                        @match r.reviews.get(&layer) {
                            Some(v) => {
                                @match v.verdict { ReviewVerdict::Approve => "✓ approved", ReviewVerdict::RequestChanges => "✕ changes requested" }
                                " by " (v.reviewer.as_str()) " at " (time(v.at))
                                @if let Some(n) = &v.note { " — " (n) }
                            }
                            None => "not reviewed yet",
                        }
                    }
                }
            }
        }
        section #gate {
            h2 { "Gate" }
            @match (gate, &r.gate) {
                (Some(g), _) => {
                    p { @if g.passed { span.badge data-verdict="healthy" { "✓ passed" } } @else { span.badge data-verdict="breached" { "✕ failed" } } }
                    div.scroll { table {
                        thead { tr { th { "check" } th { "result" } th.num { "observed" } th.num { "limit" } th { "detail" } } }
                        tbody { @for c in &g.checks {
                            tr data-passed=(c.passed) {
                                td { code { (c.name) } }
                                td.nowrap { @if c.waived_by_tradeoff { "waived" } @else if c.passed { "✓ pass" } @else { "✕ FAIL" } }
                                td.num { (fmt_num(c.observed)) }
                                td.num { (fmt_num(c.limit)) }
                                td { (c.detail) }
                            }
                        } }
                    } }
                    @if let Some(t) = &r.tradeoff { p { "Trade-off accepted by " (t.accepted_by.as_str()) ": " (t.reason) } }
                }
                (None, Some(_)) => p { "Stale: the evidence changed since the last decision." },
                (None, None) => p { @if r.bundle.is_some() { "Not decided yet." } @else { "No evaluation bundle attached yet." } },
            }
        }
        @if let Some(plan) = &r.plan {
            section #stages {
                h2 { "Rollout plan" }
                ol.stages {
                    @for (i, st) in plan.stages.iter().enumerate() {
                        @let current = r.status.stage() == Some(i);
                        li data-current=(current) {
                            strong { (st.name) } " — " (st.percent) "% of "
                            @if st.matches.is_empty() { "all traffic" } @else { code { (serde_json::to_string(&st.matches).unwrap_or_default()) } }
                            "; needs " (st.min_samples) " samples per arm and " (st.min_bake.to_string()) " of bake"
                            @if current { " " span.badge data-state="current" { "◆ current stage" } }
                        }
                    }
                }
                @if let Some(s) = status.filter(|s| r.status.stage() == Some(s.stage_index)) {
                    (readiness(s))
                }
            }
        }
        @if let Some(s) = status.filter(|_| r.status.is_active_rollout()) {
            section #verdict data-verdict=(s.judgement.verdict.name()) {
                h2 { "Canary verdict" }
                p { (verdict_badge(s.judgement.verdict)) " " (s.judgement.words) }
                p.note { "Judged at " (time(s.updated_at)) " by canary monitor replica " (s.monitor_replica) "." }
                (guardrail_table(&s.judgement))
            }
        }
        @if let Some((e, f)) = freeze {
            section #freeze {
                h2 { "Freeze evidence" }
                p { "Frozen at stage " strong { (f.stage) } " by " (e.envelope.actor.as_str()) " at " (time(e.envelope.occurred_at)) " (ledger sequence " (e.sequence) ", signature verified): " (f.reason) }
                @if let Some(j) = &f.evidence { (guardrail_table(j)) }
            }
        }
        section #timeline {
            h2 { "Timeline" }
            div.scroll { table {
                thead { tr { th.num { "sequence" } th { "time" } th { "actor" } th { "event" } th { "what" } th { "signature" } } }
                tbody {
                    @for e in &history {
                        tr data-kind=(e.envelope.kind()) {
                            td.num { (e.sequence) }
                            td { (time(e.envelope.occurred_at)) }
                            td { (e.envelope.actor.as_str()) }
                            td { code { (e.envelope.kind()) } }
                            td { (crate::render::summarize(&e.envelope.event)) }
                            td { "✓ verified" }
                        }
                    }
                }
            } }
        }
        (ignored_section(family, Some(&subject)))
    }
}

fn readiness(s: &CanaryStatus) -> Markup {
    let j = &s.judgement;
    let baked_ms = (s.updated_at.unix_millis() - s.stage_entered_at.unix_millis()).max(0) as u64;
    html! {
        div #readiness {
            h3 { "Readiness of stage " (s.stage) }
            ul {
                li { "samples: candidate " (j.candidate.samples) ", control " (j.control.samples) " of " (s.min_samples) " per arm "
                    @if j.candidate.samples >= s.min_samples && j.control.samples >= s.min_samples { "✓" } @else { "(not yet)" } }
                li { "bake: " (pledger_core::DurationSpec::from_millis(baked_ms).to_string()) " of " (pledger_core::DurationSpec::from_millis(s.min_bake_ms).to_string())
                    @if baked_ms >= s.min_bake_ms { " ✓" } @else { " (not yet)" } }
                @if let Some(w) = &s.waiting_for_window { li { "release window: closed — " (w) } }
                @if let Some(w) = &s.advance_refused { li { "automatic advance refused: " (w) } }
                li { @if s.ready { strong { "✓ ready to advance" } } @else { "not ready to advance" } }
            }
        }
    }
}

/// A number with four significant digits, without exponents for the sizes shown here.
fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let magnitude = if x == 0.0 {
        0
    } else {
        x.abs().log10().floor() as i32
    };
    let decimals = (3 - magnitude).clamp(0, 8) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn guardrail_table(j: &Judgement) -> Markup {
    html! {
        div.scroll { table.guardrails {
            thead { tr { th { "guardrail" } th { "verdict" } th.num { "candidate" } th.num { "control" } th { "bound" } th.num { "statistic" } th.num { "threshold" } th { "in words" } } }
            tbody { @for g in &j.guardrails { (guardrail_row(g)) } }
        } }
        p.note { "Candidate " (j.candidate.samples) " samples, control " (j.control.samples) " samples." }
    }
}

fn guardrail_row(g: &GuardrailJudgement) -> Markup {
    html! {
        tr data-breached=(g.breached) {
            td { code { (g.guardrail) } }
            td.nowrap { @if g.breached { strong { "▲ BREACH" } } @else { "✓ ok" } }
            td.num { (fmt_num(g.candidate_value)) }
            td.num { (fmt_num(g.control_value)) }
            td { (g.bound.name()) " " (fmt_num(g.limit)) }
            td.num { (fmt_num(g.statistic)) }
            td.num { (fmt_num(g.threshold)) }
            td { (g.words) }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Digest and audit
// ---------------------------------------------------------------------------------------------

pub fn digest(source: &str, d: &PageDigest) -> Markup {
    let body = html! {
        h1 { "Digest of " (d.week) }
        nav.weeks {
            @if let Some(p) = &d.previous { a href={ "/digest?week=" (p) } rel="prev" { "← " (p) } }
            " "
            @if let Some(n) = &d.next { a href={ "/digest?week=" (n) } rel="next" { (n) " →" } }
        }
        p #digest-status { (d.status) }
        pre #digest { (d.text) }
    };
    layout(
        &format!("Digest {}", d.week),
        source,
        "digest",
        body,
        html! {},
    )
}

pub fn audit(
    source: &str,
    through: u64,
    age: std::time::Duration,
    report: &crate::app::Report,
    checkpoint: Result<&str, &str>,
) -> Markup {
    let ok = report.exit == crate::failure::Exit::Success;
    let body = html! {
        h1 { "Audit status" }
        section #verification data-ok=(ok) {
            h2 { "Verification of the whole ledger" }
            p { @if ok { span.badge data-verdict="healthy" { "✓ verified" } } @else { span.badge data-verdict="breached" { "✕ findings" } }
                " Through stream sequence " (through) ", " (age.as_secs()) " s ago (what " code { "pledger audit verify" } " prints; exit " (report.exit as i32) ")." }
            pre { (report.text) }
        }
        section #checkpoint {
            h2 { "Latest signed checkpoint" }
            @match checkpoint {
                Ok(text) => pre { (text) },
                Err(why) => p { (why) },
            }
            p.note { "An auditor who trusts neither this server nor this page checks a checkpoint with " code { "pledger audit verify --trusted-checkpoint FILE" } " against keys obtained elsewhere." }
        }
    };
    layout("Audit", source, "audit", body, html! {})
}
