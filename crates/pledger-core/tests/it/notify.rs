//! Notifications: which events reach which webhooks, their bodies, retries and claims.

use std::collections::BTreeSet;
use std::time::Duration;

use pledger_core::event::{Envelope, Event, EventMeta, GateEvidence, RolloutFrozen};
use pledger_core::identity::Role;
use pledger_core::notify::*;
use pledger_core::Rule;

use crate::support::*;

fn hook(id: &str, events: &[NotifyOn], format: WebhookFormat) -> Webhook {
    Webhook {
        id: id.into(),
        url: format!("https://hooks.example.com/{id}"),
        events: events.iter().copied().collect(),
        format,
        secret_env: None,
    }
}

fn envelope(event: Event, id: &str) -> Envelope {
    Envelope::new(
        event,
        EventMeta {
            event_id: id.into(),
            occurred_at: ts("2026-11-27T03:12:00Z"),
            actor: actor("canary-monitor"),
            causation_id: None,
            correlation_id: "c-1".into(),
        },
    )
}

fn frozen(id: &str) -> Envelope {
    envelope(
        Event::RolloutFrozen(RolloutFrozen {
            release: rid(1),
            stage: "canary".into(),
            reason: "guardrail `escalation_rate` breached".into(),
            evidence: None,
        }),
        id,
    )
}

fn gate_decided(passed: bool) -> Envelope {
    envelope(
        Event::GateDecided(pledger_core::event::GateDecided {
            release: rid(1),
            passed,
            evidence: GateEvidence {
                candidate: vid(2),
                bundle_digest: "sha256:00".into(),
                tradeoff_accepted: false,
                policy_digest: "sha256:11".into(),
            },
            policy: Default::default(),
            checks: Vec::new(),
            regressions: Vec::new(),
        }),
        "gate-1",
    )
}

fn subscriptions(sets: &[(u64, Vec<Webhook>)]) -> Subscriptions {
    let mut s = Subscriptions::default();
    for (seq, webhooks) in sets {
        s.apply(
            *seq,
            &NotificationsSet {
                webhooks: webhooks.clone(),
            },
        );
    }
    s
}

#[test]
fn event_lists_parse_by_name_with_all_and_refuse_unknown_names() {
    assert_eq!(
        NotifyOn::parse_list("frozen, rolled-back").unwrap(),
        BTreeSet::from([NotifyOn::Frozen, NotifyOn::RolledBack])
    );
    assert_eq!(NotifyOn::parse_list("all").unwrap().len(), 5);
    let e = NotifyOn::parse_list("frozen,exploded").unwrap_err();
    assert_eq!(e.field, "events");
    assert!(e.message.contains("`exploded`") && e.message.contains("gate_failed"));
    assert!(NotifyOn::parse_list(" , ").is_err());
}

#[test]
fn a_webhook_is_refused_naming_the_field_it_gets_wrong() {
    let ok = hook("ops", &[NotifyOn::Frozen], WebhookFormat::Json);
    assert!(ok.validate().is_ok());
    let cases: Vec<(Webhook, &str)> = vec![
        (
            Webhook {
                id: "Ops".into(),
                ..ok.clone()
            },
            "id",
        ),
        (
            Webhook {
                id: "".into(),
                ..ok.clone()
            },
            "id",
        ),
        (
            Webhook {
                url: "ftp://x".into(),
                ..ok.clone()
            },
            "url",
        ),
        (
            Webhook {
                url: "https://".into(),
                ..ok.clone()
            },
            "url",
        ),
        (
            Webhook {
                url: "https://a b".into(),
                ..ok.clone()
            },
            "url",
        ),
        (
            Webhook {
                url: "env:lower".into(),
                ..ok.clone()
            },
            "url",
        ),
        (
            Webhook {
                events: BTreeSet::new(),
                ..ok.clone()
            },
            "events",
        ),
        (
            Webhook {
                secret_env: Some("1X".into()),
                ..ok.clone()
            },
            "secret_env",
        ),
    ];
    for (w, field) in cases {
        assert_eq!(w.validate().unwrap_err().field, field, "{w:?}");
    }
    let from_env = Webhook {
        url: "env:ONCALL_URL".into(),
        ..ok.clone()
    };
    assert_eq!(from_env.url_source(), UrlSource::Env("ONCALL_URL"));
    assert!(from_env.validate().is_ok());
}

