//! Support for the end-to-end tests: the built `pledger` binary driven against a real
//! nats-server started per test (free port, temporary store, removed on drop).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub use pledger_infra::server::EphemeralServer;
use serde_json::Value;

/// The `pledger` binary of this workspace, built once per test process (a no-op when
/// `cargo test --workspace` already built it).
pub fn pledger_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/it-<hash> -> target/<profile>/pledger
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "pledger",
                "--bin",
                "pledger",
                "--manifest-path",
            ])
            .arg(&manifest);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the pledger binary failed");
        let bin = profile_dir.join("pledger");
        assert!(bin.is_file(), "no pledger binary at {}", bin.display());
        bin
    })
}

/// The result of one `pledger` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run::from_output(o)
    }
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// The JSON object printed with `--json`.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self:?}"))
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }
    /// Asserts a rejection by `rule` with exit code 3.
    #[track_caller]
    pub fn rejected(self, rule: &str) -> Run {
        assert_eq!(self.code, 3, "expected exit 3 for rule {rule}: {self:?}");
        assert!(
            self.stderr.contains(&format!("rule `{rule}`")),
            "expected rule `{rule}` in: {}",
            self.stderr
        );
        self
    }
}

/// A test world: a server, a roster, and a way to run pledger against it.
///
/// Every world has its own config dir (keyring) and `$HOME` under its temp dir: nothing
/// touches the user's. Its first admin is `admin`; any other actor a command names is
/// enrolled on first use with [`PERSON_ROLES`] and a key generated in this process, unless
/// the test enrolled it itself ([`World::enroll`]).
pub struct World {
    pub server: EphemeralServer,
    pub files: tempfile::TempDir,
    /// The clock file every command and worker of this world reads (`PLEDGER_CLOCK_FILE`),
    /// when the test controls time.
    clock: Option<PathBuf>,
    enrolled: RefCell<BTreeSet<String>>,
    workers_enrolled: RefCell<bool>,
}

/// The roles an actor gets when a test names it without enrolling it first.
pub const PERSON_ROLES: [&str; 6] = [
    "admin",
    "author",
    "reviewer",
    "ci",
    "release-manager",
    "oncall",
];

/// Generates an ed25519 key in this process and writes it (OpenSSH, with its `.pub`) as
/// `dir/name`. Returns the public key file.
pub fn write_key(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("key generation");
    key.set_comment(format!("test:{name}"));
    let path = dir.join(name);
    key.write_openssh_file(&path, ssh_key::LineEnding::LF)
        .unwrap();
    let public = path.with_extension("pub");
    std::fs::write(&public, key.public_key().to_openssh().unwrap()).unwrap();
    public
}

impl World {
    pub fn new() -> World {
        let server =
            EphemeralServer::start().expect("nats-server starts (run ops/install-nats-server.sh)");
        let w = World {
            server,
            files: tempfile::tempdir().unwrap(),
            clock: None,
            enrolled: RefCell::new(BTreeSet::new()),
            workers_enrolled: RefCell::new(false),
        };
        std::fs::create_dir_all(w.home()).unwrap();
        write_key(&w.keys_dir(), "admin");
        w.enrolled.borrow_mut().insert("admin".into());
        w.run("admin", &["init", "--admin", "admin"]).ok();
        w
    }

    /// The world's config dir (`PLEDGER_CONFIG_DIR`), whose `keys/` is the keyring.
    pub fn config_dir(&self) -> PathBuf {
        self.files.path().join("config")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.config_dir().join("keys")
    }

    /// The `$HOME` of every command of this world (empty: no `~/.ssh` key).
    pub fn home(&self) -> PathBuf {
        self.files.path().join("home")
    }

    /// Enrols `name` with `roles` (a key generated in this process, in the world's keyring),
    /// as `admin`. Returns the run of `pledger identity add`.
    pub fn enroll(&self, name: &str, roles: &[&str]) -> Run {
        let public = if self.keys_dir().join(name).is_file() {
            self.keys_dir().join(name).with_extension("pub")
        } else {
            write_key(&self.keys_dir(), name)
        };
        let public = public.display().to_string();
        let mut args = vec!["identity", "add", name, "--public-key", &public];
        for r in roles {
            args.extend(["--role", r]);
        }
        let run = self.run("admin", &args);
        if run.code == 0 {
            self.enrolled.borrow_mut().insert(name.to_string());
        }
        run
    }

