use async_nats::jetstream::stream;
use pledger_core::decide::Rule;
use pledger_core::event::Event;
use pledger_core::Command;
use pledger_infra::ledger::{envelope_for, family_filter, now, ExecuteError, LEDGER_STREAM};

use pledger_core::verify::seal;
use pledger_core::Actor;

use crate::support::*;

fn actor(name: &str) -> Actor {
    Actor::parse(name).unwrap()
}

#[tokio::test]
async fn ensure_is_idempotent_and_the_stream_denies_delete_and_purge() {
    let h = harness().await;
    h.ledger.ensure().await.expect("second ensure succeeds");
    let mut s = h
        .ledger
        .jetstream()
        .get_stream(LEDGER_STREAM)
        .await
        .unwrap();
    let info = s.info().await.unwrap();
    assert!(info.config.deny_delete && info.config.deny_purge);
    assert_eq!(info.config.storage, stream::StorageType::File);
}

#[tokio::test]
async fn a_stale_expected_sequence_loses_and_the_ledger_is_unchanged() {
    let h = harness().await;
    let p = prompt("triage");
    let owner = |_: &_| {
        Ok(Command::RegisterPrompt {
            owner: "support".into(),
        })
    };
    h.ledger
        .execute(&p, &*signer("ana"), "c1", owner)
        .await
        .unwrap();
    let family = h.ledger.load(&p).await.unwrap();
    assert_eq!(family.events.len(), 1);

    // Two writers both saw the registration; the first append wins, the second loses.
    let expected = family.last_sequence;
    let publish = |text: &str| {
        let envelope = envelope_for(
            Event::VersionPublished(pledger_core::event::VersionPublished {
                prompt: p.clone(),
                version: artifact(text).version_id(),
                artifact: artifact(text),
            }),
            &actor("ana"),
            now(),
            "c2",
            None,
        );
        seal(envelope, family.verifier.family_head(&p), &*signer("ana")).unwrap()
    };
    let first = h
        .ledger
        .append(&p, expected, &publish("one"))
        .await
        .unwrap();
    let second = h
        .ledger
        .append(&p, expected, &publish("two"))
        .await
        .unwrap();
    assert!(first.is_some(), "the first writer wins");
    assert_eq!(second, None, "the second writer is told the family moved");
    let after = h.ledger.load(&p).await.unwrap();
    assert_eq!(after.events.len(), 2);
    assert_eq!(after.state.versions.len(), 1);
}

#[tokio::test]
async fn the_family_check_covers_release_subjects_too() {
    let h = harness().await;
    let p = prompt("triage");
    h.ledger
        .execute(&p, &*signer("ana"), "c", |_| {
            Ok(Command::RegisterPrompt {
                owner: "support".into(),
            })
        })
        .await
        .unwrap();
    let v = artifact("hello").version_id();
    h.ledger
        .execute(&p, &*signer("ana"), "c", |_| {
            Ok(Command::PublishVersion {
                artifact: artifact("hello"),
            })
        })
        .await
        .unwrap();
    let seen = h.ledger.load(&p).await.unwrap().last_sequence;
    // A proposal lands on a release subject...
    h.ledger
        .execute(&p, &*signer("ana"), "c", |_| {
            Ok(Command::ProposeChange {
                candidate: v.clone(),
                rationale: "r".into(),
                expected_changes: vec![],
            })
        })
        .await
        .unwrap();
    // ...and an append to the prompt subject that expected the older family sequence loses.
    let adopt = envelope_for(
        Event::VersionAdopted(pledger_core::event::VersionAdopted {
            prompt: p.clone(),
            version: v.clone(),
            previous_stable: None,
            reason: "x".into(),
        }),
        &actor("ana"),
        now(),
        "c",
        None,
    );
    let adopt = seal(adopt, None, &*signer("ana")).unwrap();
    assert_eq!(h.ledger.append(&p, seen, &adopt).await.unwrap(), None);
    // Another prompt's family is independent.
    let other = prompt("triage-eu");
    h.ledger
        .execute(&other, &*signer("ana"), "c", |_| {
            Ok(Command::RegisterPrompt {
                owner: "support".into(),
            })
        })
        .await
        .unwrap();
    assert_eq!(h.ledger.load(&other).await.unwrap().events.len(), 1);
    assert!(family_filter(&p).ends_with(".>"));
}

#[tokio::test]
async fn racing_executors_of_one_idempotent_command_record_it_once() {
    let h = harness().await;
    let p = prompt("triage");
    h.ledger
        .execute(&p, &*signer("ana"), "c", |_| {
            Ok(Command::RegisterPrompt {
                owner: "support".into(),
            })
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let ledger = h.ledger.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .execute(&p, &*signer("ana"), "c", |_| {
                    Ok(Command::PublishVersion {
                        artifact: artifact("same"),
                    })
                })
                .await
        }));
    }
    let mut recorded = 0;
    for t in tasks {
        recorded += t.await.unwrap().unwrap().recorded.len();
    }
    assert_eq!(recorded, 1, "exactly one publish is recorded");
    assert_eq!(h.ledger.load(&p).await.unwrap().events.len(), 2);
}

#[tokio::test]
async fn a_rejection_records_nothing() {
    let h = harness().await;
    let p = prompt("triage");
    let err = h
        .ledger
        .execute(&p, &*signer("ana"), "c", |_| {
            Ok(Command::PublishVersion {
                artifact: artifact("x"),
            })
        })
        .await
        .unwrap_err();
    match err {
        ExecuteError::Rejected(r) => assert_eq!(r.rule, Rule::UnknownPrompt),
        other => panic!("expected a rejection, got {other}"),
    }
    assert_eq!(h.ledger.load(&p).await.unwrap().events.len(), 0);
}

#[tokio::test]
async fn a_server_that_is_down_is_reported_as_unreachable() {
    let mut h = harness().await;
    let url = h.server.url();
    h.server.stop();
    let err = pledger_infra::connect(&url).await.unwrap_err();
    assert!(matches!(err, pledger_infra::InfraError::Unreachable { .. }));
    assert!(err.to_string().contains("pledger up"), "{err}");
}

#[test]
fn servers_older_than_2_11_are_refused() {
    use pledger_infra::ledger::server_version_supported;
    for (version, ok) in [
        ("2.15.1", true),
        ("2.11.0", true),
        ("v2.11.0-RC.1", true),
        ("3.0.0", true),
        ("2.10.22", false),
        ("2.9.10", false),
        ("garbage", false),
    ] {
        assert_eq!(server_version_supported(version), ok, "{version}");
    }
}
