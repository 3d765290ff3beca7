//! Builders and a tiny in-memory "ledger" for the tests.
//!
//! The core has no clock and draws no ids: [`World`] passes a fixed, deterministic time
//! (`T0` plus one minute per command, or whatever [`World::tick`] adds) and event ids built
//! from a counter.

#![allow(dead_code)]

use std::collections::BTreeMap;

use pledger_core::artifact::{ModelSettings, RetrievalSettings, ToolSettings};
use pledger_core::bundle::{
    CandidateBaseline, LatencyMs, PassRates, SegmentResult, HARD_NEGATIVE_CATEGORIES,
};
use pledger_core::decide::Command;
use pledger_core::event::{ReviewLayer, ReviewVerdict};
use pledger_core::identity::Role;
use pledger_core::plan::{
    AdvancePolicy, GuardrailLimit, Guardrails, MatchValue, RollbackPolicy, Stage,
};
use pledger_core::state::ReleaseState;
use pledger_core::{
    decide, evolve, Actor, Artifact, Context, DurationSpec, Envelope, EvalBundle, Event, EventMeta,
    PromptName, PromptState, Rejection, ReleaseId, RolloutPlan, Rule, Timestamp, VersionId,
};

pub const PROMPT: &str = "support-triage";
pub const OWNER: &str = "support-team";
/// Author of the proposals.
pub const AUTHOR: &str = "alice";
/// Gives product reviews.
pub const PRODUCT: &str = "bob";
/// Gives technical reviews.
pub const TECH: &str = "carol";
/// Accepts trade-offs; a second technical reviewer.
pub const LEAD: &str = "dave";
/// Runs the pipeline (attaches bundles, decides gates).
pub const CI: &str = "ci-bot";
/// Operates rollouts.
pub const OPS: &str = "erin";

/// 2026-11-24T09:00:00.000Z
pub const T0_MILLIS: i64 = 1_795_510_800_000;
pub const T0: Timestamp = Timestamp::from_unix_millis(T0_MILLIS);
/// How far the world's clock moves with every command.
pub const STEP_MILLIS: u64 = 60_000;

pub const SALT: &str = "salt-r1";

pub fn actor(name: &str) -> Actor {
    Actor::parse(name).expect("valid actor")
}

pub fn prompt() -> PromptName {
    PromptName::parse(PROMPT).expect("valid prompt name")
}

pub fn rid(n: u32) -> ReleaseId {
    ReleaseId::new(prompt(), n)
}

pub fn ts(raw: &str) -> Timestamp {
    Timestamp::parse_rfc3339(raw).expect("valid timestamp")
}

// ---------------------------------------------------------------------------------------------
// Artifacts
// ---------------------------------------------------------------------------------------------

/// A valid artifact with the given instructions and otherwise fixed content.
pub fn artifact(instructions: &str) -> Artifact {
    Artifact {
        instructions: instructions.to_string(),
        model: ModelSettings {
            family: "gpt-4o".into(),
            name: None,
            temperature: 0.2,
            top_p: None,
            max_output_tokens: Some(512),
        },
        tools: ToolSettings {
            schema_version: "none".into(),
        },
        retrieval: None,
        known_limitations: vec![],
        notes: None,
    }
}

/// The n-th version of the test prompt.
pub fn version(n: u32) -> Artifact {
    artifact(&format!(
        "You are the support triage assistant (v{n}).\nClassify the ticket."
    ))
}

/// The id of [`version`] `n`.
pub fn vid(n: u32) -> VersionId {
    version(n).version_id()
}

