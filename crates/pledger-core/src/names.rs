//! Every name the system shares through NATS: streams, subjects, KV buckets, KV keys and
//! durable consumers. This is the one place they are spelled (a tidy test,
//! `pledger-core/tests/it/tidy.rs`, fails when one is spelled anywhere else in the code);
//! `pledger-infra` and the SDK use them from here.

use crate::event::{Aggregate, FleetTopic};
use crate::ids::PromptName;

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// The ledger: every event, on the subjects below.
pub const LEDGER_STREAM: &str = "PLEDGER_LEDGER";
/// Outcomes services publish.
pub const OUTCOMES_STREAM: &str = "PLEDGER_OUTCOMES";
/// Copies of what a worker could not use, with the reason.
pub const DEADLETTER_STREAM: &str = "PLEDGER_DEADLETTER";
/// The notary's signed checkpoints of the ledger's Merkle tree.
pub const CHECKPOINT_STREAM: &str = "PLEDGER_CHECKPOINTS";
/// The canary monitor's judgement history (what the release page charts): limits-based, at
/// most [`JUDGEMENTS_PER_RELEASE`] points per release, none older than [`JUDGEMENTS_MAX_AGE_DAYS`].
pub const JUDGEMENTS_STREAM: &str = "PLEDGER_JUDGEMENTS";
/// Most judgement points kept per release: at one every 5 s, about 14 hours of judging.
pub const JUDGEMENTS_PER_RELEASE: i64 = 10_000;
/// Judgement points older than this many days are removed.
pub const JUDGEMENTS_MAX_AGE_DAYS: u64 = 90;

// ---------------------------------------------------------------------------------------------
// Ledger subjects
// ---------------------------------------------------------------------------------------------

/// Every ledger subject starts with this.
pub const LEDGER_SUBJECTS: &str = "pledger.ledger.>";
/// Each prompt's own subject (one per prompt): listing them lists the prompts.
pub const PROMPT_SUBJECTS: &str = "pledger.ledger.*.prompt";
const LEDGER_PREFIX: &str = "pledger.ledger.";
/// The global release windows: one subject, its last accepted event is in force.
pub const FLEET_WINDOWS_SUBJECT: &str = "pledger.ledger._fleet.windows";
/// The roster of identities, keys and roles.
pub const ROSTER_SUBJECT: &str = "pledger.ledger._fleet.roster";
/// The webhooks notified of releases: one subject, its last accepted event is in force.
pub const NOTIFICATIONS_SUBJECT: &str = "pledger.ledger._fleet.notifications";
/// Every digest subject.
pub const DIGEST_FILTER: &str = "pledger.ledger._fleet.digest.*";

pub fn prompt_subject(prompt: &PromptName) -> String {
    format!("{LEDGER_PREFIX}{prompt}.prompt")
}

/// The prompt token of a ledger subject (`pledger.ledger.<prompt>....`), unparsed; fleet
/// subjects give `_fleet`.
pub fn prompt_token(subject: &str) -> Option<&str> {
    subject.strip_prefix(LEDGER_PREFIX)?.split('.').next()
}

/// Every subject of a prompt's family: the prompt and its releases.
pub fn family_filter(prompt: &PromptName) -> String {
    format!("{LEDGER_PREFIX}{prompt}.>")
}

/// The subject of one week's digest. It holds at most one event: the digest is appended only
/// if the subject is still empty (`Nats-Expected-Last-Subject-Sequence: 0`).
pub fn digest_subject(week: &str) -> String {
    format!("pledger.ledger._fleet.digest.{week}")
}

