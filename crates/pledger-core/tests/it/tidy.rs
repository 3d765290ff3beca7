//! One name, one place: every stream, subject, bucket, KV key and consumer name is spelled in
//! `pledger_core::names` only. This test reads every Rust source of the workspace (code and
//! tests) and fails on a string literal that spells such a name anywhere else.
//!
//! A test that must put a raw wire name on the line (pinning the wire format, for instance)
//! marks that line with `tidy: wire name`; a test file that pins a configuration spelled in
//! wire names (the permission test of `ops/nats-auth.conf`) says `tidy: wire names in this
//! file` at its top.

use std::path::{Path, PathBuf};

/// The starts of string literals that spell a shared name.
const SPELLINGS: [&str; 19] = [
    "\"pledger_release_",
    "\"pledger_rollout_",
    "\"pledger_decisions",
    "\"pledger_regression_cases",
    "\"pledger_worker_",
    "\"PLEDGER_LEDGER",
    "\"PLEDGER_OUTCOMES",
    "\"PLEDGER_DEADLETTER",
    "\"PLEDGER_JUDGEMENTS",
    "\"PLEDGER_CHECKPOINTS",
    "\"pledger.ledger.",
    "\"pledger.outcomes.",
    "\"pledger.deadletter.",
    "\"pledger.judgements.",
    "\"pledger_routing",
    "\"pledger_canary",
    "\"pledger_notify",
    "\"pledger_notifications",
    "\"KV_pledger_",
];

const THE_PLACE: &str = "crates/pledger-core/src/names.rs";
const MARK: &str = "tidy: wire name";
const FILE_MARK: &str = "tidy: wire names in this file";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every line outside `names.rs` that spells a shared name, as `path:line: text`.
fn spelled_elsewhere(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for top in ["crates", "tests", "clients"] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(
        files.len() > 20,
        "the workspace's sources were not found under {root:?}"
    );
    let mut found = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        if relative == THE_PLACE || relative.ends_with("tests/it/tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text
            .lines()
            .take(5)
            .any(|l| l.starts_with("//!") && l.contains(FILE_MARK))
        {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || line.contains(MARK) {
                continue;
            }
            if SPELLINGS.iter().any(|s| line.contains(s)) {
                found.push(format!("{relative}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn every_shared_name_is_spelled_in_names_rs_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = spelled_elsewhere(&root);
    assert!(
        found.is_empty(),
        "use pledger_core::names instead of spelling these names:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_tidy_check_finds_a_spelled_name() {
    let dir = std::env::temp_dir().join(format!("pledger-tidy-{}", std::process::id()));
    let src = dir.join("crates/x/src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..21 {
        std::fs::write(src.join(format!("f{i}.rs")), "fn f() {}\n").unwrap();
    }
    std::fs::write(
        src.join("bad.rs"),
        "// \"PLEDGER_LEDGER\" in a comment is fine\nconst S: &str = \"PLEDGER_LEDGER\";\nconst T: &str = \"pledger_routing\"; // tidy: wire name\n",
    )
    .unwrap();
    let found = spelled_elsewhere(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found,
        ["crates/x/src/bad.rs:2: const S: &str = \"PLEDGER_LEDGER\";"]
    );
}
