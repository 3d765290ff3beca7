//! Commands resume a prompt's family from the snapshot kept in their cache dir: they still see
//! what another process appended a moment before, and a snapshot that is not this ledger's is
//! discarded, never trusted.

use pledger_core::ids::PromptName;
use pledger_e2e::*;
use pledger_infra::snapshot::SnapshotDir;

use crate::fixture::*;

const PROMPT: &str = "snap";

/// The prompt registered with `versions` published versions (distinct instructions).
fn with_versions(w: &World, versions: usize) -> Vec<String> {
    w.run("maria", &["prompt", "register", PROMPT, "--owner", "team"])
        .ok();
    (0..versions)
        .map(|i| publish(w, PROMPT, &format!("version {i} {}", "x".repeat(i))))
        .collect()
}

fn snapshots_of(w: &World) -> SnapshotDir {
    SnapshotDir::new(w.config_dir().join("cache").join("snapshots"))
}

fn ledger_key(w: &World) -> String {
    let url = w.server.url();
    block_on(async move {
        let client = async_nats::connect(url).await.unwrap();
        pledger_infra::Ledger::new(client)
            .ledger_key()
            .await
            .unwrap()
    })
}

#[test]
fn a_command_resumes_from_its_snapshot_and_still_sees_what_another_process_appended() {
    let w = World::new();
    let versions = with_versions(&w, 70);
    let prompt = PromptName::parse(PROMPT).unwrap();
    let path = snapshots_of(&w).path(&ledger_key(&w), &prompt);
    assert!(
        path.exists(),
        "a read of 70 events kept a snapshot at {}",
        path.display()
    );

    let shown = w.json("maria", &["prompt", "show", PROMPT]);
    assert!(
        shown["snapshot_through"].as_u64().is_some(),
        "the read resumed from the snapshot: {shown}"
    );
    assert!(shown["events_read"].as_u64().unwrap() < 64);
    assert_eq!(
        shown["state"]["version_order"].as_array().unwrap().len(),
        70
    );

    // Another process, with a cache of its own, appends a version; the next read sees it.
    let other_cache = tempfile::tempdir().unwrap();
    let file = w.file(
        "late.toml",
        &artifact_toml("published a moment before", 0.4),
    );
    let out = w
        .command("maria", &["--json", "prompt", "publish", PROMPT, &file])
        .env("PLEDGER_CACHE_DIR", other_cache.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let late: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = w.json("maria", &["prompt", "show", PROMPT]);
    let order = shown["state"]["version_order"].as_array().unwrap();
    assert_eq!(order.len(), 71);
    assert_eq!(order.last().unwrap(), &late["version"]);
    assert_eq!(order[0].as_str().unwrap(), versions[0]);
    assert!(shown["snapshot_through"].as_u64().is_some());

    // The text lists the latest versions and says how many earlier ones `--all` shows.
    let text = w.run("maria", &["prompt", "show", PROMPT]).ok().stdout;
    assert!(text.contains("61 earlier versions"), "{text}");
    let all = w
        .run("maria", &["prompt", "show", PROMPT, "--all"])
        .ok()
        .stdout;
    assert!(!all.contains("earlier versions"), "{all}");
}

#[test]
fn a_snapshot_from_another_ledger_is_discarded() {
    let a = World::new();
    with_versions(&a, 70);
    let prompt = PromptName::parse(PROMPT).unwrap();
    let from_a = std::fs::read(snapshots_of(&a).path(&ledger_key(&a), &prompt)).unwrap();

    let b = World::new();
    let b_versions = with_versions(&b, 2);
    let b_key = ledger_key(&b);
    let place = |bytes: &[u8]| {
        let path = snapshots_of(&b).path(&b_key, &prompt);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    };
    let b_sees_its_own = || {
        let shown = b.json("maria", &["prompt", "show", PROMPT]);
        assert_eq!(
            shown["snapshot_through"],
            serde_json::Value::Null,
            "{shown}"
        );
        let order: Vec<&str> = shown["state"]["version_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(order, b_versions);
    };
    // A's snapshot as it is: it names A's ledger.
    place(&from_a);
    b_sees_its_own();
    // A's snapshot claiming to be B's: B's ledger does not hold its head.
    let mut forged: serde_json::Value = serde_json::from_slice(&from_a).unwrap();
    forged["ledger"] = serde_json::Value::String(b_key.clone());
    place(&serde_json::to_vec(&forged).unwrap());
    b_sees_its_own();
    // An unreadable one.
    place(b"{ not a snapshot");
    b_sees_its_own();
}