/// The subject an event of `aggregate` is recorded on.
pub fn subject_for(aggregate: &Aggregate) -> String {
    match aggregate {
        Aggregate::Prompt(p) => prompt_subject(p),
        Aggregate::Release(r) => format!("{LEDGER_PREFIX}{}.release.{}", r.prompt(), r.token()),
        Aggregate::Fleet(FleetTopic::Windows) => FLEET_WINDOWS_SUBJECT.to_string(),
        Aggregate::Fleet(FleetTopic::Roster) => ROSTER_SUBJECT.to_string(),
        Aggregate::Fleet(FleetTopic::Notifications) => NOTIFICATIONS_SUBJECT.to_string(),
        Aggregate::Fleet(FleetTopic::Digest(week)) => digest_subject(week),
    }
}

// ---------------------------------------------------------------------------------------------
// Outcome and dead-letter subjects
// ---------------------------------------------------------------------------------------------

/// Every outcome subject.
pub const OUTCOMES_SUBJECTS: &str = "pledger.outcomes.>";
/// The outcome subjects of every prompt (one token each): what the workers consume.
pub const OUTCOMES_FILTER: &str = "pledger.outcomes.*";

/// The subject services publish a prompt's outcomes on.
pub fn outcome_subject(prompt: &PromptName) -> String {
    format!("pledger.outcomes.{prompt}")
}

/// Every judgement history subject.
pub const JUDGEMENTS_SUBJECTS: &str = "pledger.judgements.>";

/// The subject of one release's judgement history.
pub fn judgement_subject(release: &crate::ReleaseId) -> String {
    format!("pledger.judgements.{release}")
}

/// Every dead-letter subject.
pub const DEADLETTER_SUBJECTS: &str = "pledger.deadletter.>";
/// The one subject of [`CHECKPOINT_STREAM`]: each message a checkpoint as a signed note.
pub const CHECKPOINT_SUBJECT: &str = "pledger.checkpoints";

/// The origin line of a ledger's checkpoints: names the ledger by the hash of its roster's
/// first event (`sha256:<hex>`), which no other ledger has.
pub fn checkpoint_origin(genesis_hash: &str) -> String {
    let hex = genesis_hash.trim_start_matches("sha256:");
    format!("pledger/ledger/{}", &hex[..hex.len().min(32)])
}

/// The dead-letter subject of what `worker` could not use from `source` (a subject).
pub fn deadletter_subject(worker: &str, source: &str) -> String {
    format!("pledger.deadletter.{worker}.{source}")
}

// ---------------------------------------------------------------------------------------------
// KV buckets and keys
// ---------------------------------------------------------------------------------------------

/// The runtime config layer: one key per prompt ([`routing_key`]) holding its routing table.
pub const ROUTING_BUCKET: &str = "pledger_routing";
/// The stream behind [`ROUTING_BUCKET`].
pub const ROUTING_STREAM: &str = "KV_pledger_routing";
/// The canary monitor's status of each active rollout ([`canary_status_key`]) and the
/// feedback collector's counters ([`feedback_status_key`]).
pub const CANARY_STATUS_BUCKET: &str = "pledger_canary";
/// The stream behind [`CANARY_STATUS_BUCKET`].
pub const CANARY_STATUS_STREAM: &str = "KV_pledger_canary";

/// A prompt's key in [`ROUTING_BUCKET`].
pub fn routing_key(prompt: &PromptName) -> String {
    prompt.to_string()
}

/// The notifier's claims: one key per (webhook, event) delivery ([`notification_claim_key`]),
/// so that one replica sends it.
pub const NOTIFY_CLAIMS_BUCKET: &str = "pledger_notify";
/// The stream behind [`NOTIFY_CLAIMS_BUCKET`].
pub const NOTIFY_CLAIMS_STREAM: &str = "KV_pledger_notify";

/// A delivery's key in [`NOTIFY_CLAIMS_BUCKET`]: `<webhook>.<event id>`, the event id kept
/// when it is made of key characters (a UUID is) and otherwise replaced by its SHA-256.
pub fn notification_claim_key(webhook: &str, event_id: &str) -> String {
    let plain = !event_id.is_empty()
        && event_id.len() <= 64
        && event_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        format!("{webhook}.{event_id}")
    } else {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(event_id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{webhook}.sha256-{hex}")
    }
}

