//! The notifier: delivers notifications of recorded events (failed gates, freezes, rollbacks,
//! completions, the scheduler's notices) to the webhooks on the ledger.
//!
//! - **What it reads.** The ledger through its own durable consumer; a family is read (and
//!   verified) only when a batch brings an event of a kind that notifies, so a forged
//!   `release.rollout_frozen` published by hand notifies nobody.
//! - **The queue.** Each (event, webhook) delivery is queued in the worker's sled store in the
//!   same transaction as the stream sequence that brought it, so a crash neither loses nor
//!   doubles one; the queue is per worker replica and survives restarts.
//! - **Attempts.** Each webhook gets its notifications one at a time, in ledger order (the
//!   next waits until the one before is delivered or given up); webhooks are served
//!   concurrently (at most [`MAX_IN_FLIGHT`] attempts at once, each bounded by
//!   [`ATTEMPT_TIMEOUT`]) while the worker keeps reading the ledger: a slow or dead receiver
//!   delays only its own deliveries. Failures are tried again by the core's
//!   [`RetryPolicy`]; a refusal, or a day of failures, dead-letters the delivery.
//! - **Across replicas.** Before each attempt a replica claims the delivery in the
//!   `pledger_notify` KV bucket (create-if-absent, compare-and-set on renewal); a delivery
//!   marked delivered there is dropped by every other replica. Exactly once in the common
//!   case, at least once always: a replica that dies after sending and before marking leaves
//!   a claim that goes stale, and another replica sends again with the same
//!   `Idempotency-Key`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use hmac::Mac;
use pledger_core::names::{notification_claim_key, NOTIFY_CLAIMS_BUCKET};
use pledger_core::notify::{
    claim_step, claim_until, deliveries_for, AfterAttempt, Attempt, Claim, ClaimStep, Delivery,
    NotifyOn, RetryPolicy, Subscriptions, UrlSource, Webhook,
};
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument};

use super::{stopping, touched_prompts, Batches, Shutdown, WorkerContext, WorkerError};
use crate::error::InfraError;
use crate::ledger::{LEDGER_STREAM, LEDGER_SUBJECTS, NOTIFICATIONS_SUBJECT, ROSTER_SUBJECT};

const SOURCE: &str = LEDGER_STREAM;
/// Queued deliveries: `queue/<webhook>/<sequence, 20 digits>`.
const QUEUE_PREFIX: &str = "queue/";
/// Per prompt, the last ledger sequence whose events were turned into deliveries.
const THROUGH_PREFIX: &str = "through/";

/// Most deliveries attempted at once.
pub const MAX_IN_FLIGHT: usize = 8;
/// How long one attempt may take (connect, send, the receiver's answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events older than this when the notifier first sees them are not notified (a notifier
/// started on an old ledger, or rebuilding its store, does not page anyone about last
/// month); they are counted as `dropped`.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(24 * 3600);
/// How soon a delivery another replica holds is looked at again.
pub const WAIT_LOOK_AGAIN: Duration = Duration::from_secs(5);
/// How long the claims bucket keeps an entry: longer than any delivery is retried.
pub const CLAIM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Creates the claims bucket if it is missing (`pledger init`).
pub(crate) async fn ensure_claims_bucket(
    js: &jetstream::Context,
    num_replicas: usize,
) -> Result<kv::Store, InfraError> {
    match js.get_key_value(NOTIFY_CLAIMS_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: NOTIFY_CLAIMS_BUCKET.to_string(),
                description:
                    "Prompt Ledger: which notifier replica sends, or sent, each webhook delivery"
                        .into(),
                history: 1,
                max_age: CLAIM_RETENTION,
                storage: jetstream::stream::StorageType::File,
                num_replicas,
                ..Default::default()
            })
            .await
            .map_err(InfraError::stream_setup),
    }
}

fn queue_key(d: &Delivery) -> String {
    format!("{QUEUE_PREFIX}{}/{:020}", d.webhook, d.sequence)
}

