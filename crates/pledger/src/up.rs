//! `pledger up`: a local nats-server for the ledger, in the foreground, on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pledger_core::identity::{PublicKey, Role, RosterCommand};
use pledger_core::Actor;
use pledger_infra::server::{find_nats_server, NatsServerProcess};
use pledger_infra::worker::{WorkerContext, WorkerKind};
use pledger_infra::Ledger;

use crate::cli::UpArgs;
use crate::failure::Failure;

/// `--data-dir`, else `$PLEDGER_DATA_DIR`, else `$XDG_DATA_HOME/pledger`, else
/// `~/.local/share/pledger`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PLEDGER_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("pledger");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/pledger")
}

pub async fn run(args: &UpArgs, cli: &crate::cli::Cli) -> Result<(), Failure> {
    let mut signals = crate::workers::Signals::install()?;
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        Failure::usage(format!(
            "--listen `{}` is not HOST:PORT with an IP address (e.g. 127.0.0.1:4222)",
            args.listen
        ))
    })?;
    let ui_listen = if args.no_ui {
        None
    } else {
        Some(crate::ui::check_listen(&args.ui, args.ui_public, "--ui")?)
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let url = format!("nats://{listen}");
    if pledger_infra::connect(&url).await.is_ok() {
        return Err(Failure::other(format!(
            "a NATS server already answers at {url}; stop it or choose another --listen"
        )));
    }
    let binary = find_nats_server().map_err(|e| Failure::other(e.to_string()))?;
    let dir = data_dir.clone();
    let mut server =
        tokio::task::spawn_blocking(move || NatsServerProcess::start(&binary, &dir, listen))
            .await
            .map_err(|e| Failure::other(e.to_string()))?
            .map_err(|e| Failure::other(e.to_string()))?;
    let client = pledger_infra::connect(&url).await?;
    let ledger = Ledger::new(client.clone());
    ledger.ensure().await?;
    let app = crate::app::App::from_cli(cli);
    ensure_identities(&ledger, &app, &data_dir.join("workers")).await?;
    let (stop_workers, workers_rx) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    if !args.no_workers {
        // Each worker is supervised: started, and started again with backoff after a failure,
        // a panic or a stop on its own, until shutdown. The server keeps serving meanwhile.
        for kind in WorkerKind::ALL {
            crate::workers::spawn_supervised(
                &mut workers,
                kind,
                &url,
                &data_dir.join("workers"),
                None,
                "0",
                workers_rx.clone(),
                None,
            );
        }
    }
    let metrics = match args.metrics {
        Some(addr) => {
            let kinds: &[WorkerKind] = if args.no_workers {
                &[]
            } else {
                &WorkerKind::ALL
            };
            let served =
                crate::workers::serve_metrics(addr, &url, kinds, "0", workers_rx.clone()).await?;
            eprintln!("pledger up: metrics at http://{addr}/metrics");
            Some(served)
        }
        None => None,
    };
    // The release pages: a port already taken is reported, and the ledger serves anyway.
    let ui = match ui_listen {
        None => None,
        Some(addr) => {
            let conn = crate::app::Conn {
                ledger: Ledger::new(client.clone())
                    .with_snapshots(pledger_infra::snapshot::SnapshotMemory::shared()),
                routing: pledger_infra::RoutingStore::open(ledger.jetstream()).await?,
            };
            match crate::ui::serve(addr, conn, &url, workers_rx.clone()).await {
                Ok((bound, task)) => {
                    eprintln!("pledger up: release pages at http://{bound}/");
                    Some(task)
                }
                Err(f) => {
                    eprintln!(
                        "pledger up: release pages not served ({}); pass --ui ADDR to choose another address, or --no-ui",
                        f.message
                    );
                    None
                }
            }
        }
    };
    eprintln!(
        "pledger up: ledger ready at {url} (store {}, fsync on every write){}; Ctrl-C or SIGTERM stops it",
        data_dir.display(),
        if args.no_workers { "" } else { "; gatekeeper, router, canary monitor, feedback collector, scheduler, notary and notifier running" }
    );
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let outcome: Result<&str, Failure> = loop {
        tokio::select! {
            reason = signals.recv() => break Ok(reason),
            Some(done) = workers.join_next() => {
                // A supervisor ends only at shutdown; say so if one ever does otherwise.
                if let Err(e) = done {
                    eprintln!("pledger up: a worker supervisor ended: {e}");
                }
            }
            _ = poll.tick() => {
                if let Some(status) = server.try_wait() {
                    break Err(Failure::other(format!("nats-server exited on its own ({status}); its log: {}", server.log_tail())));
                }
            }
        }
    };
    let _ = stop_workers.send(true);
    while workers.join_next().await.is_some() {}
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(ui) = ui {
        let _ = ui.await;
    }
    let reason = outcome?;
    eprintln!("pledger up: {reason}: stopping nats-server");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .map_err(|e| Failure::other(e.to_string()))?;
    eprintln!("pledger up: stopped cleanly");
    Ok(())
}

