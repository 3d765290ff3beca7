//! A three-node JetStream cluster with R3 streams: the ledger survives losing the server that
//! leads it, reached through every node's URL.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use pledger_e2e::*;
use pledger_infra::server::EphemeralCluster;
use serde_json::Value;

fn pledger(url: &str, config: &Path, actor: &str, args: &[&str]) -> Output {
    std::process::Command::new(pledger_bin())
        .args(["--nats", url, "--as", actor])
        .args(args)
        .env_remove("PLEDGER_NATS_URL")
        .env_remove("PLEDGER_ACTOR")
        .env_remove("PLEDGER_KEY")
        .env("PLEDGER_CONFIG_DIR", config)
        .env("HOME", config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("pledger runs")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The server name of the current leader of `stream`, asked through `url`.
fn leader(url: &str, stream: &str) -> String {
    let (url, stream) = (url.to_string(), stream.to_string());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            let mut s = async_nats::jetstream::new(client)
                .get_stream(stream)
                .await
                .unwrap();
            let info = s.info().await.unwrap();
            info.cluster
                .clone()
                .and_then(|c| c.leader)
                .expect("a replicated stream has a leader")
        })
}

#[test]
fn an_r3_ledger_survives_losing_its_leader_through_every_nodes_url() {
    let mut cluster = EphemeralCluster::start(3).expect("three nats-servers start");
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    write_key(&config.join("keys"), "admin");
    // The cluster elects its JetStream meta leader after start: init once it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    let init = loop {
        let out = pledger(
            &url,
            &config,
            "admin",
            &["--json", "init", "--admin", "admin", "--replicas", "3"],
        );
        if out.status.success() {
            break json_of(&out);
        }
        assert!(Instant::now() < deadline, "init never succeeded: {out:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(init["servers"], 3, "{init}");
    for r in init["replicas"].as_array().unwrap() {
        assert_eq!(r["replicas"], 3, "{init}");
    }
    let ok = |args: &[&str]| {
        let out = pledger(&url, &config, "admin", args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        out
    };
    ok(&[
        "identity", "roles", "admin", "--role", "admin", "--role", "author",
    ]);
    ok(&["prompt", "register", "triage", "--owner", "support"]);
    for n in 0..3 {
        let f = dir.path().join(format!("v{n}.toml"));
        std::fs::write(&f, artifact_toml(&format!("Version {n}."), 0.2)).unwrap();
        ok(&["prompt", "publish", "triage", &f.display().to_string()]);
    }
    let before = json_of(&ok(&["--json", "audit", "log", "triage"]))["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, 4);

    // Kill the server leading the ledger stream.
    let leading = leader(&cluster.node_url(0), pledger_core::names::LEDGER_STREAM);
    let victim = (0..3).find(|i| cluster.node_name(*i) == leading).unwrap();
    cluster.kill(victim);
    let f = dir.path().join("after.toml");
    std::fs::write(&f, artifact_toml("Written after the leader died.", 0.2)).unwrap();
    let killed = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = pledger(
            &url,
            &config,
            "admin",
            &["prompt", "publish", "triage", &f.display().to_string()],
        );
        if out.status.success() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no write succeeded within 10 s of losing the leader ({attempts} attempts): {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing written before is lost, and the survivors elected a new leader.
    let log = json_of(&ok(&["--json", "audit", "log", "triage"]));
    assert_eq!(log["events"].as_array().unwrap().len(), before + 1, "{log}");
    assert!(log["ignored"].as_array().unwrap().is_empty(), "{log}");
    let survivor = (0..3).find(|i| *i != victim).unwrap();
    assert_ne!(
        leader(
            &cluster.node_url(survivor),
            pledger_core::names::LEDGER_STREAM
        ),
        leading
    );
    let roster = json_of(&ok(&["--json", "identity", "list"]));
    assert_eq!(roster["genesis"]["admin"], "admin");
}
