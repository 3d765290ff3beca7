//! Events: the immutable facts on the ledger, and the one envelope that carries them all.
//!
//! Wire form (JSON): the envelope's fields, `kind` (e.g. `release.review_submitted`) and
//! `payload` (the kind's own shape). Every kind has its own `schema_version`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::bundle::{EvalBundle, Regression};
use crate::gate::{GateCheck, GatePolicy};
use crate::ids::{Actor, PromptName, ReleaseId, Timestamp, VersionId};
use crate::plan::RolloutPlan;

pub use crate::notify::NotificationsSet;

/// The aggregate an event belongs to. The prompt is the consistency boundary: every event of
/// a prompt and its releases is appended against the last sequence of the prompt's family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Prompt(PromptName),
    Release(ReleaseId),
    /// Facts about the whole ledger rather than one prompt: the global release windows and the
    /// weekly digests. Their subjects start with `_fleet`, which no prompt name can.
    Fleet(FleetTopic),
}

/// What a fleet-wide event is about. Each topic is its own subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FleetTopic {
    /// The global release windows (`pledger.ledger._fleet.windows`).
    Windows,
    /// The digest of one week (`pledger.ledger._fleet.digest.<week>`, e.g. `2026-W48`).
    Digest(String),
    /// The roster of identities, their keys and roles (`pledger.ledger._fleet.roster`).
    Roster,
    /// The webhooks notified of releases (`pledger.ledger._fleet.notifications`).
    Notifications,
}