/// An artifact with every optional field filled in, for canonicalisation and diff tests.
pub fn full_artifact() -> Artifact {
    let mut filters = BTreeMap::new();
    filters.insert("lang".to_string(), serde_json::json!("en"));
    filters.insert(
        "product".to_string(),
        serde_json::json!(["billing", "login"]),
    );
    filters.insert(
        "window".to_string(),
        serde_json::json!({ "days": 30, "include_archived": false }),
    );
    let mut extra = BTreeMap::new();
    extra.insert("rerank".to_string(), serde_json::json!(true));
    extra.insert("chunk".to_string(), serde_json::json!({ "size": 400 }));
    Artifact {
        instructions: "You are the support triage assistant.\nClassify the ticket.".into(),
        model: ModelSettings {
            family: "gpt-4o".into(),
            name: Some("gpt-4o-2024-08-06".into()),
            temperature: 1.0,
            top_p: Some(0.9),
            max_output_tokens: Some(512),
        },
        tools: ToolSettings {
            schema_version: "2024-06".into(),
        },
        retrieval: Some(RetrievalSettings {
            source: Some("kb".into()),
            top_k: Some(5),
            filters: Some(filters),
            extra,
        }),
        known_limitations: vec!["no refunds".into(), "english only".into()],
        notes: Some("tighter tone".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Eval bundles
// ---------------------------------------------------------------------------------------------

/// Builds eval bundles. `new` gives a bundle that passes the default gate policy.
#[derive(Clone, Debug)]
pub struct BundleBuilder(pub EvalBundle);

impl BundleBuilder {
    pub fn new(candidate: &VersionId, baseline: &VersionId) -> BundleBuilder {
        let mut hard_negatives = BTreeMap::new();
        for category in HARD_NEGATIVE_CATEGORIES {
            hard_negatives.insert(
                category.to_string(),
                PassRates {
                    cases: 20,
                    candidate_pass_rate: 0.80,
                    baseline_pass_rate: 0.80,
                },
            );
        }
        BundleBuilder(EvalBundle {
            candidate: candidate.clone(),
            baseline: baseline.clone(),
            suite: "support-regression".into(),
            segments: vec![SegmentResult {
                name: "general".into(),
                cases: 200,
                candidate_pass_rate: 0.90,
                baseline_pass_rate: 0.90,
            }],
            hard_negatives,
            regressions: vec![],
            covers_regressions: vec![],
            latency_ms: LatencyMs {
                candidate_p50: 400.0,
                baseline_p50: 400.0,
                candidate_p95: 1000.0,
                baseline_p95: 1000.0,
            },
            tokens_per_request: Some(CandidateBaseline {
                candidate: 500.0,
                baseline: 500.0,
            }),
            cost_per_request_usd: Some(CandidateBaseline {
                candidate: 0.010,
                baseline: 0.010,
            }),
            expected_changes: vec![],
        })
    }

    /// Adds a segment, or replaces the one of that name.
    pub fn segment(mut self, name: &str, cases: u64, candidate: f64, baseline: f64) -> Self {
        let s = SegmentResult {
            name: name.into(),
            cases,
            candidate_pass_rate: candidate,
            baseline_pass_rate: baseline,
        };
        match self.0.segments.iter_mut().find(|x| x.name == name) {
            Some(x) => *x = s,
            None => self.0.segments.push(s),
        }
        self
    }

    pub fn hard_negative(
        mut self,
        category: &str,
        cases: u64,
        candidate: f64,
        baseline: f64,
    ) -> Self {
        self.0.hard_negatives.insert(
            category.into(),
            PassRates {
                cases,
                candidate_pass_rate: candidate,
                baseline_pass_rate: baseline,
            },
        );
        self
    }

    pub fn without_hard_negative(mut self, category: &str) -> Self {
        self.0.hard_negatives.remove(category);
        self
    }

    pub fn latency_p95(mut self, candidate: f64, baseline: f64) -> Self {
        self.0.latency_ms.candidate_p95 = candidate;
        self.0.latency_ms.baseline_p95 = baseline;
        self
    }

    pub fn tokens(mut self, candidate: f64, baseline: f64) -> Self {
        self.0.tokens_per_request = Some(CandidateBaseline {
            candidate,
            baseline,
        });
        self
    }

    pub fn no_tokens(mut self) -> Self {
        self.0.tokens_per_request = None;
        self
    }

    pub fn cost(mut self, candidate: f64, baseline: f64) -> Self {
        self.0.cost_per_request_usd = Some(CandidateBaseline {
            candidate,
            baseline,
        });
        self
    }

    pub fn no_cost(mut self) -> Self {
        self.0.cost_per_request_usd = None;
        self
    }

    pub fn suite(mut self, suite: &str) -> Self {
        self.0.suite = suite.into();
        self
    }

    pub fn build(self) -> EvalBundle {
        self.0
    }
}

/// A bundle that passes the default gate.
pub fn bundle(candidate: &VersionId, baseline: &VersionId) -> EvalBundle {
    BundleBuilder::new(candidate, baseline).build()
}

// ---------------------------------------------------------------------------------------------
// Rollout plans
// ---------------------------------------------------------------------------------------------

pub fn stage(name: &str, percent: f64) -> Stage {
    Stage {
        name: name.into(),
        matches: BTreeMap::new(),
        percent,
        min_samples: 0,
        min_bake: DurationSpec::ZERO,
    }
}

pub fn stage_matching(name: &str, percent: f64, key: &str, values: &[&str]) -> Stage {
    let value = match values {
        [one] => MatchValue::One(one.to_string()),
        many => MatchValue::Any(many.iter().map(|v| v.to_string()).collect()),
    };
    let mut s = stage(name, percent);
    s.matches.insert(key.into(), value);
    s
}

/// A valid plan with the given stages, a guardrail and rollback criteria.
pub fn plan_with(stages: Vec<Stage>) -> RolloutPlan {
    RolloutPlan {
        stages,
        guardrails: Guardrails {
            fallback_rate: Some(GuardrailLimit {
                max_rate: Some(0.05),
                max_increase: Some(0.01),
            }),
            escalation_rate: None,
            manual_correction_rate: None,
            latency_p95_ms: None,
            tokens_per_request: None,
        },
        rollback: Some(RollbackPolicy {
            criteria: "fallback rate above 5% or any P1 incident".into(),
            automatic: false,
        }),
        advance: AdvancePolicy::default(),
    }
}

/// Stage names of [`standard_plan`], in order.
pub const STAGES: [&str; 4] = ["internal", "canary", "half", "all"];

/// internal (tier=internal, 100%) → canary 5% → half 50% → all 100%.
pub fn standard_plan() -> RolloutPlan {
    plan_with(vec![
        stage_matching("internal", 100.0, "tier", &["internal"]),
        stage("canary", 5.0),
        stage("half", 50.0),
        stage("all", 100.0),
    ])
}

pub fn plan_without_rollback() -> RolloutPlan {
    let mut p = standard_plan();
    p.rollback = None;
    p
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

pub fn register() -> Command {
    Command::RegisterPrompt {
        owner: OWNER.into(),
    }
}

pub fn publish(n: u32) -> Command {
    Command::PublishVersion {
        artifact: version(n),
    }
}

pub fn adopt(n: u32) -> Command {
    Command::AdoptVersion {
        version: vid(n),
        reason: "serving in production today".into(),
    }
}

pub fn propose(n: u32) -> Command {
    Command::ProposeChange {
        candidate: vid(n),
        rationale: "fewer misrouted billing tickets".into(),
        expected_changes: vec!["billing tickets go to billing".into()],
    }
}

pub fn revise(release: u32, n: u32) -> Command {
    Command::ReviseCandidate {
        release: rid(release),
        candidate: vid(n),
    }
}

pub fn review(release: u32, layer: ReviewLayer, verdict: ReviewVerdict) -> Command {
    Command::SubmitReview {
        release: rid(release),
        layer,
        verdict,
        note: None,
    }
}

pub fn approve(release: u32, layer: ReviewLayer) -> Command {
    review(release, layer, ReviewVerdict::Approve)
}

pub fn request_changes(release: u32, layer: ReviewLayer) -> Command {
    review(release, layer, ReviewVerdict::RequestChanges)
}

pub fn attach(release: u32, bundle: EvalBundle) -> Command {
    Command::AttachEvalBundle {
        release: rid(release),
        bundle,
    }
}

pub fn accept_tradeoff(release: u32) -> Command {
    Command::AcceptTradeoff {
        release: rid(release),
        reason: "the cost rise buys fewer escalations".into(),
    }
}

pub fn gate(release: u32) -> Command {
    Command::DecideGate {
        release: rid(release),
    }
}

pub fn plan_rollout(release: u32, plan: RolloutPlan) -> Command {
    Command::PlanRollout {
        release: rid(release),
        plan,
    }
}

pub fn start(release: u32) -> Command {
    Command::StartRollout {
        release: rid(release),
        bucketing_salt: SALT.into(),
        force_reason: None,
    }
}

pub fn advance(release: u32, from: &str) -> Command {
    Command::AdvanceStage {
        release: rid(release),
        from_stage: from.into(),
        force_reason: None,
        readiness: None,
    }
}

pub fn pause(release: u32) -> Command {
    Command::PauseRollout {
        release: rid(release),
        reason: "looking at a dashboard".into(),
    }
}

pub fn resume(release: u32) -> Command {
    Command::ResumeRollout {
        release: rid(release),
    }
}

pub fn freeze(release: u32) -> Command {
    Command::FreezeRollout {
        release: rid(release),
        reason: "fallback rate breached".into(),
        evidence: None,
    }
}

pub fn complete(release: u32) -> Command {
    Command::CompleteRelease {
        release: rid(release),
        force_reason: None,
    }
}

pub fn rollback() -> Command {
    Command::Rollback {
        release: None,
        reason: "escalations up".into(),
    }
}

/// A rollback pinned to the release its caller saw.
pub fn rollback_of(release: u32) -> Command {
    Command::Rollback {
        release: Some(rid(release)),
        reason: "escalations up".into(),
    }
}

pub fn withdraw(release: u32) -> Command {
    Command::WithdrawProposal {
        release: rid(release),
        reason: "superseded".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The world: a state, a ledger and a deterministic clock
// ---------------------------------------------------------------------------------------------

/// One prompt's state plus the envelopes recorded so far. `run` applies `decide`, wraps each
/// event in an envelope (ids from a counter, time from the fixed clock) and folds it with
/// `evolve`.
#[derive(Clone, Debug)]
pub struct World {
    pub state: PromptState,
    pub log: Vec<Envelope>,
    pub now: Timestamp,
    /// The global release windows the edge would read from the ledger.
    pub fleet_windows: Option<pledger_core::window::ReleaseWindows>,
    /// Roles of actors that do not hold every role (the default).
    pub roles: std::collections::BTreeMap<String, std::collections::BTreeSet<Role>>,
    commands: u64,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        World {
            state: PromptState::new(prompt()),
            log: Vec::new(),
            now: T0,
            fleet_windows: None,
            roles: Default::default(),
            commands: 0,
        }
    }

    pub fn ctx(&self, who: &str) -> Context {
        let roles = self
            .roles
            .get(who)
            .cloned()
            .unwrap_or_else(|| Role::ALL.into_iter().collect());
        let mut ctx = Context::new(actor(who), roles, self.now);
        ctx.fleet_windows = self.fleet_windows.clone();
        ctx
    }

    /// Decides without recording anything.
    pub fn decide(&self, who: &str, command: &Command) -> Result<Vec<Event>, Rejection> {
        decide(&self.state, command, &self.ctx(who))
    }

    /// Decides, then records and folds the events. Time moves on by one step either way.
    pub fn try_run(&mut self, who: &str, command: Command) -> Result<Vec<Event>, Rejection> {
        let ctx = self.ctx(who);
        self.commands += 1;
        self.now = self.now.plus(DurationSpec::from_millis(STEP_MILLIS));
        let events = decide(&self.state, &command, &ctx)?;
        for event in &events {
            let meta = EventMeta {
                event_id: format!("evt-{:06}", self.log.len() + 1),
                occurred_at: ctx.now,
                actor: ctx.actor.clone(),
                causation_id: self.log.last().map(|e| e.event_id.clone()),
                correlation_id: format!("cmd-{:06}", self.commands),
            };
            let envelope = Envelope::new(event.clone(), meta);
            evolve(&mut self.state, &envelope);
            self.log.push(envelope);
        }
        Ok(events)
    }

    /// Like [`World::try_run`] but the command must be accepted.
    #[track_caller]
    pub fn run(&mut self, who: &str, command: Command) -> Vec<Event> {
        let shown = format!("{command:?}");
        match self.try_run(who, command) {
            Ok(events) => events,
            Err(r) => panic!("{who} was refused {shown}: {r}"),
        }
    }

    /// Runs and returns self, for building scenarios.
    #[track_caller]
    pub fn with(mut self, who: &str, command: Command) -> World {
        self.run(who, command);
        self
    }

    /// The world where `who` holds only `roles` (everyone else holds every role).
    pub fn with_roles(mut self, who: &str, roles: &[Role]) -> World {
        self.roles
            .insert(who.to_string(), roles.iter().copied().collect());
        self
    }

    /// The world after `millis` more on its clock.
    pub fn with_tick(mut self, millis: u64) -> World {
        self.tick(millis);
        self
    }

    pub fn tick(&mut self, millis: u64) {
        self.now = self.now.plus(DurationSpec::from_millis(millis));
    }

    pub fn release(&self, n: u32) -> std::borrow::Cow<'_, ReleaseState> {
        self.state
            .release(&rid(n))
            .unwrap_or_else(|| panic!("no release r{n}"))
    }

    pub fn status(&self, n: u32) -> &'static str {
        self.release(n).status.name()
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.log.iter().map(|e| e.kind()).collect()
    }
}

/// Runs `command` as `who` and asserts that it is refused by `rule` (whose code is `code`),
/// that the message mentions every string of `mentions`, and that nothing was recorded.
#[track_caller]
pub fn assert_rejected(
    world: &World,
    who: &str,
    command: Command,
    rule: Rule,
    code: &str,
    mentions: &[&str],
) -> Rejection {
    let mut w = world.clone();
    let before = w.state.clone();
    let logged = w.log.len();
    let shown = format!("{command:?}");
    let rejection = match w.try_run(who, command) {
        Ok(events) => panic!("expected `{code}` for {shown} by {who}, got events {events:?}"),
        Err(r) => r,
    };
    assert_eq!(rejection.rule, rule, "rule of {shown}: {rejection}");
    assert_eq!(rule.code(), code, "code of {rule:?}");
    assert_eq!(rule.to_string(), code, "Display of {rule:?}");
    assert_eq!(
        serde_json::to_value(rule).unwrap(),
        serde_json::json!(code),
        "serde name of {rule:?}"
    );
    for m in mentions {
        assert!(
            rejection.message.contains(m),
            "message of `{code}` should mention `{m}`: {}",
            rejection.message
        );
    }
    assert!(
        rejection.to_string().contains(code),
        "Display of the rejection names the rule: {rejection}"
    );
    assert_eq!(w.state, before, "a rejected command changes nothing");
    assert_eq!(w.log.len(), logged, "a rejected command records nothing");
    rejection
}

/// Asserts that `command` is an idempotent repeat: accepted with no events, nothing changes.
#[track_caller]
pub fn assert_noop(world: &World, who: &str, command: Command) {
    let mut w = world.clone();
    let before = w.state.clone();
    let shown = format!("{command:?}");
    let events = w
        .try_run(who, command)
        .unwrap_or_else(|r| panic!("{shown} by {who} should be a no-op, was refused: {r}"));
    assert!(
        events.is_empty(),
        "{shown} should record nothing: {events:?}"
    );
    assert_eq!(w.state, before);
}

// ---------------------------------------------------------------------------------------------
// Scenarios: each builds on the previous one
// ---------------------------------------------------------------------------------------------

/// Registered, no versions.
pub fn registered() -> World {
    World::new().with(OWNER, register())
}

/// Registered with versions 1..=n published (by the author).
pub fn published(n: u32) -> World {
    let mut w = registered();
    for i in 1..=n {
        w.run(AUTHOR, publish(i));
    }
    w
}

/// Versions 1..=3 published; version 1 adopted as stable.
pub fn adopted() -> World {
    published(3).with(OWNER, adopt(1))
}

/// r1 proposes v2 against baseline v1, authored by alice.
pub fn proposed() -> World {
    adopted().with(AUTHOR, propose(2))
}

/// r1 approved by bob (product) and carol (technical).
pub fn approved() -> World {
    proposed()
        .with(PRODUCT, approve(1, ReviewLayer::Product))
        .with(TECH, approve(1, ReviewLayer::Technical))
}

/// r1 approved with a passing bundle attached.
pub fn evaluated() -> World {
    approved().with(CI, attach(1, bundle(&vid(2), &vid(1))))
}

/// r1's gate decided and passed.
pub fn gate_passed() -> World {
    evaluated().with(CI, gate(1))
}

/// r1 with the standard plan.
pub fn planned() -> World {
    gate_passed().with(OPS, plan_rollout(1, standard_plan()))
}

/// r1 rolling out at its first stage (`internal`).
pub fn rolling() -> World {
    planned().with(OPS, start(1))
}

/// r1 rolling out at its last stage (`all`).
pub fn at_last_stage() -> World {
    let mut w = rolling();
    for pair in STAGES.windows(2) {
        w.run(OPS, advance(1, pair[0]));
    }
    w
}

/// r1 completed: v2 is stable.
pub fn completed() -> World {
    at_last_stage().with(OPS, complete(1))
}

/// A world whose ledger holds at least one event of every kind.
/// A production regression case whose fingerprint repeats `byte`, with reports up to `through`.
pub fn collect_case(byte: &str, through: u64) -> Command {
    Command::CollectRegressionCase(pledger_core::decide::NewRegressionCase {
        fingerprint: byte.repeat(32),
        tag: pledger_core::outcome::FeedbackTag::HallucinatedField,
        example: "invented an order_id field".into(),
        version: Some(vid(1)),
        release: None,
        source: pledger_core::event::CaseSource::Production,
        count: 1,
        through_sequence: through,
    })
}

pub fn every_kind() -> World {
    use pledger_core::GatePolicy;
    published(3)
        .with(OWNER, adopt(1))
        .with(
            OWNER,
            Command::SetGatePolicy {
                policy: GatePolicy {
                    max_cost_increase: 0.2,
                    ..GatePolicy::default()
                },
            },
        )
        .with(CI, collect_case("ef", 1))
        .with(CI, collect_case("ef", 2))
        .with(
            OWNER,
            Command::CloseRegressionCase {
                case_id: format!("{PROMPT}-rc-{}", "ef".repeat(6)),
                reason: "covered".into(),
            },
        )
        .with(AUTHOR, propose(3))
        .with(AUTHOR, revise(1, 2))
        .with(AUTHOR, withdraw(1))
        .with(
            OWNER,
            Command::SetReleaseWindows {
                windows: Some(windows("timezone = \"UTC\"")),
            },
        )
        .with(AUTHOR, propose(2))
        .with(
            "scheduler",
            Command::RaiseNotice {
                release: rid(2),
                notice: pledger_core::event::Notice::StaleReview {
                    candidate: vid(2),
                    missing: vec![ReviewLayer::Product, ReviewLayer::Technical],
                    waiting: DurationSpec::parse("3d").unwrap(),
                },
            },
        )
        .with(PRODUCT, approve(2, ReviewLayer::Product))
        .with(TECH, approve(2, ReviewLayer::Technical))
        .with(CI, attach(2, bundle(&vid(2), &vid(1))))
        .with(LEAD, accept_tradeoff(2))
        .with(CI, gate(2))
        .with(OPS, plan_rollout(2, standard_plan()))
        .with(OPS, start(2))
        .with(OPS, pause(2))
        .with(OPS, resume(2))
        .with(OPS, freeze(2))
        .with(OPS, resume(2))
        .with(OPS, advance(2, "internal"))
        .with(OPS, advance(2, "canary"))
        .with(OPS, advance(2, "half"))
        .with(OPS, complete(2))
        .with(OPS, rollback())
        .with_fleet_event(
            "erin",
            pledger_core::Event::FleetWindowsSet(pledger_core::event::FleetWindowsSet {
                windows: Some(windows("timezone = \"UTC\"")),
            }),
        )
        .with_fleet_event(
            "root-admin",
            pledger_core::Event::IdentityEnrolled(pledger_core::event::IdentityEnrolled {
                identity: actor("frank"),
                keys: vec![public_key(11)],
                roles: vec![Role::Reviewer],
            }),
        )
        .with_fleet_event(
            "root-admin",
            pledger_core::Event::IdentityKeyRotated(pledger_core::event::IdentityKeyRotated {
                identity: actor("frank"),
                key: public_key(12),
                retired: vec![public_key(11).fingerprint()],
            }),
        )
        .with_fleet_event(
            "root-admin",
            pledger_core::Event::IdentityRolesSet(pledger_core::event::IdentityRolesSet {
                identity: actor("frank"),
                roles: vec![Role::Reviewer, Role::Oncall],
            }),
        )
        .with_fleet_event(
            "root-admin",
            pledger_core::Event::IdentityRevoked(pledger_core::event::IdentityRevoked {
                identity: actor("frank"),
                reason: "left the team".into(),
            }),
        )
        .with_fleet_event(
            "erin",
            pledger_core::Event::NotificationsSet(pledger_core::notify::NotificationsSet {
                webhooks: vec![pledger_core::notify::Webhook {
                    id: "oncall".into(),
                    url: "env:ONCALL_SLACK_URL".into(),
                    events: pledger_core::notify::NotifyOn::ALL.into_iter().collect(),
                    format: pledger_core::notify::WebhookFormat::Slack,
                    secret_env: None,
                }],
            }),
        )
        .with_digest()
}

/// A deterministic ed25519 key (tests never draw randomness).
pub fn test_key(seed: u8) -> ssh_key::PrivateKey {
    let mut key =
        ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]));
    key.set_comment(format!("test-{seed}"));
    key
}