#[test]
fn adding_and_removing_keep_the_set_sorted_and_refuse_a_taken_or_missing_name() {
    let set = NotificationsSet { webhooks: vec![] }
        .with(hook("zeta", &[NotifyOn::Frozen], WebhookFormat::Json))
        .unwrap()
        .with(hook("alpha", &[NotifyOn::Completed], WebhookFormat::Slack))
        .unwrap();
    let ids: Vec<&str> = set.webhooks.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["alpha", "zeta"]);
    assert!(set.validate().is_ok());
    let taken = set
        .with(hook("zeta", &[NotifyOn::Notice], WebhookFormat::Json))
        .unwrap_err();
    assert!(
        taken.message.contains("notify remove zeta"),
        "{}",
        taken.message
    );
    let smaller = set.without("alpha").unwrap();
    assert_eq!(smaller.webhooks.len(), 1);
    assert_eq!(set.without("nope").unwrap_err().field, "id");
    let unsorted = NotificationsSet {
        webhooks: vec![set.webhooks[1].clone(), set.webhooks[0].clone()],
    };
    assert!(unsorted.validate().is_err());
}

#[test]
fn a_webhook_hears_of_events_after_it_was_added_and_of_the_kinds_it_asked_for() {
    let ops = hook("ops", &[NotifyOn::Frozen], WebhookFormat::Json);
    let audit = hook("audit", &[NotifyOn::GateFailed], WebhookFormat::Json);
    // ops added at 10, audit at 20; ops unchanged by the second set keeps 10.
    let subs = subscriptions(&[
        (10, vec![ops.clone()]),
        (20, vec![audit.clone(), ops.clone()]),
    ]);
    assert_eq!(subs.webhooks["ops"].since, 10);
    assert_eq!(subs.webhooks["audit"].since, 20);

    let to = |e: &Envelope, seq: u64| -> Vec<String> {
        deliveries_for(&subs, e, seq, 1_000)
            .into_iter()
            .map(|d| d.webhook)
            .collect()
    };
    assert_eq!(to(&frozen("f-1"), 15), ["ops"]);
    assert!(to(&frozen("f-0"), 10).is_empty(), "history is not notified");
    assert_eq!(to(&gate_decided(false), 25), ["audit"]);
    assert!(to(&gate_decided(false), 19).is_empty());
    assert!(
        to(&gate_decided(true), 30).is_empty(),
        "a passed gate notifies nobody"
    );

    // Changing a webhook restarts its history: it is a new subscription.
    let changed = Webhook {
        events: BTreeSet::from([NotifyOn::Frozen, NotifyOn::Completed]),
        ..ops.clone()
    };
    let subs = subscriptions(&[(10, vec![ops.clone()]), (40, vec![changed])]);
    assert_eq!(subs.webhooks["ops"].since, 40);
    // Removed: nobody hears.
    let subs = subscriptions(&[(10, vec![ops]), (50, vec![])]);
    assert!(deliveries_for(&subs, &frozen("f-2"), 60, 0).is_empty());
}

#[test]
fn the_bodies_carry_the_event_and_say_what_happened() {
    let subs = subscriptions(&[(
        1,
        vec![
            hook("json", &[NotifyOn::Frozen], WebhookFormat::Json),
            hook("slack", &[NotifyOn::Frozen], WebhookFormat::Slack),
        ],
    )]);
    let e = frozen("0193-evt");
    let d = deliveries_for(&subs, &e, 7, 5_000);
    assert_eq!(d.len(), 2);
    let json: serde_json::Value = serde_json::from_str(&d[0].body).unwrap();
    assert_eq!(json["schema"], "pledger.notification.v1");
    assert_eq!(json["event"], "frozen");
    assert_eq!(json["release"], "support-triage-r1");
    assert_eq!(json["sequence"], 7);
    assert_eq!(json["ledger_event"]["kind"], "release.rollout_frozen");
    assert_eq!(json["ledger_event"]["event_id"], "0193-evt");
    let summary = json["summary"].as_str().unwrap();
    assert!(
        summary.contains("frozen at stage `canary` by canary-monitor")
            && summary.contains("escalation_rate"),
        "{summary}"
    );
    let slack: serde_json::Value = serde_json::from_str(&d[1].body).unwrap();
    assert!(slack["text"].as_str().unwrap().contains("[frozen]"));
    assert_eq!(slack["blocks"].as_array().unwrap().len(), 2);
    assert_eq!(d[0].idempotency_key(), "0193-evt/json");
    assert_eq!(
        (d[0].queued_at_ms, d[0].next_at_ms, d[0].attempts),
        (5_000, 5_000, 0)
    );
}

fn delivery(attempts: u32) -> Delivery {
    Delivery {
        webhook: "ops".into(),
        event_id: "e".into(),
        on: NotifyOn::Frozen,
        sequence: 1,
        release: "support-triage-r1".into(),
        body: "{}".into(),
        attempts,
        queued_at_ms: 0,
        next_at_ms: 0,
        last_error: None,
    }
}

fn status(code: u16) -> Attempt {
    Attempt::Status {
        code,
        retry_after: None,
    }
}

