//! `pledger up` and `pledger demo`, as a user runs them.

use std::time::{Duration, Instant};

use pledger_e2e::*;

#[test]
fn up_serves_the_ledger_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("config");
    let port = pledger_infra::server::free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("nats://{listen}");
    // The person running `pledger up` (maria) gets a key in her keyring and is enrolled as
    // the first admin; the workers get keys under the data dir.
    let up = std::process::Command::new(pledger_bin())
        .args([
            "--as",
            "maria",
            "up",
            "--listen",
            &listen,
            "--ui",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .env("PLEDGER_CONFIG_DIR", &config)
        .env("HOME", data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let roster = wait_for_setup(&url, &config, data.path());
    assert_eq!(roster["genesis"]["admin"], "maria");
    assert!(config.join("keys/maria").is_file());
    assert!(data.path().join("workers/keys/canary-monitor").is_file());
    let register = std::process::Command::new(pledger_bin())
        .args([
            "--nats", &url, "--as", "maria", "prompt", "register", "triage", "--owner", "support",
        ])
        .env("PLEDGER_CONFIG_DIR", &config)
        .env("HOME", data.path())
        .output()
        .unwrap();
    assert!(register.status.success(), "{register:?}");
    assert!(
        data.path().join("jetstream").is_dir(),
        "the store lives under the data dir"
    );
    let term = std::process::Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = up.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped cleanly"));
    // It served the release pages on the free port it was given, and said where.
    assert!(
        stderr.contains("pledger up: release pages at http://127.0.0.1:")
            && !stderr.contains("release pages at http://127.0.0.1:0/"),
        "{stderr}"
    );
}

#[test]
fn the_demo_runs_to_completion() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pledger_bin())
        .arg("demo")
        .env("HOME", home.path())
        .env_remove("PLEDGER_CONFIG_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "author-cannot-review",
        "1 ledger event(s) ignored",
        "claims to be carol",
        "gate of support-triage-r1: FAILED",
        "gate of support-triage-r1: PASSED",
        "advanced `internal` -> `eu-quarter`",
        "stage-not-ready",
        "FROZEN",
        "ROLLED BACK",
        "the ledger extends it",
        "findings    1 (integrity 1)",
        "INTEGRITY failure (exit 7)",
        "Demo complete",
    ] {
        assert!(stdout.contains(step), "the demo output lacks `{step}`");
    }
}

/// Waits until a `pledger up` at `url` has finished its set-up (the roster lists the person
/// and the seven workers) and returns the roster. `pledger init` succeeds once the server
/// accepts connections; until then the only failure expected is "cannot reach" (exit 5).
fn wait_for_setup(
    url: &str,
    config: &std::path::Path,
    home: &std::path::Path,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let pledger = |args: &[&str]| {
        std::process::Command::new(pledger_bin())
            .args(["--nats", url])
            .args(args)
            .env("PLEDGER_CONFIG_DIR", config)
            .env("HOME", home)
            .output()
            .unwrap()
    };
    loop {
        let init = pledger(&["init"]);
        if init.status.success() {
            break;
        }
        assert_eq!(
            init.status.code(),
            Some(5),
            "only 'cannot reach' is expected while starting"
        );
        assert!(Instant::now() < deadline, "pledger up did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    loop {
        let list = pledger(&["--json", "identity", "list"]);
        let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
        if v["identities"].as_array().is_some_and(|a| a.len() == 8) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "pledger up did not enrol its identities"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 12: in a container without `$USER` (and no `--as`), `pledger up` names its first
/// admin after the operating system's account rather than giving up or inventing a name.
#[test]
fn up_without_user_names_the_admin_after_the_os_account() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("config");
    let listen = format!("127.0.0.1:{}", pledger_infra::server::free_port());
    let url = format!("nats://{listen}");
    let mut up = std::process::Command::new(pledger_bin())
        .args(["up", "--listen", &listen, "--data-dir"])
        .arg(data.path())
        .env("PLEDGER_CONFIG_DIR", &config)
        .env("HOME", data.path())
        .env_remove("USER")
        .env_remove("PLEDGER_ACTOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let roster = wait_for_setup(&url, &config, data.path());
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let account = String::from_utf8(account.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(!account.is_empty());
    assert_eq!(roster["genesis"]["admin"], account.as_str());
    assert!(config.join("keys").join(&account).is_file());
    let term = std::process::Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(up.wait().unwrap().success());
}