/// The public half of [`test_key`].
pub fn public_key(seed: u8) -> pledger_core::identity::PublicKey {
    pledger_core::identity::PublicKey::from_ssh(test_key(seed).public_key().clone()).unwrap()
}

/// Release windows from TOML (must be valid).
pub fn windows(toml: &str) -> pledger_core::window::ReleaseWindows {
    pledger_core::window::ReleaseWindows::from_toml(toml)
        .unwrap_or_else(|e| panic!("{}: {}", e.field, e.message))
}

impl World {
    /// Appends a fleet-wide event to the log (the edge records these outside any prompt's
    /// family; `evolve` ignores them).
    pub fn with_fleet_event(mut self, who: &str, event: pledger_core::Event) -> World {
        let meta = EventMeta {
            event_id: format!("evt-{:06}", self.log.len() + 1),
            occurred_at: self.now,
            actor: actor(who),
            causation_id: None,
            correlation_id: format!("fleet-{:06}", self.log.len() + 1),
        };
        let envelope = Envelope::new(event, meta);
        evolve(&mut self.state, &envelope);
        self.log.push(envelope);
        self
    }

    /// The world with these global release windows in force.
    pub fn with_fleet_windows(mut self, toml: &str) -> World {
        self.fleet_windows = Some(windows(toml));
        self
    }