#[test]
fn failed_attempts_back_off_doubling_honour_retry_after_and_give_up_at_a_refusal_or_a_day() {
    let p = RetryPolicy::default();
    assert_eq!(
        p.after(&delivery(1), &status(204), 0),
        AfterAttempt::Delivered
    );
    let waits: Vec<u64> = (1..=11)
        .map(|n| match p.after(&delivery(n), &status(503), 0) {
            AfterAttempt::Retry { at_ms, .. } => at_ms / 1000,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    for code in [408, 425, 429, 500] {
        assert!(matches!(
            p.after(&delivery(1), &status(code), 0),
            AfterAttempt::Retry { .. }
        ));
    }
    assert!(matches!(
        p.after(&delivery(1), &Attempt::NoResponse("connection refused".into()), 0),
        AfterAttempt::Retry { ref error, .. } if error == "connection refused"
    ));
    let asked = Attempt::Status {
        code: 429,
        retry_after: Some(Duration::from_secs(120)),
    };
    assert_eq!(
        p.after(&delivery(1), &asked, 1_000),
        AfterAttempt::Retry {
            at_ms: 121_000,
            error: "HTTP 429".into()
        }
    );
    for code in [400, 401, 404, 410] {
        match p.after(&delivery(1), &status(code), 0) {
            AfterAttempt::GiveUp { error } => assert!(error.contains("not retried"), "{error}"),
            other => panic!("{code}: {other:?}"),
        }
    }
    // A day after it was queued, it stops.
    let day = 24 * 3600 * 1000;
    match p.after(&delivery(300), &status(500), day - 1000) {
        AfterAttempt::GiveUp { error } => assert!(error.contains("after 300 attempts over 1d")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_claim_is_taken_when_free_waited_for_while_fresh_and_taken_over_when_stale() {
    assert_eq!(claim_step(None, "a", 0), ClaimStep::Take);
    let held = claim_until("b", 10_000);
    let until = 10_000 + CLAIM_GRACE.as_millis() as u64;
    assert_eq!(
        held,
        Claim::Sending {
            by: "b".into(),
            until_ms: until
        }
    );
    assert_eq!(
        claim_step(Some(&held), "a", 5_000),
        ClaimStep::Wait { until_ms: until }
    );
    assert_eq!(claim_step(Some(&held), "b", 5_000), ClaimStep::Renew);
    assert_eq!(claim_step(Some(&held), "a", until + 1), ClaimStep::Renew);
    let done = Claim::Delivered {
        by: "b".into(),
        at_ms: 1,
    };
    assert_eq!(claim_step(Some(&done), "a", 0), ClaimStep::Drop);
    let gave_up = Claim::GaveUp {
        by: "b".into(),
        at_ms: 1,
    };
    assert_eq!(claim_step(Some(&gave_up), "b", 0), ClaimStep::Drop);
}

#[test]
fn claim_keys_keep_a_uuid_and_hash_anything_else() {
    use pledger_core::names::notification_claim_key;
    let uuid = "0193a5c2-7f00-7abc-8def-0123456789ab";
    assert_eq!(notification_claim_key("ops", uuid), format!("ops.{uuid}"));
    let odd = notification_claim_key("ops", "evt with spaces.and>dots");
    assert!(
        odd.starts_with("ops.sha256-") && odd.len() == "ops.sha256-".len() + 64,
        "{odd}"
    );
}

#[test]
fn only_an_admin_sets_webhooks_and_only_valid_changing_ones() {
    use pledger_core::verify::admit_fleet;
    let set = |webhooks: Vec<Webhook>| Event::NotificationsSet(NotificationsSet { webhooks });
    let one = set(vec![hook("ops", &[NotifyOn::Frozen], WebhookFormat::Json)]);
    let admin = BTreeSet::from([Role::Admin]);
    let manager = BTreeSet::from([Role::ReleaseManager]);
    assert!(admit_fleet(None, &one, &actor("root"), &admin).is_ok());
    assert_eq!(
        admit_fleet(None, &one, &actor("maria"), &manager)
            .unwrap_err()
            .rule,
        Rule::NotPermitted
    );
    assert_eq!(
        admit_fleet(Some(&one), &one, &actor("root"), &admin)
            .unwrap_err()
            .rule,
        Rule::Inadmissible
    );
    let broken = set(vec![Webhook {
        url: "gopher://x".into(),
        ..hook("ops", &[NotifyOn::Frozen], WebhookFormat::Json)
    }]);
    let refused = admit_fleet(None, &broken, &actor("root"), &admin).unwrap_err();
    assert_eq!(refused.rule, Rule::InvalidInput);
    assert!(
        refused.message.contains("webhooks[0].url"),
        "{}",
        refused.message
    );
    // Clearing every webhook is a change.
    assert!(admit_fleet(Some(&one), &set(vec![]), &actor("root"), &admin).is_ok());
}
