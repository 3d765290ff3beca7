//! The context every command shares: the `App` (server URL, signer selection, correlation
//! id), its connection to the ledger and the routing table, the dispatch from the command tree
//! to the command modules (`commands/`, `identity.rs`, `schedule.rs`, `sim.rs`), and the
//! helpers they share: reading input files, ledger look-ups and a report's JSON.

use std::path::Path;

use pledger_core::decide::Rule;
use pledger_core::routing::routing_table_for;
use pledger_core::state::{PromptState, ReleaseState};
use pledger_core::{Command, FileFormat, PromptName, Rejection, ReleaseId};
use pledger_infra::ledger::new_correlation_id;
use pledger_infra::{Executed, Family, Ledger, Recorded, RoutingStore, RoutingWrite};
use serde_json::{json, Value};

use crate::cli::{Cli, TopCommand};
use crate::failure::{Exit, Failure};

/// What a command prints: text for people, JSON for scripts, and its exit code.
pub struct Report {
    pub text: String,
    pub json: Value,
    pub exit: Exit,
}

impl Report {
    pub(crate) fn ok(text: impl Into<String>, json: Value) -> Report {
        Report {
            text: text.into(),
            json,
            exit: Exit::Success,
        }
    }
}

/// Largest input file read at all (each kind has its own, smaller limit too).
const MAX_INPUT_FILE: u64 = 4 * 1024 * 1024;

pub struct App {
    pub url: String,
    /// `--as`: which local key to sign with (the identity recorded is the key's owner).
    pub actor: Option<String>,
    /// `--key`: the private key to sign with.
    pub key: Option<std::path::PathBuf>,
    /// The config dir holding the keyring.
    pub config_dir: std::path::PathBuf,
    /// The cache dir holding family snapshots (`--cache-dir`).
    pub cache_dir: std::path::PathBuf,
    pub correlation_id: String,
}

pub(crate) struct Conn {
    pub(crate) ledger: Ledger,
    pub(crate) routing: RoutingStore,
}

impl App {
    pub fn from_cli(cli: &Cli) -> App {
        App {
            url: cli.nats.clone(),
            actor: cli.actor.clone(),
            key: cli.key.clone(),
            config_dir: cli
                .config_dir
                .clone()
                .unwrap_or_else(crate::keys::default_config_dir),
            cache_dir: cli
                .cache_dir
                .clone()
                .unwrap_or_else(|| crate::keys::default_cache_dir(cli.config_dir.as_deref())),
            correlation_id: std::env::var("PLEDGER_CORRELATION_ID")
                .unwrap_or_else(|_| new_correlation_id()),
        }
    }

    /// Connects and looks the streams and buckets up (only `init` creates them, so an ordinary
    /// command works under NATS permissions that forbid stream changes).
    pub(crate) async fn connect(&self) -> Result<Conn, Failure> {
        let client = pledger_infra::connect(&self.url).await?;
        Ledger::check_server_version(&client)?;
        let snapshots = pledger_infra::snapshot::SnapshotDir::new(
            self.cache_dir.join(pledger_core::names::SNAPSHOT_DIR),
        );
        let ledger = Ledger::new(client).with_snapshots(std::sync::Arc::new(snapshots));
        let routing = RoutingStore::open(ledger.jetstream()).await?;
        Ok(Conn { ledger, routing })
    }

    pub(crate) fn keyring(&self) -> crate::keys::Keyring {
        crate::keys::Keyring::in_config_dir(&self.config_dir)
    }

    /// The key this command signs with (`--key`, the keyring, `~/.ssh/id_ed25519`).
    pub(crate) fn signer(&self) -> Result<crate::keys::CliSigner, Failure> {
        crate::keys::select_signer(self.key.as_deref(), self.actor.as_deref(), &self.keyring())
    }

    pub async fn run(&self, command: TopCommand) -> Result<Report, Failure> {
        match command {
            TopCommand::Init { admin, replicas } => {
                self.init(admin.as_deref(), replicas.map(usize::from)).await
            }
            TopCommand::Identity(c) => self.identity(c).await,
            TopCommand::Sim(args) => crate::sim::run(&self.url, &args).await,
            TopCommand::Regressions(c) => self.regressions(c).await,
            TopCommand::Windows(c) => self.windows(c).await,
            TopCommand::Notify(c) => self.notify(c).await,
            TopCommand::Digest { week, list: false } => self.digest(week).await,
            TopCommand::Digest { list: true, .. } => self.digest_list().await,
            TopCommand::Up(_)
            | TopCommand::Ui(_)
            | TopCommand::Demo
            | TopCommand::Worker(_)
            | TopCommand::Bench(_) => {
                unreachable!("handled in main")
            }
            TopCommand::Prompt(c) => self.prompt(c).await,
            TopCommand::Release(c) => self.release(c).await,
            TopCommand::Rollout(c) => self.rollout(c).await,
            TopCommand::Rollback {
                prompt,
                release,
                reason,
            } => self.rollback(prompt, release, reason).await,
            TopCommand::Resolve {
                prompt,
                unit,
                attrs,
            } => self.resolve(&prompt, unit.as_deref(), &attrs).await,
            TopCommand::Audit(c) => self.audit(c).await,
            TopCommand::Eval(c) => self.eval(c).await,
        }
    }