    /// Appends the digest of the week the log so far falls in.
    pub fn with_digest(self) -> World {
        let end = self.now.plus(DurationSpec::from_millis(1));
        let mut b = pledger_core::digest::DigestBuilder::new(
            "2026-W48",
            T0,
            end,
            "UTC",
            DurationSpec::parse("3d").unwrap(),
        );
        for e in &self.log {
            b.observe(e);
        }
        let digest = b.finish();
        self.with_fleet_event(
            "scheduler",
            pledger_core::Event::DigestRecorded(pledger_core::event::DigestRecorded {
                week: "2026-W48".into(),
                digest,
            }),
        )
    }
}

/// A routed stage: `name`, `percent`, and `match` keys each with one value or a list.
pub fn routed(
    name: &str,
    percent: f64,
    matches: &[(&str, &[&str])],
) -> pledger_core::routing::RoutedStage {
    pledger_core::routing::RoutedStage {
        name: name.into(),
        matches: matches
            .iter()
            .map(|(k, vs)| {
                let v = match vs {
                    [one] => pledger_core::plan::MatchValue::One(one.to_string()),
                    many => pledger_core::plan::MatchValue::Any(
                        many.iter().map(|s| s.to_string()).collect(),
                    ),
                };
                (k.to_string(), v)
            })
            .collect(),
        percent,
    }
}
