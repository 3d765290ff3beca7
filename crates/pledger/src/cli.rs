//! The command line: names here are a contract (scripts and CI call them).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pledger",
    version,
    about = "Prompt Ledger: prompt changes under release discipline",
    after_help = "Exit codes: 0 success, 1 other error, 2 usage or invalid input, 3 rejected by a rule, \
                  4 conflict after retries, 5 cannot reach the server, 6 the gate was decided and failed."
)]
pub struct Cli {
    /// NATS server URL, or several separated by commas (the nodes of a cluster).
    #[arg(long, global = true, env = "PLEDGER_NATS_URL", default_value = pledger_infra::server::DEFAULT_URL)]
    pub nats: String,
    /// Which of your local keys signs (the keyring entry of that name). The identity recorded
    /// is always the one that owns the signing key on the roster; a mismatch is refused.
    #[arg(long = "as", global = true, env = "PLEDGER_ACTOR", value_name = "NAME")]
    pub actor: Option<String>,
    /// The private key to sign with (OpenSSH ed25519; a `.pub` path means the key beside it).
    /// Default: the keyring entry of --as, the keyring's default identity, ~/.ssh/id_ed25519.
    #[arg(long, global = true, env = "PLEDGER_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Config dir holding the local keyring (default: $XDG_CONFIG_HOME/pledger or
    /// ~/.config/pledger).
    #[arg(long, global = true, env = "PLEDGER_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Cache dir holding snapshots of verified prompt families, so a command reads only what
    /// is new (default: <config dir>/cache when --config-dir or PLEDGER_CONFIG_DIR is given,
    /// else $XDG_CACHE_HOME/pledger or ~/.cache/pledger). Safe to delete at any time.
    #[arg(long, global = true, env = "PLEDGER_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TopCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Create (or check) the ledger streams and buckets (needs NATS admin rights); with
    /// --admin, enrol the first admin with the signing key (trust on first use).
    Init {
        /// Enrol the first admin under this name, with the key from --key (or --as, or
        /// ~/.ssh/id_ed25519). Only on an empty roster.
        #[arg(long, value_name = "NAME")]
        admin: Option<String>,
        /// Copies of every stream and bucket on a cluster (e.g. 3 on three nodes); existing
        /// ones are updated. Default: new ones get 1, existing ones keep theirs.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
    },
    /// The roster: who may sign what.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Run a local nats-server for the ledger in the foreground (Ctrl-C stops it).
    Up(UpArgs),
    /// Serve the read-only release pages (prompts, releases with live guardrail charts,
    /// digest, audit status) until Ctrl-C.
    Ui(UiArgs),
    /// Run the whole release story, narrated, on a private throwaway server.
    Demo,
    /// Prompts and their versions.
    #[command(subcommand)]
    Prompt(PromptCommand),
    /// Releases: proposals, reviews, evals and the gate.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Canary rollouts by traffic segment.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Roll a prompt back to its previous stable version, now.
    Rollback {
        prompt: String,
        /// The release to roll back (default: the active rollout, else the last completed
        /// release, as seen when the command starts).
        #[arg(long)]
        release: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Eval bundles from other tools' results.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Which version a request gets, from the runtime config layer.
    Resolve {
        prompt: String,
        /// Sticky unit key (user, session or tenant id) for percentage bucketing.
        #[arg(long)]
        unit: Option<String>,
        /// Request attribute, repeatable: --attr user_kind=internal --attr geo=eu.
        #[arg(long = "attr", value_name = "K=V")]
        attrs: Vec<String>,
    },
    /// The ledger's history.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Release windows: when rollouts may start, advance and complete.
    #[command(subcommand)]
    Windows(WindowsCommand),
    /// Webhooks notified of failed gates, freezes, rollbacks, completions and the scheduler's
    /// notices (delivered by the notifier worker).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// The weekly digest: shipped, frozen, rolled back, failed gates, trade-offs, open cases,
    /// stale reviews. A finished week's digest is recorded on the ledger once.
    Digest {
        /// Any date in the week (`2026-11-24`) or an ISO week (`2026-W48`); default: the last
        /// finished week.
        #[arg(long, value_name = "DATE", conflicts_with = "list")]
        week: Option<String>,
        /// List the recorded digests (week, who recorded it, when) instead.
        #[arg(long)]
        list: bool,
    },
    /// Run workers (gatekeeper, router, canary monitor, feedback collector, scheduler) in the
    /// foreground until SIGTERM/Ctrl-C.
    Worker(WorkerArgs),
    /// Publish simulated outcome traffic for a prompt, routed by its current routing table.
    Sim(SimArgs),
    /// Measure pledger against its performance targets on a private throwaway server.
    Bench(BenchArgs),
    /// Regression cases: production failures (and reviewers' examples) the next release's eval
    /// bundle must cover.
    #[command(subcommand)]
    Regressions(RegressionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Add a webhook (admin only). It hears of events recorded from now on.
    Add {
        /// Its name: lower-case letters, digits and `-` (e.g. `oncall-slack`).
        id: String,
        /// `https://…`, or `env:NAME` to read the URL from the notifier's environment variable
        /// NAME (keeps a secret URL, such as a Slack webhook's, off the ledger).
        #[arg(long)]
        url: String,
        /// Comma-separated: gate_failed, frozen, rolled_back, completed, notice, or all.
        #[arg(long, default_value = "all")]
        events: String,
        /// The body: json (the notification with its ledger event) or slack (a Slack message).
        #[arg(long, value_enum, default_value = "json")]
        format: NotifyFormat,
        /// The notifier's environment variable holding a shared secret: requests then carry
        /// `X-Pledger-Signature: sha256=<HMAC-SHA256 of the body>`.
        #[arg(long, value_name = "NAME")]
        secret_env: Option<String>,
    },
    /// The webhooks in force.
    List,
    /// Remove a webhook (admin only); what is queued for it is dropped.
    Remove { id: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NotifyFormat {
    Json,
    Slack,
}

#[derive(Debug, Subcommand)]
pub enum RegressionsCommand {
    /// File a case by hand (the example is redacted like production feedback).
    Add {
        prompt: String,
        /// unexpected_refusal, wrong_tool_sequence, hallucinated_field or excessive_verbosity.
        #[arg(long)]
        tag: String,
        #[arg(long, value_name = "FILE")]
        example_file: PathBuf,
        /// The version the failure was seen on (default: the stable version).
        #[arg(long)]
        version: Option<String>,
    },
    /// Open cases (with --all, closed ones too).
    List {
        prompt: String,
        #[arg(long)]
        all: bool,
    },
    /// Open cases as JSONL, one case a line, ready to add to an eval suite.
    Export {
        prompt: String,
        /// Only cases first seen after this release was proposed.
        #[arg(long, value_name = "RELEASE")]
        since: Option<String>,
    },
    /// Retire a case.
    Close {
        case: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Shrink every workload (a smoke test; every section is still measured and printed).
    #[arg(long)]
    pub quick: bool,
    /// Also write the report as Markdown to this file (e.g. docs/PERFORMANCE.md); only for a
    /// run of every section.
    #[arg(long, value_name = "PATH", conflicts_with = "section")]
    pub write: Option<PathBuf>,
    /// Run only this section (repeatable; section 10 also runs 2, 3 and 7, its baselines).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=14))]
    pub section: Vec<u8>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    pub prompt: String,
    /// A traffic spec (TOML): seed, rates per arm, segments, an injected regression.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Requests to simulate.
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,
    /// Seed (overrides the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Outcomes per published message.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Inject a candidate regression after this many candidate requests.
    #[arg(long, value_name = "N")]
    pub regression_after: Option<u64>,
    /// The rate that regresses: fallback_rate, escalation_rate, manual_correction_rate, refusal_rate.
    #[arg(long, default_value = "escalation_rate")]
    pub regression_metric: String,
    /// The candidate's rate of that metric once the regression starts.
    #[arg(long, default_value_t = 0.10)]
    pub regression_rate: f64,
    /// Request attributes of the traffic's segments, `K=V,K=V:WEIGHT`, repeatable
    /// (default: the spec's segments, else one segment without attributes).
    #[arg(long = "segment", value_name = "ATTRS:WEIGHT")]
    pub segments: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum WorkerChoice {
    Gatekeeper,
    Router,
    Canary,
    Feedback,
    Scheduler,
    Notary,
    /// Delivers notifications to the webhooks `pledger notify` configures.
    Notifier,
    All,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(value_enum)]
    pub worker: WorkerChoice,
    /// Where the workers keep their sled stores (default: <data dir>/workers).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Replica name: each replica has its own store and durable consumers.
    #[arg(long, default_value = "0")]
    pub replica: String,
    /// The notary: sign a checkpoint at least this often (seconds) while the ledger grows.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub checkpoint_every: u64,
    /// The notary: sign a checkpoint after at most this many new ledger messages.
    #[arg(long, default_value_t = 1000, value_name = "MESSAGES")]
    pub checkpoint_events: u64,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464): releases,
    /// rollouts, guardrails, decisions, consumer lag and dead letters.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the server keeps its store (default: $PLEDGER_DATA_DIR, else ~/.local/share/pledger).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = pledger_infra::server::DEFAULT_LISTEN)]
    pub listen: String,
    /// Run only the server, without the workers (gatekeeper, router, canary monitor, feedback
    /// collector, scheduler).
    #[arg(long)]
    pub no_workers: bool,
    /// Serve Prometheus metrics of the workers on http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the release pages on http://ADDR/ (port 0: any free port; the ready line says
    /// which). Loopback only unless --ui-public.
    #[arg(long, value_name = "ADDR", default_value = crate::ui::DEFAULT_LISTEN)]
    pub ui: String,
    /// Do not serve the release pages.
    #[arg(long, conflicts_with = "ui_public")]
    pub no_ui: bool,
    /// Allow --ui on an address other than loopback: whoever reaches it reads every prompt,
    /// review and piece of evidence, without a login.
    #[arg(long)]
    pub ui_public: bool,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Address to serve on (port 0: any free port). Loopback only unless --ui-public.
    #[arg(long, value_name = "ADDR", default_value = crate::ui::DEFAULT_LISTEN)]
    pub listen: String,
    /// Allow --listen on an address other than loopback: whoever reaches it reads every
    /// prompt, review and piece of evidence, without a login.
    #[arg(long)]
    pub ui_public: bool,
}

#[derive(Debug, Subcommand)]
pub enum PromptCommand {
    /// Register a prompt under an owning team.
    Register {
        prompt: String,
        #[arg(long)]
        owner: String,
    },
    /// Publish an artifact file (TOML or JSON) as a version; prints the version id.
    Publish {
        prompt: String,
        artifact_file: PathBuf,
    },
    /// Declare the version already serving production as the stable version.
    Adopt {
        prompt: String,
        version: String,
        #[arg(long)]
        reason: String,
    },
    /// Set the prompt's gate policy from a TOML or JSON file (fields not given keep defaults).
    Policy {
        prompt: String,
        policy_file: PathBuf,
    },
    /// Show a prompt (its latest versions and releases), or one of its versions.
    Show {
        prompt: String,
        version: Option<String>,
        /// List every version and release, not only the latest ones.
        #[arg(long)]
        all: bool,
    },
    /// Field-level changes and a line diff of the instructions between two versions.
    Diff {
        prompt: String,
        from: String,
        to: String,
    },
    /// Every event of the prompt and its releases.
    History { prompt: String },
    /// Every registered prompt.
    List,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LayerArg {
    Product,
    Technical,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Propose a version as a release; prints the release id.
    Propose {
        prompt: String,
        version: String,
        #[arg(long)]
        rationale: String,
        #[arg(long = "expected-change", value_name = "TEXT")]
        expected_changes: Vec<String>,
    },
    /// Submit a product or technical review.
    Review {
        release: String,
        #[arg(long, value_enum)]
        layer: LayerArg,
        #[arg(
            long,
            conflicts_with = "request_changes",
            required_unless_present = "request_changes"
        )]
        approve: bool,
        #[arg(long)]
        request_changes: bool,
        #[arg(long)]
        note: Option<String>,
    },
    /// Attach an eval bundle (JSON) to a release, or build it from a promptfoo results file
    /// (`--promptfoo results.json --baseline LABEL --candidate LABEL`).
    AttachEval {
        release: String,
        /// The bundle file (JSON or TOML); not with --promptfoo.
        #[arg(required_unless_present = "promptfoo", conflicts_with = "promptfoo")]
        bundle_file: Option<PathBuf>,
        /// A promptfoo results file (`promptfoo eval -o results.json`, format 2 or 3) of a run
        /// with the baseline's and the candidate's prompt: the bundle is built from it with the
        /// release's versions (see `pledger eval from-promptfoo`).
        #[arg(long, value_name = "RESULTS", requires_all = ["baseline", "candidate"])]
        promptfoo: Option<PathBuf>,
        #[command(flatten)]
        mapping: PromptfooMapping,
    },
    /// Accept the latency or cost trade-off of the current bundle.
    AcceptTradeoff {
        release: String,
        #[arg(long)]
        reason: String,
    },
    /// Replace the release's candidate version (resets both reviews).
    Revise { release: String, version: String },
    /// Withdraw a proposal.
    Withdraw {
        release: String,
        #[arg(long)]
        reason: String,
    },
    /// Decide the gate on the current evidence (exit 6 if it fails).
    Gate { release: String },
    /// Show a release's state and history.
    Show { release: String },
    /// List releases of one prompt, or of every prompt: the open ones and the latest 10 ended
    /// (with --all, every one).
    List {
        prompt: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Attach a rollout plan (TOML) to a release.
    Plan { release: String, plan_file: PathBuf },
    /// Start the rollout at its first stage (inside a release window).
    Start {
        release: String,
        /// Start outside the release windows (needs --reason; recorded and shown in the digest).
        #[arg(long, requires = "reason")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move to the next stage.
    Advance {
        release: String,
        /// The stage to advance from (default: the current stage when the command starts).
        #[arg(long, value_name = "STAGE")]
        from: Option<String>,
        /// Advance over a readiness objection or outside the release windows (needs --reason).
        #[arg(long, requires = "reason")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop advancing; traffic stays where it is.
    Pause {
        release: String,
        #[arg(long, default_value = "paused by hand")]
        reason: String,
    },
    /// Resume a paused or frozen rollout.
    Resume { release: String },
    /// Freeze: route all traffic back to the stable version and wait for a person.
    Freeze {
        release: String,
        #[arg(long)]
        reason: String,
    },
    /// Make the candidate the stable version (from the last stage).
    Complete {
        release: String,
        /// Complete outside the release windows (needs --reason).
        #[arg(long, requires = "reason")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WindowsCommand {
    /// Set release windows from a TOML or JSON file: for one prompt, or (--global) for every
    /// prompt without its own.
    Set {
        /// The prompt (omit with --global).
        #[arg(required_unless_present = "global", conflicts_with = "global")]
        prompt: Option<String>,
        #[arg(long)]
        global: bool,
        /// The windows file (TOML, or JSON by its `.json` extension).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Remove a prompt's own windows (the global ones apply again), or (--global) the global ones.
    Clear {
        #[arg(required_unless_present = "global", conflicts_with = "global")]
        prompt: Option<String>,
        #[arg(long)]
        global: bool,
    },
    /// The windows that apply to a prompt (or the global ones), whether they are open now, and
    /// when they next open or close.
    Show { prompt: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Enrol an identity with its public key and roles (admin only).
    Add {
        name: String,
        /// Its OpenSSH ed25519 public key file.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "generate",
            conflicts_with = "generate"
        )]
        public_key: Option<PathBuf>,
        /// Generate its key into the local keyring (then `--as NAME` signs with it).
        #[arg(long)]
        generate: bool,
        /// A role, repeatable: admin, author, reviewer, ci, release-manager, oncall, worker,
        /// auditor.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
    },
    /// Replace an identity's keys with a new one; its old keys sign nothing after this (admin only).
    Rotate {
        name: String,
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "generate",
            conflicts_with = "generate"
        )]
        public_key: Option<PathBuf>,
        #[arg(long)]
        generate: bool,
    },
    /// Replace an identity's roles (admin only).
    Roles {
        name: String,
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
    },
    /// Revoke an identity: none of its keys signs anything after this (admin only).
    Revoke {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// The roster: identities, roles, keys, and the first event auditors pin.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Every event of a prompt and its releases, in ledger order.
    Log { prompt: String },
    /// Verify the whole ledger: the stream's configuration and gaps, every event's bytes,
    /// signature, key, chain, role and admissibility, and the checkpoints. Exit 0 clean,
    /// 7 integrity, 8 policy, 9 trust (the worst found).
    Verify {
        /// Show only findings about this prompt (every check still runs over the whole ledger).
        #[arg(long)]
        prompt: Option<String>,
        /// A checkpoint kept outside NATS (from `audit checkpoint --out`): the ledger must extend it.
        #[arg(long, value_name = "FILE")]
        trusted_checkpoint: Option<PathBuf>,
        /// The notary's verifier key (`name+keyid+base64`) to check the trusted checkpoint
        /// with, repeatable (default: the notary keys on the ledger's own roster).
        #[arg(long = "trusted-key", value_name = "VKEY")]
        trusted_keys: Vec<String>,
        /// Verify an evidence export (`audit export`) instead of a server; no NATS needed.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// The latest signed checkpoint of the ledger's Merkle tree, as a C2SP signed note.
    Checkpoint {
        /// Write the note to this file (keep it outside NATS).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// An inclusion proof of one event against the latest checkpoint.
    Prove { event_id: String },
    /// A prompt's state at a past moment: stable version, active release and stage, the
    /// routing table, open regression cases, the last gate decision and who made each step.
    Replay {
        prompt: String,
        /// An RFC 3339 UTC time (2026-11-24T14:03:00Z) or a ledger sequence number.
        #[arg(long)]
        at: String,
    },
    /// Which version a request was served at a past moment, and why.
    Resolve {
        prompt: String,
        /// An RFC 3339 UTC time or a ledger sequence number.
        #[arg(long)]
        at: String,
        /// Sticky unit key of the request.
        #[arg(long)]
        unit: Option<String>,
        /// Request attribute, repeatable: --attr user_kind=internal.
        #[arg(long = "attr", value_name = "K=V")]
        attrs: Vec<String>,
    },
    /// Write events, roster, checkpoints and proofs into one file that `audit verify --export`
    /// checks with no server.
    Export {
        /// Only this prompt's family (with the roster and fleet subjects).
        #[arg(long)]
        prompt: Option<String>,
        /// Only the family of this release's prompt.
        #[arg(long)]
        release: Option<String>,
        /// Only the families of prompts with an event at or after this RFC 3339 UTC time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The change-management record of one release: the change and its diff, proposal,
    /// reviews, gate evidence and decision, rollout steps, freezes and rollbacks, with each
    /// event's signature status.
    Report { release: String },
}

/// How a promptfoo run maps onto a bundle (docs/USER-GUIDE.md, "promptfoo").
#[derive(Debug, Args)]
pub struct PromptfooMapping {
    /// The label of the baseline's prompt in the run (`prompts[].label`).
    #[arg(long, value_name = "PROMPT_LABEL")]
    pub baseline: Option<String>,
    /// The label of the candidate's prompt in the run.
    #[arg(long, value_name = "PROMPT_LABEL")]
    pub candidate: Option<String>,
    /// Where a test's segment is: metadata.<key> or vars.<key>.
    #[arg(long, value_name = "PATH", default_value = "metadata.segment")]
    pub segment_by: String,
    /// Where a test's hard-negative category is: metadata.<key> or vars.<key>.
    #[arg(long, value_name = "PATH", default_value = "metadata.hard_negative")]
    pub hard_negative_by: String,
    /// The suite's name (default: the run's description, else `promptfoo`).
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Build an eval bundle from a promptfoo results file of a run with two prompts: pass
    /// rates per segment and hard-negative category, regressions (baseline passed, candidate
    /// failed), latency p50/p95, tokens and cost per request. The versions come from
    /// --release (read from the ledger) or --candidate-version and --baseline-version.
    FromPromptfoo {
        /// `promptfoo eval -o results.json` output (format version 2 or 3).
        results: PathBuf,
        #[command(flatten)]
        mapping: PromptfooMapping,
        /// The release the bundle is for: its candidate and baseline versions.
        #[arg(long, conflicts_with_all = ["candidate_version", "baseline_version"])]
        release: Option<String>,
        /// The candidate's version id (sha256:...), without --release.
        #[arg(long, requires = "baseline_version")]
        candidate_version: Option<String>,
        /// The baseline's version id, without --release.
        #[arg(long, requires = "candidate_version")]
        baseline_version: Option<String>,
        /// Write the bundle here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}
