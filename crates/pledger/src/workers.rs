//! `pledger worker ...` and the workers inside `pledger up`.

use std::path::Path;
use std::sync::Arc;

use pledger_infra::worker::{gatekeeper, router, WorkerContext, WorkerKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::{WorkerArgs, WorkerChoice};
use crate::failure::Failure;

pub fn kinds(choice: WorkerChoice) -> Vec<WorkerKind> {
    match choice {
        WorkerChoice::Gatekeeper => vec![WorkerKind::Gatekeeper],
        WorkerChoice::Router => vec![WorkerKind::Router],
        WorkerChoice::Canary => vec![WorkerKind::Canary],
        WorkerChoice::Feedback => vec![WorkerKind::Feedback],
        WorkerChoice::Scheduler => vec![WorkerKind::Scheduler],
        WorkerChoice::Notary => vec![WorkerKind::Notary],
        WorkerChoice::Notifier => vec![WorkerKind::Notifier],
        WorkerChoice::All => WorkerKind::ALL.to_vec(),
    }
}

/// The keyring of the workers' keys: `<workers data dir>/keys/<identity>`.
pub fn worker_keyring(data_dir: &Path) -> crate::keys::Keyring {
    crate::keys::Keyring::at(&data_dir.join("keys"))
}

/// The key a worker signs with: `--key`/`PLEDGER_KEY` when given (one identity for every
/// worker of the process), else its own key in the workers' keyring.
pub fn worker_signer(
    kind: WorkerKind,
    data_dir: &Path,
    key: Option<&Path>,
) -> Result<Arc<ssh_key::PrivateKey>, Failure> {
    let path = match key {
        Some(k) => k.to_path_buf(),
        None => {
            let keyring = worker_keyring(data_dir);
            let name = WorkerContext::identity_name(kind);
            if !keyring.has(name) {
                return Err(Failure::usage(format!(
                    "{}: no key for the {} worker at {} (pass --key, or let `pledger up` create and enrol one)",
                    kind.name(),
                    name,
                    keyring.path(name).display()
                )));
            }
            keyring.path(name)
        }
    };
    Ok(Arc::new(crate::keys::load_private_key(&path)?))
}

/// Starts the workers as supervised tasks; they stop when `shutdown` turns true. Each is
/// opened here first, so that a worker that cannot start at all (a key not enrolled, no
/// server) fails the command; after that a failure, a panic or a gap in delivery restarts it
/// with backoff.
pub async fn spawn(
    kinds: &[WorkerKind],
    url: &str,
    data_dir: &Path,
    key: Option<&Path>,
    replica: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinSet<(WorkerKind, Result<(), String>)>, Failure> {
    let mut set = JoinSet::new();
    for &kind in kinds {
        let ctx = open(kind, url, data_dir, key, replica).await?;
        spawn_supervised(
            &mut set,
            kind,
            url,
            data_dir,
            key,
            replica,
            shutdown.clone(),
            Some(ctx),
        );
    }
    Ok(set)
}

/// Starts one supervised worker task in `set`: run until shutdown (from `first` when the
/// caller opened it already, else opened here), and opened and run again after a failure, a
/// panic or a stop on its own, with backoff ([`pledger_infra::worker::supervise`]). The task
/// ends only at shutdown.
#[allow(clippy::too_many_arguments)]
pub fn spawn_supervised(
    set: &mut JoinSet<(WorkerKind, Result<(), String>)>,
    kind: WorkerKind,
    url: &str,
    data_dir: &Path,
    key: Option<&Path>,
    replica: &str,
    shutdown: watch::Receiver<bool>,
    first: Option<WorkerContext>,
) {
    let (url, data_dir, replica) = (url.to_string(), data_dir.to_path_buf(), replica.to_string());
    let key = key.map(Path::to_path_buf);
    let first = Arc::new(std::sync::Mutex::new(first));
    let rx = shutdown.clone();
    set.spawn(async move {
        let start = move || {
            let (url, data_dir, key, replica, rx) = (
                url.clone(),
                data_dir.clone(),
                key.clone(),
                replica.clone(),
                rx.clone(),
            );
            let opened = first
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            async move {
                let ctx = match opened {
                    Some(ctx) => ctx,
                    None => open(kind, &url, &data_dir, key.as_deref(), &replica)
                        .await
                        .map_err(|e| e.message)?,
                };
                run_worker(kind, ctx, rx).await
            }
        };
        pledger_infra::worker::supervise::supervise(kind, shutdown, start).await;
        (kind, Ok(()))
    });
}

/// Serves the process's metrics on `addr` (`--metrics`) until `shutdown`, with the consumer
/// lag of `kinds` (replica `replica`).
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    url: &str,
    kinds: &[WorkerKind],
    replica: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    use pledger_core::names::{durable_name, LEDGER_STREAM, OUTCOMES_STREAM};
    let client = pledger_infra::connect(url).await?;
    let consumers = kinds
        .iter()
        .flat_map(|k| {
            [LEDGER_STREAM, OUTCOMES_STREAM].map(|stream| {
                (
                    k.name().to_string(),
                    replica.to_string(),
                    stream.to_string(),
                    durable_name(k.name(), replica, stream),
                )
            })
        })
        .collect();
    pledger_infra::metrics::serve(
        addr,
        async_nats::jetstream::new(client),
        consumers,
        shutdown,
    )
    .await
    .map_err(|e| Failure::usage(format!("--metrics {addr}: {e}")))
}

async fn open(
    kind: WorkerKind,
    url: &str,
    data_dir: &Path,
    key: Option<&Path>,
    replica: &str,
) -> Result<WorkerContext, Failure> {
    let signer = worker_signer(kind, data_dir, key)?;
    let client = pledger_infra::connect(url).await?;
    WorkerContext::open(kind, replica, client, data_dir, signer)
        .await
        .map_err(|e| Failure::other(format!("{}: {e}", kind.name())))
}

async fn run_worker(
    kind: WorkerKind,
    ctx: WorkerContext,
    rx: watch::Receiver<bool>,
) -> Result<(), String> {
    let result = match kind {
        WorkerKind::Gatekeeper => gatekeeper::run(ctx, rx).await,
        WorkerKind::Router => router::run(ctx, rx).await,
        WorkerKind::Canary => pledger_infra::worker::canary::run(ctx, rx).await,
        WorkerKind::Feedback => pledger_infra::worker::feedback::run(ctx, rx).await,
        WorkerKind::Scheduler => pledger_infra::worker::scheduler::run(ctx, rx).await,
        WorkerKind::Notary => {
            let config = NOTARY.get().cloned().unwrap_or_default();
            pledger_infra::worker::notary::run_with(ctx, rx, config).await
        }
        WorkerKind::Notifier => pledger_infra::worker::notifier::run(ctx, rx).await,
    };
    result.map_err(|e| format!("{}: {e}", kind.name()))
}

/// Ctrl-C and SIGTERM, listened for from the moment this is created (so a signal that
/// arrives while a command is still starting up is not lost).
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, Failure> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| {
            signal(kind).map_err(|e| Failure::other(format!("cannot listen for signals: {e}")))
        };
        Ok(Signals {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next Ctrl-C or SIGTERM; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupt",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// `pledger worker <KIND|all>`.
/// The notary's pacing in this process (`pledger worker --checkpoint-every/--checkpoint-events`;
/// `pledger up` keeps the defaults).
static NOTARY: std::sync::OnceLock<pledger_core::workers::notary::NotaryConfig> =
    std::sync::OnceLock::new();

pub async fn run(url: &str, key: Option<&Path>, args: &WorkerArgs) -> Result<(), Failure> {
    if args.checkpoint_every == 0 || args.checkpoint_events == 0 {
        return Err(Failure::usage(
            "--checkpoint-every and --checkpoint-events must be at least 1",
        ));
    }
    let _ = NOTARY.set(pledger_core::workers::notary::NotaryConfig {
        every_events: args.checkpoint_events,
        every_millis: (args.checkpoint_every.min(i64::MAX as u64 / 1000) * 1000) as i64,
    });
    let mut signals = Signals::install()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| crate::up::default_data_dir().join("workers"));
    let (tx, rx) = watch::channel(false);
    let kinds = kinds(args.worker);
    let mut set = spawn(&kinds, url, &data_dir, key, &args.replica, rx.clone()).await?;
    let metrics = match args.metrics {
        Some(addr) => Some(serve_metrics(addr, url, &kinds, &args.replica, rx).await?),
        None => None,
    };
    if let Some(addr) = args.metrics {
        eprintln!("pledger worker: metrics at http://{addr}/metrics");
    }
    eprintln!(
        "pledger worker: running {} (replica {}, stores in {}); Ctrl-C or SIGTERM stops",
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.replica,
        data_dir.display()
    );
    let failure = tokio::select! {
        reason = signals.recv() => { eprintln!("pledger worker: {reason}: stopping"); None }
        Some(done) = set.join_next() => Some(match done {
            Ok((_, Ok(()))) => "a worker stopped on its own".to_string(),
            Ok((_, Err(e))) => e,
            Err(e) => e.to_string(),
        }),
    };
    let _ = tx.send(true);
    while let Some(done) = set.join_next().await {
        if let Ok((_, Err(e))) = done {
            eprintln!("pledger worker: {e}");
        }
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    match failure {
        None => {
            eprintln!("pledger worker: stopped cleanly");
            Ok(())
        }
        Some(e) => Err(Failure::other(format!("worker failed: {e}"))),
    }
}
