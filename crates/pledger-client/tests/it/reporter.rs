//! The outcome reporter: JSON arrays on the outcome stream, split under max_payload, drops
//! counted, `report` never blocking.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use pledger_client::{Feedback, FeedbackTag, OutcomeReporter, ReporterOptions};
use pledger_core::outcome::{parse_outcome_message, Outcome};
use pledger_core::routing::Arm;

use crate::support::*;

fn outcome(prompt_name: &str, i: usize) -> Outcome {
    Outcome {
        prompt: prompt(prompt_name),
        version: artifact("a").version_id(),
        release: None,
        arm: Some(if i % 2 == 0 {
            Arm::Baseline
        } else {
            Arm::Candidate
        }),
        stage_visit: None,
        unit: Some(format!("user-{i}")),
        attrs: [("geo".to_string(), "eu".to_string())].into(),
        request_id: format!("req-{i}"),
        fallback: i % 7 == 0,
        escalated: false,
        manually_corrected: false,
        refusal: false,
        latency_ms: 120.5,
        tokens_in: 300 + i as u64,
        tokens_out: 80,
        cost_usd: Some(0.0012),
        // Varied sizes, so batches split at different counts.
        feedback: (i % 3 == 0).then(|| Feedback {
            tag: FeedbackTag::ExcessiveVerbosity,
            example: "x".repeat(i % 200),
        }),
    }
}

/// One message read back from `PLEDGER_OUTCOMES`.
struct Received {
    subject: String,
    payload: bytes::Bytes,
    outcomes: Vec<Outcome>,
}

/// Reads messages from the outcome stream until `expected` outcomes arrived (waiting for them
/// as they are published), then checks the stream holds nothing more.
async fn read_outcomes(js: &jetstream::Context, expected: usize) -> Vec<Received> {
    let stream = js
        .get_stream(pledger_core::names::OUTCOMES_STREAM)
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut received = Vec::new();
    let mut count = 0;
    while count < expected {
        let message = within("outcome messages", messages.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.payload.first(), Some(&b'['), "a JSON array");
        let outcomes: Vec<Outcome> = parse_outcome_message(&message.payload)
            .into_iter()
            .map(|o| o.expect("every element is a valid outcome"))
            .collect();
        count += outcomes.len();
        received.push(Received {
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            outcomes,
        });
    }
    assert_eq!(count, expected);
    let mut stream = stream;
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages as usize,
        received.len(),
        "no further messages"
    );
    received
}

#[tokio::test]
async fn outcomes_arrive_on_the_stream_as_json_arrays_per_prompt() {
    let env = env().await;
    let reporter = OutcomeReporter::start(env.client.clone(), ReporterOptions::default());
    let sent: Vec<Outcome> = (0..30)
        .map(|i| {
            outcome(
                if i % 3 == 0 {
                    "faq-answer"
                } else {
                    "support-triage"
                },
                i,
            )
        })
        .collect();
    for o in &sent {
        assert!(reporter.report(o.clone()));
    }
    reporter.flush().await.unwrap();

    let received = read_outcomes(&env.js, sent.len()).await;
    assert_eq!(received.len(), 2, "one message per prompt");
    for message in &received {
        let prompt_name = message.subject.rsplit('.').next().unwrap();
        assert!(message
            .outcomes
            .iter()
            .all(|o| o.prompt.as_str() == prompt_name));
        let expected: Vec<&Outcome> = sent
            .iter()
            .filter(|o| o.prompt.as_str() == prompt_name)
            .collect();
        assert_eq!(
            message.outcomes.iter().collect::<Vec<_>>(),
            expected,
            "in order, intact"
        );
    }
    let stats = reporter.stats();
    assert_eq!(
        (
            stats.reported,
            stats.published_outcomes,
            stats.published_messages
        ),
        (30, 30, 2)
    );
    assert_eq!(
        stats.publish_failures + stats.dropped_full + stats.dropped_too_large,
        0
    );
}

#[tokio::test]
async fn batches_split_so_no_message_exceeds_max_payload() {
    let env = env().await;
    let limit = 1_500;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            max_payload: Some(limit),
            ..Default::default()
        },
    );
    let total = 300;
    for i in 0..total {
        assert!(reporter.report(outcome(if i % 5 == 0 { "a" } else { "b" }, i)));
    }
    reporter.flush().await.unwrap();

    let received = read_outcomes(&env.js, total).await;
    assert!(
        received.len() > 10,
        "split into many messages: {}",
        received.len()
    );
    for message in &received {
        assert!(
            message.payload.len() <= limit,
            "{} > {limit}",
            message.payload.len()
        );
    }
    // Filled close to the limit: splitting is not wasteful.
    let fullest = received.iter().map(|m| m.payload.len()).max().unwrap();
    assert!(fullest > limit * 3 / 4, "{fullest}");
    let mut request_ids: Vec<String> = received
        .iter()
        .flat_map(|m| m.outcomes.iter().map(|o| o.request_id.clone()))
        .collect();
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), total, "each outcome exactly once");
    let stats = reporter.stats();
    assert_eq!(stats.published_outcomes, total as u64);
    assert_eq!(stats.published_messages, received.len() as u64);
}

