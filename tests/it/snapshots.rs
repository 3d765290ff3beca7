//! Commands resume a prompt's family from the snapshot kept in their cache dir: they still see
//! what another process appended a moment before, and a snapshot that is not this ledger's is
//! discarded, never trusted.

use pledger_core::ids::PromptName;
use pledger_core::verify::FamilySnapshot;
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
    assert_eq!(version_order(&shown).len(), 70);

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
    let order = version_order(&shown);
    assert_eq!(order.len(), 71);
    assert_eq!(
        Some(order.last().unwrap().as_str()),
        late["version"].as_str()
    );
    assert_eq!(order[0], versions[0]);
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
        assert_eq!(version_order(&shown), b_versions);
    };
    // A's snapshot as it is: it names A's ledger.
    place(&from_a);
    b_sees_its_own();
    // A's snapshot claiming to be B's: B's ledger does not hold its head.
    let mut forged = FamilySnapshot::decode(&from_a).unwrap();
    forged.ledger = b_key.clone();
    place(&forged.encode());
    b_sees_its_own();
    // An unreadable one.
    place(b"{ not a snapshot");
    b_sees_its_own();
}

/// `prompt show --json`'s version ids in publication order (the state keeps them as one
/// string of 64 hex digits each).
fn version_order(shown: &serde_json::Value) -> Vec<String> {
    let hex = shown["state"]["version_order"].as_str().unwrap();
    assert_eq!(hex.len() % 64, 0, "{hex}");
    hex.as_bytes()
        .chunks(64)
        .map(|c| format!("sha256:{}", std::str::from_utf8(c).unwrap()))
        .collect()
}

#[test]
fn adopting_a_version_the_live_state_let_go_of_routes_its_artifact() {
    let w = World::new();
    // More versions than a live state keeps artifacts of (the latest ten and the stable one).
    let versions = with_versions(&w, 14);
    w.run(
        "maria",
        &[
            "prompt",
            "adopt",
            PROMPT,
            &versions[0],
            "--reason",
            "oldest",
        ],
    )
    .ok();
    let table = routing_table(&w);
    assert_eq!(
        table.stable.as_ref().map(|v| v.as_str()),
        Some(versions[0].as_str())
    );
    let artifact = &table.artifacts[&table.stable.clone().unwrap()];
    assert_eq!(artifact.version_id().as_str(), versions[0]);
    // The shown version comes from the full read, and a diff across the two ends works.
    let shown = w.json("maria", &["prompt", "show", PROMPT, &versions[1]]);
    assert_eq!(shown["version"], versions[1].as_str());
    w.run(
        "maria",
        &["prompt", "diff", PROMPT, &versions[1], &versions[13]],
    )
    .ok();
}

fn routing_table(w: &World) -> pledger_core::routing::RoutingTable {
    let url = w.server.url();
    block_on(async move {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let store = pledger_infra::RoutingStore::open(&js).await.unwrap();
        let prompt = PromptName::parse(PROMPT).unwrap();
        store
            .get(&prompt)
            .await
            .unwrap()
            .expect("a routing table")
            .0
    })
}
