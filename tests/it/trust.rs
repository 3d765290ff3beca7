//! Trusted history through the binary, attacked with a NATS client that is not pledger's:
//! forged reviews are not counted, garbage does not make a prompt unreadable, workers keep
//! deciding, roles and key ownership are enforced.

use std::time::Duration;

use pledger_e2e::*;
use serde_json::{json, Value};

use crate::fixture::*;

/// Runs `f` with a plain NATS client (not pledger's) connected to the world's server.
fn with_client<T>(w: &World, f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
    let url = w.server.url();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            f(async_nats::jetstream::new(client)).await
        })
}

/// Publishes raw bytes on a subject (JetStream ack awaited).
fn raw_publish(w: &World, subject: &str, payload: Vec<u8>) {
    with_client(w, async |js| {
        js.publish(subject.to_string(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// The recorded event of `kind` (the first), with its subject, from `audit log --json`.
fn recorded(w: &World, prompt: &str, kind: &str) -> (String, Value) {
    let log = w.json("auditor", &["audit", "log", prompt]);
    let e = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {log}"))
        .clone();
    (
        e["subject"].as_str().unwrap().to_string(),
        e["event"].clone(),
    )
}

fn show(w: &World, release: &str) -> Value {
    w.json("maria", &["release", "show", release])
}

#[test]
fn a_forged_review_from_a_foreign_client_is_not_counted_and_is_named() {
    let w = World::new();
    let _gatekeeper = w.worker("gatekeeper", "0");
    let p = proposed(&w, "triage");
    approve(&w, "priya", &p.release, "product");
    attach_bundle(&w, &p, 0.0);
    // Copied from priya's product review: a technical approval by carol, with a new id.
    let (subject, review) = recorded(&w, "triage", "release.review_submitted");
    let mut forged = review.clone();
    forged["event_id"] = json!("01930000-0000-7000-8000-00000000f0f0");
    forged["actor"] = json!("carol");
    forged["payload"]["reviewer"] = json!("carol");
    forged["payload"]["layer"] = json!("technical");
    raw_publish(&w, &subject, forged.to_string().into_bytes());
    // The same, claiming to be tomas (an enrolled reviewer), without his key.
    let mut as_tomas = forged.clone();
    as_tomas["event_id"] = json!("01930000-0000-7000-8000-00000000f0f1");
    as_tomas["actor"] = json!("tomas");
    as_tomas["payload"]["reviewer"] = json!("tomas");
    raw_publish(&w, &subject, as_tomas.to_string().into_bytes());

    let v = show(&w, &p.release);
    assert_eq!(v["release"]["reviews"]["product"]["reviewer"], "priya");
    assert!(
        v["release"]["reviews"]["technical"].is_null(),
        "the forged technical review was counted: {v}"
    );
    let ignored = v["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 2, "{v}");
    assert!(ignored.iter().all(|f| f["check"] == "key"), "{ignored:?}");
    let text = w.run("maria", &["release", "show", &p.release]).ok().stdout;
    assert!(text.contains("2 ledger event(s) ignored"), "{text}");
    assert!(
        !text.contains("carol"),
        "carol is named as a reviewer: {text}"
    );
    // The gate does not pass on it: it still lacks a technical approval.
    w.run("ci", &["release", "gate", &p.release])
        .rejected("gate-needs-approvals");
    // With the real technical review, the running gatekeeper decides the gate itself.
    approve(&w, "tomas", &p.release, "technical");
    w.wait_for("the gatekeeper's gate", Duration::from_secs(20), || {
        (show(&w, &p.release)["gate_current"] == true).then_some(())
    });
    let log = w.run("auditor", &["audit", "log", "triage"]).ok().stdout;
    assert!(log.contains("IGNORED"), "{log}");
    assert!(log.contains("claims to be carol"), "{log}");
}

#[test]
fn garbage_on_a_release_subject_leaves_every_reader_working_and_workers_deciding() {
    let w = World::new();
    let _gatekeeper = w.worker("gatekeeper", "0");
    let p = proposed(&w, "triage");
    let other = proposed(&w, "billing");
    let subject = pledger_core::names::subject_for(&pledger_core::event::Aggregate::Release(
        pledger_core::ReleaseId::parse("triage-r1").unwrap(),
    ));
    let subject = subject.as_str();
    raw_publish(&w, subject, b"\x00not an event\xff".to_vec());
    raw_publish(
        &w,
        subject,
        json!({ "kind": "release.no_such_kind", "payload": {} })
            .to_string()
            .into_bytes(),
    );
    for args in [
        &["prompt", "show", "triage"][..],
        &["release", "show", &p.release][..],
        &["audit", "log", "triage"][..],
        &["prompt", "history", "triage"][..],
    ] {
        let run = w.run("auditor", args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let show = w.run("maria", &["prompt", "show", "triage"]).ok().stdout;
    assert!(show.contains("2 ledger event(s) ignored"), "{show}");
    let audit = w.json("auditor", &["audit", "log", "triage"]);
    let ignored = audit["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 2, "{audit}");
    assert!(ignored.iter().all(|f| f["check"] == "decoding"));
    assert!(ignored.iter().all(|f| f["subject"] == subject));
    // The prompt stays writable and the gatekeeper keeps deciding for it and for others.
    for prepared in [&p, &other] {
        approve(&w, "priya", &prepared.release, "product");
        approve(&w, "tomas", &prepared.release, "technical");
        attach_bundle(&w, prepared, 0.0);
    }
    for release in [&p.release, &other.release] {
        w.wait_for("the gatekeeper's gate", Duration::from_secs(20), || {
            (w.json("maria", &["release", "show", release])["gate_current"] == true).then_some(())
        });
    }
    // The gatekeeper dead-lettered a copy of each, with its reason.
    let letters = dead_letters(&w);
    assert_eq!(
        letters
            .iter()
            .filter(|l| l["worker"] == "gatekeeper" && l["subject"] == subject)
            .count(),
        2,
        "{letters:?}"
    );
}

/// Every dead letter on the server, decoded.
fn dead_letters(w: &World) -> Vec<Value> {
    with_client(w, async |js| {
        use futures::StreamExt;
        let stream = js
            .get_stream(pledger_core::names::DEADLETTER_STREAM)
            .await
            .unwrap();
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            out.push(serde_json::from_slice(&m.payload).unwrap());
        }
        out
    })
}

#[test]
fn roles_are_checked_and_named() {
    let w = World::new();
    let p = proposed(&w, "triage");
    w.enroll("viewer", &["auditor"]).ok();
    let run = w
        .run(
            "viewer",
            &[
                "release",
                "review",
                &p.release,
                "--layer",
                "product",
                "--approve",
            ],
        )
        .rejected("not-permitted");
    assert!(
        run.stderr.contains("needs the role reviewer"),
        "{}",
        run.stderr
    );
    // A reviewer may not start rollouts or set the global windows.
    w.enroll("rita", &["reviewer"]).ok();
    let windows = w.file("w.toml", "timezone = \"UTC\"\n");
    w.run("rita", &["windows", "set", "--global", "--file", &windows])
        .rejected("not-permitted");
    // Only an admin changes the roster.
    let run = w.run(
        "rita",
        &["identity", "add", "eve", "--generate", "--role", "admin"],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("not-permitted"), "{}", run.stderr);
    let roster = w.json("auditor", &["identity", "list"]);
    assert!(roster["identities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["identity"] != "eve"));
}

#[test]
fn as_never_acts_for_another_identitys_key() {
    let w = World::new();
    two_versions(&w, "triage", false);
    // tomas is enrolled; signing with priya's key while claiming tomas is refused.
    w.enroll("tomas", &["author"]).ok();
    w.enroll("priya", &["author"]).ok();
    let priya_key = w.keys_dir().join("priya").display().to_string();
    let f = w.file("v3.toml", &artifact_toml("Another version.", 0.2));
    let before = w.event_count("triage");
    let run = w.run(
        "tomas",
        &["--key", &priya_key, "prompt", "publish", "triage", &f],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("belongs to priya, not tomas"),
        "{}",
        run.stderr
    );
    assert_eq!(w.event_count("triage"), before);
    // Without --as, the key's owner is who acts.
    let run = w
        .bare_command(&[
            "--json", "--key", &priya_key, "prompt", "publish", "triage", &f,
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let (_, published) = {
        let log = w.json("auditor", &["audit", "log", "triage"]);
        let last = log["events"].as_array().unwrap().last().unwrap().clone();
        ((), last)
    };
    assert_eq!(published["event"]["actor"], "priya");
    // A key nobody enrolled is refused, naming its fingerprint.
    let stranger = write_key(&w.files.path().join("elsewhere"), "stranger");
    let stranger = stranger.with_extension("").display().to_string();
    let run = w
        .bare_command(&["--key", &stranger, "prompt", "publish", "triage", &f])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("belongs to no enrolled identity"));
}

#[test]
fn a_revoked_identity_and_a_rotated_key_sign_nothing_more() {
    let w = World::new();
    two_versions(&w, "triage", false);
    w.enroll("ana", &["author"]).ok();
    let old_key = w.keys_dir().join("ana").display().to_string();
    let old_copy = w.files.path().join("ana-old");
    std::fs::copy(&old_key, &old_copy).unwrap();
    w.run("admin", &["identity", "rotate", "ana", "--generate"])
        .ok();
    let f = w.file("v5.toml", &artifact_toml("Version five.", 0.2));
    let run = w.run(
        "ana",
        &[
            "--key",
            &old_copy.display().to_string(),
            "prompt",
            "publish",
            "triage",
            &f,
        ],
    );
    assert_eq!(run.code, 2, "the retired key still signs: {run:?}");
    // The new key (in the keyring under her name) signs.
    w.run("ana", &["prompt", "publish", "triage", &f]).ok();
    w.run(
        "admin",
        &["identity", "revoke", "ana", "--reason", "left the team"],
    )
    .ok();
    let g = w.file("v6.toml", &artifact_toml("Version six.", 0.2));
    let run = w.run("ana", &["prompt", "publish", "triage", &g]);
    assert_eq!(run.code, 2, "a revoked identity still signs: {run:?}");
    let roster = w.json("auditor", &["identity", "list"]);
    let ana = roster["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["identity"] == "ana")
        .unwrap()
        .clone();
    assert_eq!(ana["active"], false);
    assert_eq!(ana["retired_keys"].as_array().unwrap().len(), 1);
}

#[test]
fn a_passphrase_protected_key_signs_once_unlocked() {
    let w = World::new();
    two_versions(&w, "triage", false);
    let dir = w.files.path().join("locked");
    std::fs::create_dir_all(&dir).unwrap();
    let key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let public = dir.join("id_ed25519.pub");
    std::fs::write(&public, key.public_key().to_openssh().unwrap()).unwrap();
    let locked = key.encrypt(&mut rand_core::OsRng, "correct horse").unwrap();
    let path = dir.join("id_ed25519");
    locked
        .write_openssh_file(&path, ssh_key::LineEnding::LF)
        .unwrap();
    w.run(
        "admin",
        &[
            "identity",
            "add",
            "lena",
            "--public-key",
            &public.display().to_string(),
            "--role",
            "author",
        ],
    )
    .ok();
    let f = w.file("v7.toml", &artifact_toml("Version seven.", 0.2));
    let path = path.display().to_string();
    // No terminal and no passphrase: a clear error, nothing recorded.
    let run = w
        .bare_command(&["--key", &path, "prompt", "publish", "triage", &f])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("passphrase"));
    let run = w
        .bare_command(&["--key", &path, "prompt", "publish", "triage", &f])
        .env("PLEDGER_KEY_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{run:?}");
}

/// The raw stored bytes of the last message on `subject`.
fn stored_bytes(w: &World, subject: &str) -> Vec<u8> {
    with_client(w, async |js| {
        let stream = js
            .get_stream(pledger_core::names::LEDGER_STREAM)
            .await
            .unwrap();
        stream
            .direct_get_last_for_subject(subject.to_string())
            .await
            .unwrap()
            .payload
            .to_vec()
    })
}

/// `ssh-keygen -Y verify` (OpenSSH's own verifier) accepts a recorded event's signature over
/// its signing bytes, in the pledger namespace only: a client in another language can check
/// events with nothing but the documented byte rule.
#[test]
fn ssh_keygen_verifies_a_recorded_event_in_the_pledger_namespace_only() {
    use base64::Engine;
    let w = World::new();
    w.run(
        "maria",
        &["prompt", "register", "triage", "--owner", "support"],
    )
    .ok();
    let stored = stored_bytes(
        &w,
        &pledger_core::names::prompt_subject(&pledger_core::PromptName::parse("triage").unwrap()),
    );
    let text = String::from_utf8(stored).unwrap();
    // The signing bytes: the stored bytes without the last member, `signature`.
    let cut = text.rfind(",\"signature\":\"").unwrap();
    let message = format!("{}}}", &text[..cut]);
    let signature = text[cut + 14..text.len() - 2].to_string();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&signature)
        .unwrap();
    let armored: String = base64::engine::general_purpose::STANDARD
        .encode(blob)
        .as_bytes()
        .chunks(70)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let dir = w.files.path().join("sshsig");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("event.json"), &message).unwrap();
    std::fs::write(
        dir.join("event.sig"),
        format!("-----BEGIN SSH SIGNATURE-----\n{armored}-----END SSH SIGNATURE-----\n"),
    )
    .unwrap();
    let public = std::fs::read_to_string(w.keys_dir().join("maria.pub")).unwrap();
    std::fs::write(dir.join("allowed_signers"), format!("maria {public}\n")).unwrap();
    let verify = |namespace: &str, message_file: &str| {
        std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f", "allowed_signers", "-I", "maria", "-n"])
            .arg(namespace)
            .args(["-s", "event.sig"])
            .current_dir(&dir)
            .env("HOME", w.home())
            .stdin(std::fs::File::open(dir.join(message_file)).unwrap())
            .output()
            .expect("ssh-keygen (openssh-client) is installed")
    };
    let good = verify("pledger-event-v1", "event.json");
    assert!(good.status.success(), "{good:?}");
    assert!(!verify("git", "event.json").status.success());
    std::fs::write(
        dir.join("tampered.json"),
        message.replace("support", "suppor7"),
    )
    .unwrap();
    assert!(!verify("pledger-event-v1", "tampered.json").status.success());
}

/// A passphrase-protected key held by ssh-agent signs through the agent: no passphrase asked.
#[test]
fn a_key_held_by_ssh_agent_signs_through_the_agent() {
    let w = World::new();
    two_versions(&w, "triage", false);
    let dir = w.files.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) is installed");
    w.wait_for("the agent's socket", Duration::from_secs(10), || {
        socket.exists().then_some(())
    });
    let key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    ssh_agent_client_rs::Client::connect(&socket)
        .unwrap()
        .add_identity(&key)
        .unwrap();
    let path = dir.join("id_ed25519");
    key.encrypt(&mut rand_core::OsRng, "never typed")
        .unwrap()
        .write_openssh_file(&path, ssh_key::LineEnding::LF)
        .unwrap();
    let public = dir.join("id_ed25519.pub");
    std::fs::write(&public, key.public_key().to_openssh().unwrap()).unwrap();
    w.run(
        "admin",
        &[
            "identity",
            "add",
            "omar",
            "--public-key",
            &public.display().to_string(),
            "--role",
            "author",
        ],
    )
    .ok();
    let f = w.file("v8.toml", &artifact_toml("Version eight.", 0.2));
    let run = w
        .bare_command(&[
            "--key",
            &path.display().to_string(),
            "prompt",
            "publish",
            "triage",
            &f,
        ])
        .env("SSH_AUTH_SOCK", &socket)
        .env_remove("PLEDGER_KEY_PASSPHRASE")
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let log = w.json("auditor", &["audit", "log", "triage"]);
    let last = log["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"]["actor"], "omar");
}

/// Issue 12: commands that only read never ask who is acting. No `--as`, no `$USER`, an empty
/// keyring and no `~/.ssh` key: every read succeeds; a write is refused with the usage code,
/// saying how to name a signer, and records nothing.
#[test]
fn commands_that_only_read_need_no_identity() {
    let w = World::new();
    let p = gated(&w, "triage");
    let nobody = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = w.bare_command(args);
        c.env("PLEDGER_CONFIG_DIR", nobody.path().join("config"))
            .env("HOME", nobody.path())
            .env_remove("USER")
            .env_remove("LOGNAME");
        Run::from_output(c.output().expect("pledger runs"))
    };
    let reads: [&[&str]; 15] = [
        &["prompt", "list"],
        &["prompt", "show", "triage"],
        &["prompt", "history", "triage"],
        &["prompt", "diff", "triage", &p.v1, &p.v2],
        &["release", "show", &p.release],
        &["release", "list"],
        &["resolve", "triage", "--unit", "user-1"],
        &["audit", "log", "triage"],
        &["audit", "verify"],
        &["audit", "report", &p.release],
        &["regressions", "list", "triage"],
        &["windows", "show"],
        &["identity", "list"],
        &["digest"],
        &["digest", "--json"],
    ];
    for args in reads {
        let r = run(args);
        assert_eq!(
            r.code,
            0,
            "`pledger {}` needs no identity: {r:?}",
            args.join(" ")
        );
    }
    let events = w.count("triage", "release.review_submitted");
    let write = run(&[
        "release",
        "review",
        &p.release,
        "--layer",
        "product",
        "--approve",
    ]);
    assert_eq!(write.code, 2, "{write:?}");
    assert!(write.stderr.contains("who is signing?"), "{}", write.stderr);
    assert_eq!(w.count("triage", "release.review_submitted"), events);
}
