//! `pledger up`: a local nats-server for the ledger, in the foreground, on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pledger_infra::server::{find_nats_server, NatsServerProcess};
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

pub async fn run(args: &UpArgs) -> Result<(), Failure> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        Failure::usage(format!(
            "--listen `{}` is not HOST:PORT with an IP address (e.g. 127.0.0.1:4222)",
            args.listen
        ))
    })?;
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
    Ledger::new(client).ensure().await?;
    eprintln!(
        "pledger up: ledger ready at {url} (store {}, fsync on every write); Ctrl-C or SIGTERM stops it",
        data_dir.display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::other(format!("cannot listen for SIGTERM: {e}")))?;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let reason = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break "interrupt",
            _ = terminate.recv() => break "SIGTERM",
            _ = poll.tick() => {
                if let Some(status) = server.try_wait() {
                    return Err(Failure::other(format!("nats-server exited on its own ({status}); its log: {}", server.log_tail())));
                }
            }
        }
    };
    eprintln!("pledger up: {reason}: stopping nats-server");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .map_err(|e| Failure::other(e.to_string()))?;
    eprintln!("pledger up: stopped cleanly");
    Ok(())
}