    /// Enrols every worker identity with the `worker` role, its key under the workers' data dir.
    pub fn enroll_workers(&self) {
        if std::mem::replace(&mut *self.workers_enrolled.borrow_mut(), true) {
            return;
        }
        self.enroll_workers_in(&self.files.path().join("workers"));
    }

    /// Enrols the worker identities whose keys are under `data_dir/keys` (generated there
    /// when missing), as `pledger up` does for its own data dir.
    pub fn enroll_workers_in(&self, data_dir: &Path) {
        let dir = data_dir.join("keys");
        for kind in pledger_infra::worker::WorkerKind::ALL {
            let name = pledger_infra::worker::WorkerContext::identity_name(kind);
            let public = if dir.join(name).is_file() {
                dir.join(name).with_extension("pub")
            } else {
                write_key(&dir, name)
            };
            self.run(
                "admin",
                &[
                    "identity",
                    "add",
                    name,
                    "--public-key",
                    &public.display().to_string(),
                    "--role",
                    kind.role().name(),
                ],
            )
            .ok();
        }
    }

    /// A world whose commands and workers believe it is `at` (RFC 3339 UTC) until
    /// [`World::set_clock`] moves the time.
    pub fn with_clock(at: &str) -> World {
        let mut w = World::new();
        let path = w.files.path().join("clock");
        w.clock = Some(path);
        w.set_clock(at);
        w
    }

    /// Moves this world's clock (atomically: readers see the old time or the new one).
    pub fn set_clock(&self, at: &str) {
        let path = self.clock.as_ref().expect("a world made with_clock");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, at).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    pub fn command(&self, actor: &str, args: &[&str]) -> Command {
        if !self.enrolled.borrow().contains(actor) {
            // A failure here (a stopped server) shows in the command itself.
            self.enroll(actor, &PERSON_ROLES);
        }
        let mut with_actor = vec!["--as", actor];
        with_actor.extend_from_slice(args);
        self.bare_command(&with_actor)
    }

    /// A command with no `--as` (and no key selected): what the environment alone gives.
    pub fn bare_command(&self, args: &[&str]) -> Command {
        self.bare_command_via(&self.server.url(), args)
    }

    /// [`World::bare_command`] against another server (`--nats url`).
    pub fn bare_command_via(&self, url: &str, args: &[&str]) -> Command {
        let mut c = Command::new(pledger_bin());
        c.arg("--nats").arg(url).args(args);
        c.env_remove("PLEDGER_ACTOR")
            .env_remove("PLEDGER_NATS_URL")
            .env_remove("PLEDGER_KEY")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("PLEDGER_CACHE_DIR")
            .env("PLEDGER_CONFIG_DIR", self.config_dir())
            .env("HOME", self.home())
            .stdin(Stdio::null());
        if let Some(clock) = &self.clock {
            c.env("PLEDGER_CLOCK_FILE", clock);
        }
        c
    }

    pub fn run(&self, actor: &str, args: &[&str]) -> Run {
        Run::from_output(self.command(actor, args).output().expect("pledger runs"))
    }

    /// [`World::run`] against another server: this world's keys and config, `--nats url`.
    pub fn run_via(&self, url: &str, actor: &str, args: &[&str]) -> Run {
        let mut with_actor = vec!["--as", actor];
        with_actor.extend_from_slice(args);
        let mut c = self.bare_command_via(url, &with_actor);
        Run::from_output(c.output().expect("pledger runs"))
    }

    /// Runs with `--json` and returns the parsed object of a successful run.
    #[track_caller]
    pub fn json(&self, actor: &str, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(actor, &all).ok().json()
    }