    pub(crate) async fn exec<F>(
        &self,
        conn: &Conn,
        prompt: &PromptName,
        make: F,
    ) -> Result<Executed, Failure>
    where
        F: Fn(&PromptState) -> Result<Command, Rejection>,
    {
        let signer = self.signer()?;
        Ok(conn
            .ledger
            .execute(prompt, &signer, &self.correlation_id, make)
            .await?)
    }

    /// Writes the routing table derived from the state the command left.
    pub(crate) async fn publish_routing(
        &self,
        conn: &Conn,
        done: &Executed,
    ) -> Result<RoutingWrite, Failure> {
        let table = routing_table_for(&done.state, done.last_sequence);
        Ok(conn.routing.publish(&table).await?)
    }
}

pub(crate) fn routing_note(w: RoutingWrite) -> String {
    match w {
        RoutingWrite::Written(rev) => format!("\nrouting table updated (revision {rev})"),
        RoutingWrite::AlreadyCurrent => String::new(),
    }
}

/// The family's ignored messages (those on `subject` only, when given).
pub(crate) fn ignored_of<'a>(
    family: &'a Family,
    subject: Option<&'a str>,
) -> impl Iterator<Item = &'a pledger_core::verify::Finding> + 'a {
    let prefix = pledger_infra::ledger::family_filter(&family.state.name);
    // What a snapshot the read resumed from had found ignored, then what the read found.
    let before = family.resumed_from.iter().flat_map(|s| s.ignored.iter());
    before
        .chain(family.ignored.iter().map(|i| &i.finding))
        .filter(move |f| match subject {
            Some(s) => f.subject == s,
            None => f.subject.starts_with(prefix.trim_end_matches('>')),
        })
}

pub(crate) fn ignored_json(family: &Family, subject: Option<&str>) -> Value {
    json!(ignored_of(family, subject).collect::<Vec<_>>())
}

/// "N events ignored" and where to look, for `prompt show` and `release show`.
pub(crate) fn ignored_note(family: &Family, subject: Option<&str>) -> String {
    let found: Vec<_> = ignored_of(family, subject).collect();
    if found.is_empty() {
        return String::new();
    }
    let at: Vec<String> = found.iter().map(|f| f.sequence.to_string()).collect();
    format!(
        "\n{} ledger event(s) ignored: they failed verification (sequence {}); `pledger audit log {}` lists them with the reason\n",
        found.len(),
        at.join(", "),
        family.state.name
    )
}

pub(crate) fn recorded_entry(r: &Recorded) -> Value {
    json!({ "sequence": r.sequence, "subject": r.subject, "event": r.envelope })
}

pub(crate) fn recorded_json(recorded: &[Recorded]) -> Value {
    Value::Array(recorded.iter().map(|r| json!({ "sequence": r.sequence, "kind": r.envelope.kind(), "event_id": r.envelope.event_id })).collect())
}

pub(crate) fn unknown_prompt(prompt: &PromptName) -> Failure {
    Rejection {
        rule: Rule::UnknownPrompt,
        message: format!("prompt `{prompt}` is not registered (run `pledger prompt register {prompt} --owner <TEAM>`)"),
    }
    .into()
}

pub(crate) fn registered(family: Family) -> Result<Family, Failure> {
    if family.state.is_registered() {
        Ok(family)
    } else {
        Err(unknown_prompt(&family.state.name))
    }
}

pub(crate) fn known_release<'a>(
    state: &'a PromptState,
    release: &ReleaseId,
) -> Result<std::borrow::Cow<'a, ReleaseState>, Failure> {
    state.release(release).ok_or_else(|| {
        Rejection {
            rule: Rule::UnknownRelease,
            message: format!("there is no release {release}"),
        }
        .into()
    })
}

pub(crate) fn format_of(path: &Path) -> FileFormat {
    FileFormat::from_path(&path.to_string_lossy())
}

/// Reads an input file, refusing huge ones before reading them.
pub(crate) fn read_input(path: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", path.display())))?;
    if meta.len() > MAX_INPUT_FILE {
        return Err(Failure::usage(format!(
            "{}: {} bytes is over the input limit of {MAX_INPUT_FILE} bytes",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "{}: cannot read as UTF-8 text: {e}",
            path.display()
        ))
    })
}