#[tokio::test]
async fn max_batch_bounds_the_outcomes_per_message() {
    let env = env().await;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            max_batch: 7,
            ..Default::default()
        },
    );
    for i in 0..50 {
        reporter.report(outcome("p", i));
    }
    reporter.flush().await.unwrap();
    let received = read_outcomes(&env.js, 50).await;
    assert!(received.iter().all(|m| m.outcomes.len() <= 7));
    assert_eq!(received.len(), 8);
}

#[tokio::test]
async fn an_outcome_larger_than_the_limit_alone_is_dropped_and_counted() {
    let env = env().await;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            max_payload: Some(1_000),
            ..Default::default()
        },
    );
    let mut big = outcome("p", 1);
    big.feedback = Some(Feedback {
        tag: FeedbackTag::HallucinatedField,
        example: "y".repeat(2_000),
    });
    let mut invalid = outcome("p", 2);
    invalid.latency_ms = -1.0;
    reporter.report(outcome("p", 3));
    reporter.report(big);
    reporter.report(invalid);
    reporter.report(outcome("p", 4));
    reporter.flush().await.unwrap();
    let received = read_outcomes(&env.js, 2).await;
    assert_eq!(received.len(), 1);
    let stats = reporter.stats();
    assert_eq!(stats.reported, 4);
    assert_eq!(stats.dropped_too_large, 1);
    assert_eq!(stats.dropped_invalid, 1);
    assert_eq!(stats.published_outcomes, 2);
}

// A current-thread runtime: the background task cannot run while the test reports in a loop,
// so exactly `capacity` outcomes fit and the rest are dropped, deterministically.
#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let env = env().await;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            capacity: 4,
            ..Default::default()
        },
    );
    let outcomes: Vec<Outcome> = (0..1_000).map(|i| outcome("p", i)).collect();
    let started = Instant::now();
    let accepted = outcomes
        .into_iter()
        .filter(|o| reporter.report(o.clone()))
        .count();
    let elapsed = started.elapsed();
    assert_eq!(accepted, 4);
    assert!(
        elapsed < Duration::from_millis(500),
        "report never waits: {elapsed:?}"
    );
    let stats = reporter.stats();
    assert_eq!((stats.reported, stats.dropped_full), (4, 996));
    reporter.flush().await.unwrap();
    read_outcomes(&env.js, 4).await;
    assert_eq!(reporter.stats().published_outcomes, 4);
}

#[tokio::test]
async fn max_delay_publishes_without_a_flush() {
    let env = env().await;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            max_delay: Duration::from_millis(20),
            ..Default::default()
        },
    );
    for i in 0..3 {
        reporter.report(outcome("p", i));
    }
    // Nobody flushes: the messages arrive on their own.
    read_outcomes(&env.js, 3).await;
}

#[tokio::test]
async fn report_stays_non_blocking_while_the_server_is_down() {
    let mut env = env().await;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            capacity: 100,
            max_delay: Duration::from_millis(10),
            publish_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    );
    env.server.stop();
    let outcomes: Vec<Outcome> = (0..5_000).map(|i| outcome("p", i)).collect();
    let started = Instant::now();
    for o in outcomes {
        reporter.report(o);
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    within("the flush", reporter.flush()).await.unwrap();
    let stats = reporter.stats();
    assert_eq!(stats.published_outcomes, 0);
    assert!(stats.publish_failures > 0, "{stats:?}");
    assert_eq!(stats.reported + stats.dropped_full, 5_000);
    assert_eq!(stats.reported, stats.failed_outcomes, "{stats:?}");
}

#[tokio::test]
async fn shutdown_publishes_what_is_queued_and_refuses_later_reports() {
    let env = env().await;
    let reporter = OutcomeReporter::start(
        env.client.clone(),
        ReporterOptions {
            max_delay: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    for i in 0..10 {
        reporter.report(outcome("p", i));
    }
    reporter.shutdown().await;
    assert_eq!(reporter.stats().published_outcomes, 10);
    assert!(!reporter.report(outcome("p", 11)));
    assert_eq!(reporter.stats().dropped_closed, 1);
    assert!(reporter.flush().await.is_err());
    reporter.shutdown().await;
    read_outcomes(&env.js, 10).await;
}