    /// Publishes `payload` on `subject` as any NATS client may (no checks, no signature), and
    /// waits until the stream has stored it.
    pub fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = async_nats::connect(self.server.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            js.publish(subject.to_string(), payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// How many events the prompt's family holds (the ledger's view, via `audit log`).
    pub fn event_count(&self, prompt: &str) -> usize {
        self.json("auditor", &["audit", "log", prompt])["events"]
            .as_array()
            .unwrap()
            .len()
    }

    /// How many events of `kind` the prompt's family holds.
    pub fn count(&self, prompt: &str, kind: &str) -> usize {
        self.kinds(prompt).iter().filter(|k| *k == kind).count()
    }

    /// Every event kind of the prompt's family, in order.
    pub fn kinds(&self, prompt: &str) -> Vec<String> {
        self.json("auditor", &["audit", "log", prompt])["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"]["kind"].as_str().unwrap().to_string())
            .collect()
    }
}

impl World {
    /// Starts `pledger worker <kind>` as a child process (its store under this world's files,
    /// signing with the worker identities' keys there).
    pub fn worker(&self, kind: &str, replica: &str) -> WorkerProcess {
        self.worker_with_args(kind, replica, &[])
    }

    /// [`World::worker`] with more arguments for `pledger worker`.
    pub fn worker_with_args(&self, kind: &str, replica: &str, extra: &[&str]) -> WorkerProcess {
        self.enroll_workers();
        let mut p = self.worker_process(kind, replica, &self.files.path().join("workers"));
        p.extra = extra.iter().map(|a| a.to_string()).collect();
        p.start();
        p
    }

    /// [`World::worker`] with these environment variables set for the worker's process.
    pub fn worker_with_env(
        &self,
        kind: &str,
        replica: &str,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        self.enroll_workers();
        let mut p = self.worker_process(kind, replica, &self.files.path().join("workers"));
        p.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.start();
        p
    }

    /// Starts `pledger worker <kind>` with its stores (and keys) under `data_dir`, which may
    /// have served another world's ledger before. The keys there must be enrolled here
    /// ([`World::enroll_workers_in`]).
    pub fn worker_with_store(&self, kind: &str, replica: &str, data_dir: &Path) -> WorkerProcess {
        let mut p = self.worker_process(kind, replica, data_dir);
        p.start();
        p
    }

    fn worker_process(&self, kind: &str, replica: &str, data_dir: &Path) -> WorkerProcess {
        WorkerProcess {
            url: self.server.url(),
            kind: kind.to_string(),
            replica: replica.to_string(),
            data_dir: data_dir.to_path_buf(),
            clock: self.clock.clone(),
            extra: Vec::new(),
            env: Vec::new(),
            child: None,
        }
    }

    /// Polls `check` until it returns `Some` or `limit` passes. For conditions that only the
    /// ledger or a worker's published status can show (there is no event to await from a
    /// child process); each poll is a real observation, never a fixed wait.
    /// Like [`World::wait_for`], but returns `None` on time-out instead of failing.
    pub fn try_wait_for<T>(
        &self,
        limit: std::time::Duration,
        check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        try_wait_until(limit, check)
    }

    #[track_caller]
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: std::time::Duration,
        check: impl FnMut() -> Option<T>,
    ) -> T {
        wait_until(what, limit, check)
    }
}