/// The roles of the person running `pledger up`: a local ledger has one operator, who plays
/// every person's part (never a worker's).
const LOCAL_ROLES: [Role; 6] = [
    Role::Admin,
    Role::Author,
    Role::Reviewer,
    Role::Ci,
    Role::ReleaseManager,
    Role::Oncall,
];

/// The name of the operating system account running this process (`getpwuid_r`), for a
/// container or service where `$USER` is not set.
fn os_account_name() -> Option<String> {
    #[cfg(unix)]
    {
        let mut buf = vec![0u8; 4096];
        // SAFETY: `passwd` is plain data, zeroed is a valid value; getpwuid_r writes only into
        // `pwd`, `buf` (whose length it is given) and `result`, and `pw_name` points into `buf`
        // when it succeeds, which outlives its use below.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(
                libc::getuid(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_str().ok()?;
            (!name.is_empty()).then(|| name.to_string())
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Makes sure the local ledger has an identity for the person running it (a key in their
/// keyring, enrolled as the first admin) and one for each worker (keys under the workers'
/// data dir, enrolled with the `worker` role). Says what it created.
async fn ensure_identities(
    ledger: &Ledger,
    app: &crate::app::App,
    workers_dir: &Path,
) -> Result<(), Failure> {
    let (verifier, _, _) = ledger.roster().await?;
    let keyring = app.keyring();
    let name = app
        .actor
        .clone()
        .or_else(|| keyring.default_name())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(os_account_name)
        .unwrap_or_else(|| "local-admin".to_string());
    let identity = Actor::parse(&name)?;
    if verifier.roster.is_empty() {
        let key = if keyring.has(&name) {
            crate::keys::load_private_key(&keyring.path(&name))?
        } else {
            let k = keyring.generate(&name)?;
            eprintln!(
                "pledger up: created a key for {name} at {} (your identity on this ledger)",
                keyring.path(&name).display()
            );
            k
        };
        if keyring.default_name().is_none() {
            keyring.set_default(&name)?;
        }
        ledger
            .change_roster(
                &RosterCommand::Enroll {
                    identity: identity.clone(),
                    keys: vec![PublicKey::from_ssh(key.public_key().clone())?],
                    roles: LOCAL_ROLES.into_iter().collect(),
                },
                &key,
            )
            .await?;
        eprintln!(
            "pledger up: enrolled {name} as the first admin (roles {}); `pledger identity list` shows the roster",
            LOCAL_ROLES.map(Role::name).join(", ")
        );
    }
    let (verifier, _, _) = ledger.roster().await?;
    let admin = match keyring.default_name().filter(|n| keyring.has(n)) {
        Some(n) => Some(crate::keys::load_private_key(&keyring.path(&n))?),
        None => None,
    };
    let worker_keys = crate::workers::worker_keyring(workers_dir);
    for kind in WorkerKind::ALL {
        let worker = WorkerContext::identity_name(kind);
        let key = if worker_keys.has(worker) {
            crate::keys::load_private_key(&worker_keys.path(worker))?
        } else {
            worker_keys.generate(worker)?
        };
        if verifier.roster.current_owner(key.public_key()).is_some() {
            continue;
        }
        let Some(admin) = &admin else {
            eprintln!("pledger up: the {worker} worker's key is not enrolled and no local admin key can enrol it");
            continue;
        };
        let enrolled = ledger
            .change_roster(
                &RosterCommand::Enroll {
                    identity: Actor::parse(worker)?,
                    keys: vec![PublicKey::from_ssh(key.public_key().clone())?],
                    roles: [kind.role()].into(),
                },
                admin,
            )
            .await;
        match enrolled {
            Ok(_) => eprintln!(
                "pledger up: enrolled the {worker} worker (key {})",
                worker_keys.path(worker).display()
            ),
            Err(e) => eprintln!("pledger up: could not enrol the {worker} worker: {e}"),
        }
    }
    Ok(())
}
