//! `pledger bench --quick`: the benchmark command runs end to end on its own throwaway server
//! and reports every section (a smoke test of the command, not of the figures).

use std::process::{Command, Stdio};

use pledger_e2e::pledger_bin;

const SECTIONS: [&str; 8] = [
    "1. Outcome ingest into the canary monitor",
    "2. Breach to reroute",
    "3. Manual rollback to",
    "4. Resolver::resolve cost",
    "5. Judgement quality",
    "6. Resident memory of `pledger up`",
    "12. Commands read from a snapshot at any history length",
    "14. The release page: a ledger change to the open page",
];

#[test]
fn bench_quick_runs() {
    let dir = tempfile::tempdir().unwrap();
    let markdown = dir.path().join("PERFORMANCE.md");
    let out = Command::new(pledger_bin())
        .args(["bench", "--quick", "--write"])
        .arg(&markdown)
        .env_remove("PLEDGER_NATS_URL")
        .env_remove("PLEDGER_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("pledger runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pledger bench --quick failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for section in SECTIONS {
        assert!(
            stdout.contains(section),
            "the report lacks `{section}`:\n{stdout}"
        );
    }
    for word in ["baseline", "target", "method:"] {
        assert!(
            stdout.contains(word),
            "the report lacks `{word}`:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("PASS") || stdout.contains("MISS"),
        "no verdicts:\n{stdout}"
    );
    assert!(
        stdout.contains("reproduce: cargo run --release -p pledger -- bench"),
        "no reproduce command:\n{stdout}"
    );
    let md = std::fs::read_to_string(&markdown).expect("--write wrote the Markdown report");
    for section in SECTIONS {
        assert!(
            md.contains(&format!("## {section}")),
            "the Markdown lacks `## {section}`:\n{md}"
        );
    }
    assert!(md.contains("| measure | pledger | baseline | target | result |"));
    assert!(md.contains("nats-server") && md.contains("nproc"));
}