impl Aggregate {
    /// The prompt whose family the event belongs to (none for fleet-wide events).
    pub fn prompt(&self) -> Option<&PromptName> {
        match self {
            Aggregate::Prompt(p) => Some(p),
            Aggregate::Release(r) => Some(r.prompt()),
            Aggregate::Fleet(_) => None,
        }
    }
    /// `prompt:<name>`, `release:<id>`, `fleet:windows`, `fleet:roster`, `fleet:notifications`
    /// or `fleet:digest-<week>`.
    pub fn id(&self) -> String {
        match self {
            Aggregate::Prompt(p) => format!("prompt:{p}"),
            Aggregate::Release(r) => format!("release:{r}"),
            Aggregate::Fleet(FleetTopic::Windows) => "fleet:windows".to_string(),
            Aggregate::Fleet(FleetTopic::Digest(week)) => format!("fleet:digest-{week}"),
            Aggregate::Fleet(FleetTopic::Roster) => "fleet:roster".to_string(),
            Aggregate::Fleet(FleetTopic::Notifications) => "fleet:notifications".to_string(),
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReviewLayer {
    /// Tone, policy alignment, user value.
    Product,
    /// Determinism, schema compliance, failure handling.
    Technical,
}

impl std::fmt::Display for ReviewLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReviewLayer::Product => "product",
            ReviewLayer::Technical => "technical",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    Approve,
    RequestChanges,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromptRegistered {
    pub prompt: PromptName,
    pub owner: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionPublished {
    pub prompt: PromptName,
    pub version: VersionId,
    pub artifact: Artifact,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionAdopted {
    pub prompt: PromptName,
    pub version: VersionId,
    #[serde(default)]
    pub previous_stable: Option<VersionId>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GatePolicySet {
    pub prompt: PromptName,
    pub policy: GatePolicy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeProposed {
    pub release: ReleaseId,
    pub author: Actor,
    pub candidate: VersionId,
    /// The prompt's stable version when the change was proposed (none if it had none).
    #[serde(default)]
    pub baseline: Option<VersionId>,
    pub rationale: String,
    #[serde(default)]
    pub expected_changes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CandidateRevised {
    pub release: ReleaseId,
    pub candidate: VersionId,
    pub previous_candidate: VersionId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReviewSubmitted {
    pub release: ReleaseId,
    pub reviewer: Actor,
    pub layer: ReviewLayer,
    pub verdict: ReviewVerdict,
    /// The candidate version that was reviewed.
    pub candidate: VersionId,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvalBundleAttached {
    pub release: ReleaseId,
    /// SHA-256 of the bundle's canonical JSON.
    pub bundle_digest: String,
    pub bundle: EvalBundle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TradeoffAccepted {
    pub release: ReleaseId,
    pub accepted_by: Actor,
    /// The bundle whose latency or cost rise is accepted.
    pub bundle_digest: String,
    pub reason: String,
}

/// What a gate decision was based on. A gate is decided once per evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateEvidence {
    pub candidate: VersionId,
    pub bundle_digest: String,
    pub tradeoff_accepted: bool,
    pub policy_digest: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateDecided {
    pub release: ReleaseId,
    pub passed: bool,
    pub evidence: GateEvidence,
    pub policy: GatePolicy,
    pub checks: Vec<GateCheck>,
    /// The bundle's top regressions, carried for reviewers and auditors.
    #[serde(default)]
    pub regressions: Vec<Regression>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutPlanned {
    pub release: ReleaseId,
    pub plan: RolloutPlan,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutStarted {
    pub release: ReleaseId,
    pub candidate: VersionId,
    pub baseline: VersionId,
    /// The first stage.
    pub stage: String,
    /// Salt of the sticky bucketing for this rollout.
    pub bucketing_salt: String,
    /// Started outside a release window with `--force`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageAdvanced {
    pub release: ReleaseId,
    pub from_stage: String,
    pub to_stage: String,
    /// Advanced over a readiness or release-window objection with `--force`.
    #[serde(default)]
    pub forced: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutPaused {
    pub release: ReleaseId,
    pub stage: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutResumed {
    pub release: ReleaseId,
    pub stage: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutFrozen {
    pub release: ReleaseId,
    pub stage: String,
    pub reason: String,
    /// For an automatic freeze: the canary monitor's judgement (counts, rates, each guardrail's
    /// statistic against its threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<crate::canary::Judgement>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolledBack {
    pub release: ReleaseId,
    /// The version taken out of service (the release's candidate).
    pub from_version: VersionId,
    /// The version serving all traffic again (the release's baseline).
    pub to_version: VersionId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseCompleted {
    pub release: ReleaseId,
    /// The new stable version.
    pub version: VersionId,
    pub previous_stable: VersionId,
    /// Completed outside a release window with `--force`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalWithdrawn {
    pub release: ReleaseId,
    pub reason: String,
}

/// Where a regression case came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseSource {
    /// Feedback in production outcomes, collected by the feedback collector.
    Production,
    /// Filed by a reviewer with `pledger regressions add`.
    Manual,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegressionCaseCollected {
    pub prompt: PromptName,
    /// `<prompt>-rc-<12 hex of the fingerprint>`.
    pub case_id: String,
    /// SHA-256 of the prompt, the tag and the normalised, redacted example.
    pub fingerprint: String,
    pub tag: crate::outcome::FeedbackTag,
    /// The example after redaction: no personal data reaches the ledger.
    pub example: String,
    #[serde(default)]
    pub version: Option<VersionId>,
    #[serde(default)]
    pub release: Option<ReleaseId>,
    pub source: CaseSource,
    /// Reports folded into this event (1 or more).
    pub count: u64,
    /// For production cases: the outcome stream sequence the reports run up to (replays at or
    /// below it are not counted again).
    #[serde(default)]
    pub through_sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegressionCaseRecurred {
    pub prompt: PromptName,
    pub case_id: String,
    /// Reports since the case's last event.
    pub additional: u64,
    pub through_sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegressionCaseClosed {
    pub prompt: PromptName,
    pub case_id: String,
    pub reason: String,
}

/// A prompt's own release windows set (or cleared, `windows: None`: the global ones apply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseWindowsSet {
    pub prompt: PromptName,
    #[serde(default)]
    pub windows: Option<crate::window::ReleaseWindows>,
}

/// The global release windows set (or cleared): they apply to every prompt without its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FleetWindowsSet {
    #[serde(default)]
    pub windows: Option<crate::window::ReleaseWindows>,
}

/// Something about a release that needs a person, found by the scheduler's periodic checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The stage baked and is healthy, and the plan advances by hand: someone should advance.
    BakeReached { stage: String },
    /// The stage baked long ago but lacks the samples to judge it (reported, never passed).
    StuckOnData {
        stage: String,
        samples: u64,
        min_samples: u64,
        /// How long past its bake time the stage has been.
        overdue: crate::ids::DurationSpec,
    },
    /// The candidate has waited for a review longer than the limit.
    StaleReview {
        candidate: VersionId,
        missing: Vec<ReviewLayer>,
        waiting: crate::ids::DurationSpec,
    },
}

impl Notice {
    /// What the notice asks of people, in one line.
    pub fn describe(&self) -> String {
        match self {
            Notice::BakeReached { stage } => {
                format!("stage `{stage}` baked and is healthy; its plan advances by hand")
            }
            Notice::StuckOnData {
                stage,
                samples,
                min_samples,
                overdue,
            } => format!(
                "stage `{stage}` is {overdue} past its bake time with {samples} of {min_samples} samples per arm (not passed; send traffic or change the plan)"
            ),
            Notice::StaleReview {
                missing, waiting, ..
            } => format!(
                "waiting {waiting} for the {} review",
                missing
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }
    }

    /// What a notice is about, for de-duplication: one notice per stage visit, per candidate.
    pub fn key(&self, stage_entered_at: Option<Timestamp>) -> String {
        let visit = stage_entered_at
            .map(|t| t.unix_millis())
            .unwrap_or_default();
        match self {
            Notice::BakeReached { stage } => format!("bake_reached:{stage}:{visit}"),
            Notice::StuckOnData { stage, .. } => format!("stuck_on_data:{stage}:{visit}"),
            Notice::StaleReview { candidate, .. } => format!("stale_review:{candidate}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoticeRaised {
    pub release: ReleaseId,
    /// De-duplication key ([`Notice::key`]).
    pub key: String,
    pub notice: Notice,
}

/// One week's digest, written once per week by the scheduler (or `pledger digest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DigestRecorded {
    pub week: String,
    pub digest: crate::digest::Digest,
}

/// An identity enrolled on the roster. The first event of the roster enrols the first admin,
/// signed by one of its own keys (trust on first use).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityEnrolled {
    pub identity: Actor,
    /// OpenSSH ed25519 public keys (`ssh-ed25519 AAAA… comment`).
    pub keys: Vec<crate::identity::PublicKey>,
    pub roles: Vec<crate::identity::Role>,
}

/// An identity's keys replaced: `key` is added and every key it held before is retired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityKeyRotated {
    pub identity: Actor,
    pub key: crate::identity::PublicKey,
    /// Fingerprints (`SHA256:…`) of the keys retired by this rotation.
    pub retired: Vec<String>,
}

/// An identity's roles replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityRolesSet {
    pub identity: Actor,
    pub roles: Vec<crate::identity::Role>,
}

/// An identity revoked: none of its keys signs anything after this event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityRevoked {
    pub identity: Actor,
    pub reason: String,
}

macro_rules! events {
    ($( $variant:ident = $kind:literal ),* $(,)?) => {
        /// Every kind of ledger event. `kind()` is its wire name.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "payload")]
        pub enum Event {
            $( #[serde(rename = $kind)] $variant($variant), )*
        }

        impl Event {
            /// Wire names of every kind, in declaration order.
            pub const KINDS: &'static [&'static str] = &[$($kind),*];

            pub fn kind(&self) -> &'static str {
                match self { $( Event::$variant(_) => $kind, )* }
            }
        }

        /// The JSON Schema of every kind's payload, by wire name.
        pub fn payload_schemas() -> Vec<(&'static str, schemars::Schema)> {
            vec![ $( ($kind, schemars::schema_for!($variant)), )* ]
        }
    };
}

events! {
    PromptRegistered = "prompt.registered",
    VersionPublished = "prompt.version_published",
    VersionAdopted = "prompt.version_adopted",
    GatePolicySet = "prompt.gate_policy_set",
    ChangeProposed = "release.change_proposed",
    CandidateRevised = "release.candidate_revised",
    ReviewSubmitted = "release.review_submitted",
    EvalBundleAttached = "release.eval_bundle_attached",
    TradeoffAccepted = "release.tradeoff_accepted",
    GateDecided = "release.gate_decided",
    RolloutPlanned = "release.rollout_planned",
    RolloutStarted = "release.rollout_started",
    StageAdvanced = "release.stage_advanced",
    RolloutPaused = "release.rollout_paused",
    RolloutResumed = "release.rollout_resumed",
    RolloutFrozen = "release.rollout_frozen",
    RolledBack = "release.rolled_back",
    ReleaseCompleted = "release.completed",
    ProposalWithdrawn = "release.withdrawn",
    RegressionCaseCollected = "prompt.regression_case_collected",
    RegressionCaseRecurred = "prompt.regression_case_recurred",
    RegressionCaseClosed = "prompt.regression_case_closed",
    ReleaseWindowsSet = "prompt.release_windows_set",
    FleetWindowsSet = "fleet.release_windows_set",
    NoticeRaised = "release.notice_raised",
    DigestRecorded = "fleet.digest_recorded",
    IdentityEnrolled = "fleet.identity_enrolled",
    IdentityKeyRotated = "fleet.identity_key_rotated",
    IdentityRolesSet = "fleet.identity_roles_set",
    IdentityRevoked = "fleet.identity_revoked",
    NotificationsSet = "fleet.notifications_set",
}

impl Event {
    /// The payload schema version this build writes for the kind. Readers refuse events of a
    /// higher version than they know rather than misread them.
    pub fn schema_version(&self) -> u32 {
        1
    }

    pub fn aggregate(&self) -> Aggregate {
        match self {
            Event::PromptRegistered(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::VersionPublished(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::VersionAdopted(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::GatePolicySet(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::ChangeProposed(e) => Aggregate::Release(e.release.clone()),
            Event::CandidateRevised(e) => Aggregate::Release(e.release.clone()),
            Event::ReviewSubmitted(e) => Aggregate::Release(e.release.clone()),
            Event::EvalBundleAttached(e) => Aggregate::Release(e.release.clone()),
            Event::TradeoffAccepted(e) => Aggregate::Release(e.release.clone()),
            Event::GateDecided(e) => Aggregate::Release(e.release.clone()),
            Event::RolloutPlanned(e) => Aggregate::Release(e.release.clone()),
            Event::RolloutStarted(e) => Aggregate::Release(e.release.clone()),
            Event::StageAdvanced(e) => Aggregate::Release(e.release.clone()),
            Event::RolloutPaused(e) => Aggregate::Release(e.release.clone()),
            Event::RolloutResumed(e) => Aggregate::Release(e.release.clone()),
            Event::RolloutFrozen(e) => Aggregate::Release(e.release.clone()),
            Event::RolledBack(e) => Aggregate::Release(e.release.clone()),
            Event::ReleaseCompleted(e) => Aggregate::Release(e.release.clone()),
            Event::ProposalWithdrawn(e) => Aggregate::Release(e.release.clone()),
            Event::RegressionCaseCollected(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::RegressionCaseRecurred(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::RegressionCaseClosed(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::ReleaseWindowsSet(e) => Aggregate::Prompt(e.prompt.clone()),
            Event::FleetWindowsSet(_) => Aggregate::Fleet(FleetTopic::Windows),
            Event::NoticeRaised(e) => Aggregate::Release(e.release.clone()),
            Event::DigestRecorded(e) => Aggregate::Fleet(FleetTopic::Digest(e.week.clone())),
            Event::IdentityEnrolled(_)
            | Event::IdentityKeyRotated(_)
            | Event::IdentityRolesSet(_)
            | Event::IdentityRevoked(_) => Aggregate::Fleet(FleetTopic::Roster),
            Event::NotificationsSet(_) => Aggregate::Fleet(FleetTopic::Notifications),
        }
    }
}

/// The latest payload schema version this build reads.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// Who, when and why of an event, set by the edge that records it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventMeta {
    /// Unique id (a UUIDv7 from the recording edge); also the JetStream `Nats-Msg-Id`.
    pub event_id: String,
    pub occurred_at: Timestamp,
    pub actor: Actor,
    /// The event or request that caused this one.
    pub causation_id: Option<String>,
    /// Groups every event of one user action or workflow.
    pub correlation_id: String,
}

/// An event with its metadata: what goes on the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireEnvelope", try_from = "WireEnvelope")]
pub struct Envelope {
    pub event_id: String,
    pub schema_version: u32,
    pub aggregate_id: String,
    pub occurred_at: Timestamp,
    pub actor: Actor,
    pub causation_id: Option<String>,
    pub correlation_id: String,
    /// `sha256:<hex>` of the stored bytes of the previous accepted event of the event's family
    /// (`None` for a family's first event). Signed.
    pub prev_hash: Option<String>,
    /// Fingerprint (`SHA256:…`) of the key that signed the event. Signed.
    pub key_id: Option<String>,
    /// The SSH signature (`SSHSIG`, namespace `pledger-event-v1`) over the envelope's signing
    /// bytes, base64 of its binary encoding ([`crate::verify`]).
    pub signature: Option<String>,
    pub event: Event,
}

impl Envelope {
    pub fn new(event: Event, meta: EventMeta) -> Envelope {
        Envelope {
            event_id: meta.event_id,
            schema_version: event.schema_version(),
            aggregate_id: event.aggregate().id(),
            occurred_at: meta.occurred_at,
            actor: meta.actor,
            causation_id: meta.causation_id,
            correlation_id: meta.correlation_id,
            prev_hash: None,
            key_id: None,
            signature: None,
            event,
        }
    }
    pub fn kind(&self) -> &'static str {
        self.event.kind()
    }

    /// Decodes an envelope from its wire JSON (the stored bytes of a ledger message). A refusal
    /// names the field (`occurred_at: invalid type: ...`, `payload of
    /// \`release.review_submitted\`: verdict: unknown variant ...`) or, for broken JSON, the
    /// line and column.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, String> {
        // The usual, valid message decodes in one typed pass; only a refused one is decoded
        // again, the slow way, tracking the path to the value that fails.
        if let Some(envelope) = Envelope::from_json_fast(bytes) {
            return Ok(envelope);
        }
        serde_json::from_slice(bytes).map_err(|plain| {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize::<_, Envelope>(&mut de) {
                Err(e) => {
                    let path = e.path().to_string();
                    crate::error::with_path(&path, e.into_inner().to_string())
                }
                Ok(_) => de.end().err().unwrap_or(plain).to_string(),
            }
        })
    }
}

/// The JSON shape of [`Envelope`]: the envelope fields, `kind` and `payload`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WireEnvelope<P = serde_json::Value> {
    pub event_id: String,
    pub kind: String,
    pub schema_version: u32,
    /// `prompt:<name>`, `release:<prompt>-r<n>`, `fleet:windows`, `fleet:roster`,
    /// `fleet:notifications` or `fleet:digest-<week>`.
    pub aggregate_id: String,
    pub occurred_at: Timestamp,
    pub actor: Actor,
    #[serde(default)]
    pub causation_id: Option<String>,
    pub correlation_id: String,
    /// `sha256:<hex>` of the previous accepted event of the family (null for the first).
    #[serde(default)]
    pub prev_hash: Option<String>,
    /// Fingerprint of the signing key (`SHA256:…`, as `ssh-keygen -l` prints it).
    #[serde(default)]
    pub key_id: Option<String>,
    /// base64 of the binary SSHSIG (namespace `pledger-event-v1`) over the signing bytes: the
    /// canonical JSON of this object without `signature`. Always the last member.
    #[serde(default)]
    pub signature: Option<String>,
    pub payload: P,
}

impl From<Envelope> for WireEnvelope {
    fn from(e: Envelope) -> WireEnvelope {
        let tagged = serde_json::to_value(&e.event).expect("event serializes");
        let serde_json::Value::Object(mut map) = tagged else {
            unreachable!("adjacently tagged enum is an object")
        };
        let kind = map
            .remove("kind")
            .and_then(|k| k.as_str().map(str::to_string))
            .expect("kind tag");
        let payload = map.remove("payload").expect("payload");
        WireEnvelope {
            event_id: e.event_id,
            kind,
            schema_version: e.schema_version,
            aggregate_id: e.aggregate_id,
            occurred_at: e.occurred_at,
            actor: e.actor,
            causation_id: e.causation_id,
            correlation_id: e.correlation_id,
            prev_hash: e.prev_hash,
            key_id: e.key_id,
            signature: e.signature,
            payload,
        }
    }
}

/// The envelope's own rules: a known kind and a schema version this build reads.
fn check_kind<P>(w: &WireEnvelope<P>) -> Result<(), String> {
    if !Event::KINDS.contains(&w.kind.as_str()) {
        return Err(format!("unknown event kind `{}`", w.kind));
    }
    if w.schema_version == 0 || w.schema_version > CURRENT_SCHEMA_VERSION {
        return Err(format!(
            "event kind `{}` has schema_version {}, this build reads up to {CURRENT_SCHEMA_VERSION}",
            w.kind, w.schema_version
        ));
    }
    Ok(())
}

/// An envelope from its wire fields and its decoded event, if the event's aggregate is the one
/// the envelope names.
fn assemble<P>(w: WireEnvelope<P>, event: Event) -> Result<Envelope, String> {
    let aggregate = event.aggregate();
    let expected = aggregate.id();
    if expected != w.aggregate_id {
        // The payload's field the aggregate comes from, if any.
        let source = match aggregate {
            Aggregate::Prompt(_) => " (from its `prompt`)",
            Aggregate::Release(_) => " (from its `release`)",
            Aggregate::Fleet(FleetTopic::Digest(_)) => " (from its `week`)",
            Aggregate::Fleet(_) => "",
        };
        return Err(format!(
            "aggregate_id `{}` does not match the payload's `{expected}`{source}",
            w.aggregate_id
        ));
    }
    Ok(Envelope {
        event_id: w.event_id,
        schema_version: w.schema_version,
        aggregate_id: w.aggregate_id,
        occurred_at: w.occurred_at,
        actor: w.actor,
        causation_id: w.causation_id,
        correlation_id: w.correlation_id,
        prev_hash: w.prev_hash,
        key_id: w.key_id,
        signature: w.signature,
        event,
    })
}

impl Envelope {
    /// [`Envelope::from_json`] in one typed pass, without building the payload as a
    /// `serde_json::Value` first: the payload is kept as raw JSON and decoded straight into
    /// its event. `None` for anything it does not accept; the slow path then decodes the
    /// message again and names what is wrong.
    fn from_json_fast(bytes: &[u8]) -> Option<Envelope> {
        let w: WireEnvelope<&serde_json::value::RawValue> = serde_json::from_slice(bytes).ok()?;
        check_kind(&w).ok()?;
        let kind = serde_json::to_string(&w.kind).ok()?;
        let raw = w.payload.get();
        let mut tagged = String::with_capacity(raw.len() + kind.len() + 24);
        tagged.push_str("{\"kind\":");
        tagged.push_str(&kind);
        tagged.push_str(",\"payload\":");
        tagged.push_str(raw);
        tagged.push('}');
        let event: Event = serde_json::from_str(&tagged).ok()?;
        assemble(w, event).ok()
    }
}

impl TryFrom<WireEnvelope> for Envelope {
    type Error = String;
    fn try_from(mut w: WireEnvelope) -> Result<Envelope, String> {
        check_kind(&w)?;
        let payload = std::mem::take(&mut w.payload);
        let tagged = serde_json::json!({ "kind": w.kind.clone(), "payload": payload });
        let event = match Event::deserialize(&tagged) {
            Ok(event) => event,
            // Decoded again, tracking the path, to name the payload's field that fails.
            Err(plain) => {
                let e = match serde_path_to_error::deserialize::<_, Event>(&tagged) {
                    Err(e) => {
                        let mut path = e.path().to_string();
                        let message = e.inner().to_string();
                        let names_its_field = ["missing field", "unknown field"]
                            .iter()
                            .any(|m| message.starts_with(m));
                        if !names_its_field {
                            if let Some(member) = member_at_fault(&tagged, e.path()) {
                                path = format!("{path}.{member}");
                            }
                        }
                        let field = path.strip_prefix("payload").unwrap_or(&path);
                        let field = field.strip_prefix('.').unwrap_or(field);
                        crate::error::with_path(field, message)
                    }
                    Ok(_) => plain.to_string(),
                };
                return Err(format!("payload of `{}`: {e}", w.kind));
            }
        };
        assemble(w, event)
    }
}

/// The tag members of the internally tagged enums in payloads (`Notice`).
const INTERNAL_TAGS: [&str; 1] = ["notice"];

/// The member of the object at `path` in `tagged` that fails to decode, when the error's path
/// stops at that object: serde decodes an internally tagged enum (`notice`) from a buffered
/// copy and reports a bad member without its name (`notice: invalid type: null, expected a
/// string`). The culprit is the required member whose removal turns the error into "missing
/// field" about itself. Removing the enum's tag always does, so the tag is the culprit only
/// when no other member is. Only refused payloads are probed.
fn member_at_fault(tagged: &serde_json::Value, path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Enum { .. } | Segment::Unknown => return None,
        }
    }
    let serde_json::Value::Object(members) = tagged.pointer(&pointer)? else {
        return None;
    };
    let culprits: Vec<&String> = members
        .keys()
        .filter(|key| {
            let mut probe = tagged.clone();
            if let Some(serde_json::Value::Object(object)) = probe.pointer_mut(&pointer) {
                object.remove(key.as_str());
            }
            let missing = format!("missing field `{key}`");
            matches!(Event::deserialize(&probe), Err(e) if e.to_string().starts_with(&missing))
        })
        .collect();
    culprits
        .iter()
        .find(|key| !INTERNAL_TAGS.contains(&key.as_str()))
        .or(culprits.first())
        .map(|key| key.to_string())
}