/// A release's key in [`CANARY_STATUS_BUCKET`].
pub fn canary_status_key(release: &crate::ReleaseId) -> String {
    release.to_string()
}

/// A prompt's feedback counters' key in [`CANARY_STATUS_BUCKET`].
pub fn feedback_status_key(prompt: &PromptName) -> String {
    format!("feedback-{prompt}")
}

// ---------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------

/// The durable consumer of one worker replica on a stream.
pub fn durable_name(worker: &str, replica: &str, stream: &str) -> String {
    format!("pledger_{worker}_{replica}_{}", stream.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Prometheus metrics (`--metrics ADDR`; docs/RUNBOOK.md, "Metrics")
// ---------------------------------------------------------------------------------------------

/// The latest release of each prompt: 0 in progress, 1 completed, 2 frozen or rolled back, 3
/// withdrawn.
pub const METRIC_RELEASE_STATUS: &str = "pledger_release_status";
/// The latest release of each prompt with its phase; always 1.
pub const METRIC_RELEASE_INFO: &str = "pledger_release_info";
/// Percent of the current stage's segment the candidate serves.
pub const METRIC_ROLLOUT_WEIGHT: &str = "pledger_rollout_weight";
/// Index of the rollout's current stage.
pub const METRIC_ROLLOUT_STAGE: &str = "pledger_rollout_stage";
/// Outcomes counted in the current stage visit, per arm.
pub const METRIC_CANARY_SAMPLES: &str = "pledger_canary_samples";
/// A guardrail bound's measured value per arm.
pub const METRIC_GUARDRAIL_VALUE: &str = "pledger_canary_guardrail_value";
/// A guardrail bound's limit.
pub const METRIC_GUARDRAIL_LIMIT: &str = "pledger_canary_guardrail_limit";
/// A guardrail bound's sequential test statistic.
pub const METRIC_GUARDRAIL_STATISTIC: &str = "pledger_canary_guardrail_statistic";
/// The statistic at which a guardrail bound breaches.
pub const METRIC_GUARDRAIL_THRESHOLD: &str = "pledger_canary_guardrail_threshold";
/// 1 when a guardrail bound is breached.
pub const METRIC_GUARDRAIL_BREACHED: &str = "pledger_canary_guardrail_breached";
/// A counter (exposed with `_total`): decisions recorded on the ledger.
pub const METRIC_DECISIONS: &str = "pledger_decisions";
/// A counter (exposed with `_total`): regression cases recorded.
pub const METRIC_REGRESSION_CASES: &str = "pledger_regression_cases_collected";
/// A counter (exposed with `_total`): messages a worker dead-lettered.
pub const METRIC_DEAD_LETTERS: &str = "pledger_worker_dead_letters";
/// A worker's durable consumer's messages not delivered yet.
pub const METRIC_CONSUMER_PENDING: &str = "pledger_worker_consumer_pending";
/// A counter (exposed with `_total`): webhook deliveries by result (`delivered`, `retried`,
/// `gave_up`, `dropped`).
pub const METRIC_NOTIFICATIONS: &str = "pledger_notifications";
/// A worker's durable consumer's messages delivered and not acknowledged.
pub const METRIC_CONSUMER_ACK_PENDING: &str = "pledger_worker_consumer_ack_pending";
/// Bytes the process has allocated and not freed (its data, without the allocator's slack).
pub const METRIC_PROCESS_HEAP: &str = "pledger_process_heap_bytes";
/// The process's resident memory (VmRSS), beside its heap: the difference is what the
/// allocator holds on to.
pub const METRIC_PROCESS_RESIDENT: &str = "pledger_process_resident_bytes";

// ---------------------------------------------------------------------------------------------
// Local files
// ---------------------------------------------------------------------------------------------

/// The directory of a reader's family snapshots under the CLI's cache directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// How a snapshot file's name ends (after the prompt's name).
pub const SNAPSHOT_FILE_SUFFIX: &str = ".snapshot";