fn through_key(prompt: &pledger_core::PromptName) -> String {
    format!("{THROUGH_PREFIX}{prompt}")
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How an attempt (or a look at its claim) ended.
enum Settled {
    Delivered {
        status: u16,
    },
    Retry {
        at_ms: u64,
        error: String,
    },
    GaveUp {
        error: String,
    },
    /// Done by another replica.
    Dropped {
        reason: String,
    },
    /// Another replica holds the claim: look again then.
    Wait {
        until_ms: u64,
    },
}

pub async fn run(ctx: WorkerContext, mut shutdown: Shutdown) -> Result<(), WorkerError> {
    let span = info_span!("worker", kind = "notifier", replica = %ctx.replica);
    async move {
        let js = ctx.ledger.jetstream();
        let claims = js.get_key_value(NOTIFY_CLAIMS_BUCKET).await.map_err(|e| {
            WorkerError::Config(format!(
                "the bucket {NOTIFY_CLAIMS_BUCKET} is missing ({e}): run `pledger init` (or `pledger up`) with this version"
            ))
        })?;
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WorkerError::Config(format!("building the HTTP client: {e}")))?;
        let consumer = ctx.consumer(LEDGER_STREAM, LEDGER_SUBJECTS).await?;
        let mut batches = Batches::new(&consumer).await?;
        let mut in_flight: JoinSet<(String, Delivery, Settled)> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let policy = RetryPolicy::default();
        info!("notifier running");
        let (mut subscriptions, _, _) = ctx.ledger.notifications().await?;
        while !stopping(&shutdown) {
            let next_due =
                dispatch(&ctx, &subscriptions, &claims, &http, &mut in_flight, &mut busy, &policy)?;
            let wait = next_due
                .map(|at| Duration::from_millis(at.saturating_sub(wall_ms())))
                .unwrap_or(Duration::from_millis(250))
                .clamp(Duration::from_millis(5), Duration::from_millis(250));
            tokio::select! {
                batch = batches.next(wait) => {
                    let batch = batch?;
                    if !batch.is_empty() {
                        // The webhooks are read again when they (or the keys that sign them)
                        // may have changed.
                        if batch.iter().any(|m| {
                            m.subject.as_str() == NOTIFICATIONS_SUBJECT
                                || m.subject.as_str() == ROSTER_SUBJECT
                        }) {
                            subscriptions = ctx.ledger.notifications().await?.0;
                        }
                        enqueue(&ctx, &subscriptions, &batch).await?;
                        ctx.ack(&batch).await?;
                    }
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let (key, delivery, settled) = done.map_err(|e| WorkerError::Config(format!("a delivery task failed: {e}")))?;
                    busy.remove(&key);
                    settle(&ctx, &key, delivery, settled).await?;
                }
                _ = shutdown.changed() => break,
            }
        }
        // Attempts under way finish (each is bounded) so that their results are recorded.
        while let Ok(Some(done)) =
            tokio::time::timeout(ATTEMPT_TIMEOUT, in_flight.join_next()).await
        {
            if let Ok((key, delivery, settled)) = done {
                settle(&ctx, &key, delivery, settled).await?;
            }
        }
        info!("notifier stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Turns a ledger batch into queued deliveries, committed with the batch's last sequence.
/// `known` is the webhooks as of this batch (read again whenever a batch changes them).
async fn enqueue(
    ctx: &WorkerContext,
    known: &Subscriptions,
    batch: &[jetstream::Message],
) -> Result<(), WorkerError> {
    let applied = ctx.store.applied_sequence(SOURCE)?;
    let (prompts, last) = touched_prompts(batch, applied, |e| NotifyOn::relevant_kind(e.kind()))?;
    let mut queued = Vec::new();
    let mut through = Vec::new();
    // With no webhook nothing is read (a ledger without webhooks costs the notifier its
    // consumer and nothing more), and nothing moves: a family read would move this process's
    // in-memory snapshot past events that a webhook added later must still hear of.
    if !prompts.is_empty() && !known.webhooks.is_empty() {
        let mut families = Vec::new();
        for prompt in &prompts {
            families.push((prompt, ctx.load(prompt).await?));
        }
        // Read after the families: every webhook added before one of their events is known.
        let (subscriptions, _, _) = ctx.ledger.notifications().await?;
        let now = crate::ledger::now();
        for (prompt, family) in families {
            let from: u64 = ctx.store.get(&through_key(prompt))?.unwrap_or(0);
            let mut upto = from;
            for r in family.events.iter().filter(|r| r.sequence > from) {
                upto = upto.max(r.sequence);
                let age = now.unix_millis() - r.envelope.occurred_at.unix_millis();
                let new = deliveries_for(&subscriptions, &r.envelope, r.sequence, wall_ms());
                if !new.is_empty() && age > MAX_EVENT_AGE.as_millis() as i64 {
                    for d in &new {
                        warn!(webhook = %d.webhook, event = %d.event_id, "not notified: the event is older than a day");
                        crate::metrics::global().notification(&d.webhook, "dropped");
                    }
                    continue;
                }
                queued.extend(new);
            }
            through.push((through_key(prompt), upto));
        }
    }
    ctx.store.apply(SOURCE, last, |tx| {
        for d in &queued {
            tx.put(&queue_key(d), d)?;
        }
        for (key, upto) in &through {
            tx.put(key, upto)?;
        }
        Ok(())
    })?;
    for d in &queued {
        info!(webhook = %d.webhook, event = %d.event_id, on = d.on.name(), release = %d.release, "notification queued");
    }
    Ok(())
}

/// Starts the deliveries that are due; returns when the next one not started is due.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    ctx: &WorkerContext,
    subscriptions: &Subscriptions,
    claims: &kv::Store,
    http: &reqwest::Client,
    in_flight: &mut JoinSet<(String, Delivery, Settled)>,
    busy: &mut HashSet<String>,
    policy: &RetryPolicy,
) -> Result<Option<u64>, WorkerError> {
    let now = wall_ms();
    let mut next_due: Option<u64> = None;
    // The queue in key order: by webhook, then by ledger sequence. Only each webhook's first
    // delivery is attempted, so a receiver gets its notifications in the order of the ledger.
    let mut heads: HashSet<String> = HashSet::new();
    for d in ctx.store.scan_prefix::<Delivery>(QUEUE_PREFIX)? {
        let key = queue_key(&d);
        let Some(subscribed) = subscriptions.webhooks.get(&d.webhook) else {
            if !busy.contains(&key) {
                info!(webhook = %d.webhook, event = %d.event_id, "dropped: the webhook was removed");
                ctx.store.remove(&key)?;
                crate::metrics::global().notification(&d.webhook, "dropped");
            }
            continue;
        };
        if !heads.insert(d.webhook.clone()) || busy.contains(&key) {
            continue;
        }
        if d.next_at_ms > now {
            next_due = Some(next_due.map_or(d.next_at_ms, |n| n.min(d.next_at_ms)));
            continue;
        }
        if in_flight.len() >= MAX_IN_FLIGHT {
            // Due, but every slot is taken: the attempt that finishes first wakes the loop.
            continue;
        }
        busy.insert(key.clone());
        let (claims, http, policy) = (claims.clone(), http.clone(), policy.clone());
        let (webhook, me) = (subscribed.webhook.clone(), ctx.replica.clone());
        in_flight.spawn(async move {
            let (d, settled) = attempt(&claims, &http, &webhook, d, &me, &policy).await;
            (key, d, settled)
        });
    }
    Ok(next_due)
}

/// Claims a delivery, sends it once, and records the result on the claim.
async fn attempt(
    claims: &kv::Store,
    http: &reqwest::Client,
    webhook: &Webhook,
    mut d: Delivery,
    me: &str,
    policy: &RetryPolicy,
) -> (Delivery, Settled) {
    let key = notification_claim_key(&d.webhook, &d.event_id);
    let now = wall_ms();
    let retry_soon = |why: String| {
        Settled::Wait {
            until_ms: wall_ms() + 1000,
        }
        .with_log(&why)
    };
    // 1. The claim.
    let entry = match claims.entry(&key).await {
        Ok(e) => e.filter(|e| e.operation == kv::Operation::Put),
        Err(e) => return (d, retry_soon(format!("reading claim {key}: {e}"))),
    };
    let current: Option<Claim> = entry
        .as_ref()
        .and_then(|e| serde_json::from_slice(&e.value).ok());
    // An entry that is not a claim (written by hand, or by something else) counts as stale.
    let step = match (&entry, &current) {
        (Some(_), None) => ClaimStep::Renew,
        _ => claim_step(current.as_ref(), me, now),
    };
    let hold = encode(&claim_until(me, now + ATTEMPT_TIMEOUT.as_millis() as u64));
    let revision = match step {
        ClaimStep::Drop => {
            let reason = match current {
                Some(Claim::Delivered { by, .. }) => format!("delivered by replica {by}"),
                Some(Claim::GaveUp { by, .. }) => format!("given up by replica {by}"),
                _ => "done elsewhere".to_string(),
            };
            return (d, Settled::Dropped { reason });
        }
        // Looked at again within a few seconds, so that a delivery done elsewhere leaves this
        // queue soon (and one given up elsewhere is not retried here).
        ClaimStep::Wait { until_ms } => {
            let until_ms = until_ms.min(now + WAIT_LOOK_AGAIN.as_millis() as u64);
            return (d, Settled::Wait { until_ms });
        }
        ClaimStep::Take => claims
            .create(&key, hold.into())
            .await
            .map_err(|e| e.to_string()),
        ClaimStep::Renew => {
            let revision = entry.as_ref().map(|e| e.revision).unwrap_or(0);
            claims
                .update(&key, hold.into(), revision)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let revision = match revision {
        Ok(r) => r,
        // Another replica claimed it a moment ago: its claim is read on the next look.
        Err(e) => return (d, retry_soon(format!("claiming {key}: {e}"))),
    };
    // 2. The attempt.
    d.attempts += 1;
    let result = send(http, webhook, &d).await;
    let after = policy.after(&d, &result, wall_ms());
    // 3. The claim says what happened.
    let (mark, settled) = match after {
        AfterAttempt::Delivered => {
            let status = match result {
                Attempt::Status { code, .. } => code,
                Attempt::NoResponse(_) => 0,
            };
            (
                Claim::Delivered {
                    by: me.to_string(),
                    at_ms: wall_ms(),
                },
                Settled::Delivered { status },
            )
        }
        AfterAttempt::Retry { at_ms, error } => {
            (claim_until(me, at_ms), Settled::Retry { at_ms, error })
        }
        AfterAttempt::GiveUp { error } => (
            Claim::GaveUp {
                by: me.to_string(),
                at_ms: wall_ms(),
            },
            Settled::GaveUp { error },
        ),
    };
    if let Err(e) = claims.update(&key, encode(&mark).into(), revision).await {
        warn!(claim = %key, "recording the delivery's result on its claim: {e}");
    }
    (d, settled)
}

impl Settled {
    fn with_log(self, why: &str) -> Settled {
        warn!("{why}; looking again in a second");
        self
    }
}

fn encode(claim: &Claim) -> Vec<u8> {
    serde_json::to_vec(claim).expect("a claim serializes")
}

/// One POST of a delivery's body to its webhook.
async fn send(http: &reqwest::Client, webhook: &Webhook, d: &Delivery) -> Attempt {
    let url = match webhook.url_source() {
        UrlSource::Literal(url) => url.to_string(),
        UrlSource::Env(name) => match std::env::var(name) {
            Ok(url) if pledger_core::notify::check_http_url(&url).is_ok() => url,
            Ok(_) => {
                return Attempt::NoResponse(format!(
                    "the environment variable {name} does not hold an http(s) URL"
                ))
            }
            Err(_) => {
                return Attempt::NoResponse(format!(
                    "the environment variable {name} (the webhook's URL) is not set"
                ))
            }
        },
    };
    let mut request = http
        .post(&url)
        .header("content-type", "application/json")
        .header("idempotency-key", d.idempotency_key())
        .header("x-pledger-event", d.on.name())
        .header("x-pledger-delivery-attempt", d.attempts.to_string());
    if let Some(name) = &webhook.secret_env {
        let Ok(secret) = std::env::var(name) else {
            return Attempt::NoResponse(format!(
                "the environment variable {name} (the webhook's secret) is not set"
            ));
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(d.body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        request = request.header("x-pledger-signature", format!("sha256={hex}"));
    }
    match request.body(d.body.clone()).send().await {
        Ok(response) => Attempt::Status {
            code: response.status().as_u16(),
            retry_after: response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        // Without the URL: it may hold a secret.
        Err(e) => Attempt::NoResponse(e.without_url().to_string()),
    }
}

/// Records what an attempt did in the queue.
async fn settle(
    ctx: &WorkerContext,
    key: &str,
    mut d: Delivery,
    settled: Settled,
) -> Result<(), WorkerError> {
    let metrics = crate::metrics::global();
    match settled {
        Settled::Delivered { status } => {
            info!(webhook = %d.webhook, event = %d.event_id, attempts = d.attempts, status, "notification delivered");
            ctx.store.remove(key)?;
            metrics.notification(&d.webhook, "delivered");
        }
        Settled::Retry { at_ms, error } => {
            warn!(webhook = %d.webhook, event = %d.event_id, attempts = d.attempts, "delivery failed ({error}); trying again in {} ms", at_ms.saturating_sub(wall_ms()));
            d.next_at_ms = at_ms;
            d.last_error = Some(error);
            ctx.store.put(key, &d)?;
            metrics.notification(&d.webhook, "retried");
        }
        Settled::GaveUp { error } => {
            error!(webhook = %d.webhook, event = %d.event_id, attempts = d.attempts, "delivery given up and dead-lettered: {error}");
            ctx.store.remove(key)?;
            ctx.dead_letter(
                &format!("notify.{}", d.webhook),
                d.sequence,
                &format!(
                    "webhook `{}` not notified of {} after {} attempt(s): {error}",
                    d.webhook, d.event_id, d.attempts
                ),
                d.body.as_bytes(),
            )
            .await?;
            metrics.notification(&d.webhook, "gave_up");
        }
        Settled::Dropped { reason } => {
            info!(webhook = %d.webhook, event = %d.event_id, "not sent here: {reason}");
            ctx.store.remove(key)?;
            metrics.notification(&d.webhook, "dropped");
        }
        Settled::Wait { until_ms } => {
            d.next_at_ms = until_ms;
            ctx.store.put(key, &d)?;
        }
    }
    ctx.store.flush().await?;
    Ok(())
}
