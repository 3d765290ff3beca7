//! `pledger up` and `pledger demo`, as a user runs them.

use std::time::{Duration, Instant};

use pledger_e2e::*;

#[test]
fn up_serves_the_ledger_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let port = pledger_infra::server::free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("nats://{listen}");
    let up = std::process::Command::new(pledger_bin())
        .args(["up", "--listen", &listen, "--data-dir"])
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `pledger init` succeeds once the server accepts connections; poll for that event.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let init = std::process::Command::new(pledger_bin())
            .args(["--nats", &url, "init"])
            .output()
            .unwrap();
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
    let register = std::process::Command::new(pledger_bin())
        .args([
            "--nats", &url, "--as", "maria", "prompt", "register", "triage", "--owner", "support",
        ])
        .output()
        .unwrap();
    assert!(register.status.success());
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped cleanly"));
}

#[test]
fn the_demo_runs_to_completion() {
    let out = std::process::Command::new(pledger_bin())
        .arg("demo")
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
        "gate of support-triage-r1: FAILED",
        "gate of support-triage-r1: PASSED",
        "advanced `internal` -> `eu-quarter`",
        "stage-not-ready",
        "FROZEN",
        "ROLLED BACK",
        "Demo complete",
    ] {
        assert!(stdout.contains(step), "the demo output lacks `{step}`");
    }
}