/// [`World::wait_for`] for tests without a [`World`] (a cluster): polls `check` until it
/// returns `Some`, failing after `limit`.
#[track_caller]
pub fn wait_until<T>(
    what: &str,
    limit: std::time::Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    try_wait_until(limit, check).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// [`wait_until`] returning `None` on time-out instead of failing.
pub fn try_wait_until<T>(
    limit: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A worker child process; stopped with SIGTERM on drop.
pub struct WorkerProcess {
    url: String,
    kind: String,
    replica: String,
    data_dir: PathBuf,
    clock: Option<PathBuf>,
    /// More arguments for `pledger worker`.
    extra: Vec<String>,
    /// More environment variables for its process.
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

impl WorkerProcess {
    /// Starts `pledger worker <kind>` against `url` (one server, or a cluster's nodes
    /// comma-separated) with its stores and keys under `data_dir`, outside any [`World`]
    /// (the keys there must be enrolled on that ledger).
    pub fn spawn(url: &str, kind: &str, replica: &str, data_dir: &Path) -> WorkerProcess {
        let mut p = WorkerProcess {
            url: url.to_string(),
            kind: kind.to_string(),
            replica: replica.to_string(),
            data_dir: data_dir.to_path_buf(),
            clock: None,
            extra: Vec::new(),
            env: Vec::new(),
            child: None,
        };
        p.start();
        p
    }

    /// Has the worker exited on its own? Its exit status if so (`None` while it runs, or when
    /// the test stopped it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The worker's log so far (empty when it has none).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new(pledger_bin());
        if let Some(clock) = &self.clock {
            command.env("PLEDGER_CLOCK_FILE", clock);
        }
        command
            .env_remove("PLEDGER_KEY")
            .env_remove("PLEDGER_ACTOR")
            .env("PLEDGER_CONFIG_DIR", self.data_dir.join("no-config"))
            .env("HOME", self.data_dir.join("no-home"));
        let child = command
            .args([
                "--nats",
                &self.url,
                "worker",
                &self.kind,
                "--replica",
                &self.replica,
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PLEDGER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log())
            .spawn()
            .expect("pledger worker starts");
        self.child = Some(child);
    }

    /// The worker's log file (appended across restarts), for a failing test to show.
    fn log(&self) -> std::fs::File {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap()
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir
            .join(format!("{}-{}.log", self.kind, self.replica))
    }

    /// SIGKILL: no clean shutdown, no last commit.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

pub fn artifact_toml(instructions: &str, temperature: f64) -> String {
    format!(
        "instructions = {instructions:?}\nknown_limitations = [\"none known\"]\n\n[model]\nfamily = \"gpt-4o\"\ntemperature = {temperature:?}\n\n[tools]\nschema_version = \"none\"\n"
    )
}

pub fn bundle_json(candidate: &str, baseline: &str, cost_increase: f64) -> String {
    serde_json::json!({
        "candidate": candidate,
        "baseline": baseline,
        "suite": "e2e",
        "segments": [
            { "name": "billing", "cases": 100, "candidate_pass_rate": 0.95, "baseline_pass_rate": 0.94 }
        ],
        "hard_negatives": {
            "ambiguous": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "adversarial": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "long_context": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 },
            "partial_tool_failure": { "cases": 10, "candidate_pass_rate": 0.9, "baseline_pass_rate": 0.9 }
        },
        "regressions": [],
        "latency_ms": { "candidate_p50": 100, "baseline_p50": 100, "candidate_p95": 200, "baseline_p95": 200 },
        "cost_per_request_usd": { "candidate": 0.001 * (1.0 + cost_increase), "baseline": 0.001 },
        "expected_changes": []
    })
    .to_string()
}

pub const PLAN: &str = r#"
[[stages]]
name = "internal"
match = { user_kind = "internal" }
percent = 100

[[stages]]
name = "eu"
match = { geo = "eu" }
percent = 50

[[stages]]
name = "everyone"
percent = 100

[guardrails]
fallback_rate = { max_rate = 0.05 }

[rollback]
criteria = "fallback rate over 5%"
automatic = true
"#;

/// The outcome subject of `prompt` (`pledger_core::names::outcome_subject`).
pub fn outcomes_of(prompt: &str) -> String {
    pledger_core::names::outcome_subject(
        &pledger_core::PromptName::parse(prompt).expect("a prompt name"),
    )
}

/// Runs `f` to completion on a fresh single-threaded Tokio runtime (for a test's own async
/// client calls).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A service's routing resolver on `world`'s server, and the one-thread runtime that drives its
/// watch (keep both alive while resolving).
pub fn service_resolver(world: &World) -> (tokio::runtime::Runtime, pledger_client::Resolver) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let resolver = rt.block_on(async {
        let client = pledger_client::connect(&world.server.url()).await.unwrap();
        pledger_client::Resolver::start(client, pledger_client::ResolverOptions::default())
            .await
            .unwrap()
    });
    (rt, resolver)
}

impl World {
    /// `pledger audit verify` on this world's ledger reports it clean (exit 0, no finding).
    #[track_caller]
    pub fn assert_audit_clean(&self) {
        let run = self.run("auditor", &["--json", "audit", "verify"]);
        assert_eq!(run.code, 0, "audit verify: {}{}", run.stdout, run.stderr);
        let report = run.json();
        assert_eq!(report["clean"], true, "{report}");
        assert!(
            report["summary"]["accepted"].as_u64().unwrap() > 0,
            "{report}"
        );
    }
}
