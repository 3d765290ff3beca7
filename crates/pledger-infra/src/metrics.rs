//! Prometheus metrics of a process running workers (`--metrics ADDR` on `pledger up` and
//! `pledger worker`): releases and rollouts as the canary monitor projects them, its guardrail
//! judgements, the decisions recorded on the ledger, and each worker's consumer lag and dead
//! letters. Served in the text exposition format (OpenMetrics) by [`serve`] on `/metrics`.
//!
//! Names follow the habits of Flagger (`flagger_canary_status`, `flagger_canary_weight`,
//! `flagger_canary_metric_analysis`) and Argo Rollouts (`rollout_info{phase}`,
//! `rollout_events_total`), with the prefix `pledger_`; they are spelled in
//! `pledger_core::names` (`METRIC_*`) and listed in docs/RUNBOOK.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use pledger_core::event::Event;
use pledger_core::names;
use pledger_core::state::{PromptState, ReleaseStatus};
use pledger_core::workers::canary::{CanaryStatus, RolloutView};
use pledger_core::PromptName;

use crate::ledger::Recorded;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    pub prompt: String,
    pub release: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub prompt: String,
    pub release: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    pub prompt: String,
    pub release: String,
    pub stage: String,
    pub arm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardrailLabels {
    pub prompt: String,
    pub release: String,
    pub guardrail: String,
    pub bound: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardrailArmLabels {
    pub prompt: String,
    pub release: String,
    pub guardrail: String,
    pub bound: String,
    pub arm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub prompt: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromptLabels {
    pub prompt: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
    pub replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub webhook: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub worker: String,
    pub replica: String,
    pub stream: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The series one release has in the canary families, so they go when it ends or moves on.
#[derive(Default)]
struct ReleaseSeries {
    arms: Vec<ArmLabels>,
    guardrails: Vec<GuardrailLabels>,
    guardrail_arms: Vec<GuardrailArmLabels>,
}

/// Every metric family of the process.
pub struct Metrics {
    registry: Registry,
    release_status: Family<ReleaseLabels, Gauge>,
    release_info: Family<PhaseLabels, Gauge>,
    rollout_weight: Family<ReleaseLabels, FloatGauge>,
    rollout_stage: Family<ReleaseLabels, Gauge>,
    samples: Family<ArmLabels, Gauge>,
    guardrail_value: Family<GuardrailArmLabels, FloatGauge>,
    guardrail_limit: Family<GuardrailLabels, FloatGauge>,
    guardrail_statistic: Family<GuardrailLabels, FloatGauge>,
    guardrail_threshold: Family<GuardrailLabels, FloatGauge>,
    guardrail_breached: Family<GuardrailLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    regression_cases: Family<PromptLabels, Counter>,
    dead_letters: Family<WorkerLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    consumer_pending: Family<ConsumerLabels, Gauge>,
    consumer_ack_pending: Family<ConsumerLabels, Gauge>,
    heap: Gauge,
    resident: Gauge,
    /// Per prompt: the release its status and phase series name.
    shown: Mutex<BTreeMap<String, PhaseLabels>>,
    /// Per release: its canary series.
    series: Mutex<BTreeMap<String, ReleaseSeries>>,
    /// Per prompt: the stream sequence up to which its events were counted.
    counted: Mutex<BTreeMap<String, u64>>,
}

/// How the binary counts its heap ([`count_heap_with`]).
static HEAP_READER: OnceLock<fn() -> u64> = OnceLock::new();

/// Has `pledger_process_heap_bytes` read `allocated` (the bytes the binary's allocator has
/// handed out and not taken back); the first call holds.
pub fn count_heap_with(allocated: fn() -> u64) {
    let _ = HEAP_READER.set(allocated);
}

/// The process's VmRSS in bytes (Linux; elsewhere none).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's metrics (one set, whatever runs in it).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// `pledger_release_status`: 0 in progress (proposed, rolling out, paused), 1 completed, 2
/// failed (frozen or rolled back), 3 withdrawn. Flagger's `flagger_canary_status` counts
/// 0 running, 1 successful, 2 failed the same way.
pub fn release_status_value(status: &ReleaseStatus) -> i64 {
    match status {
        ReleaseStatus::Proposed | ReleaseStatus::RollingOut { .. } => 0,
        ReleaseStatus::Completed { .. } => 1,
        ReleaseStatus::Frozen { .. } | ReleaseStatus::RolledBack { .. } => 2,
        ReleaseStatus::Withdrawn { .. } => 3,
    }
}

/// The decision an accepted event records, as `pledger_decisions_total{decision}` names it.
pub fn decision_of(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::GateDecided(g) if g.passed => "gate_passed",
        Event::GateDecided(_) => "gate_failed",
        Event::StageAdvanced(_) => "advance",
        Event::RolloutFrozen(_) => "freeze",
        Event::RolledBack(_) => "rollback",
        Event::ReleaseCompleted(_) => "completion",
        _ => return None,
    })
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            release_status: Family::default(),
            release_info: Family::default(),
            rollout_weight: Family::default(),
            rollout_stage: Family::default(),
            samples: Family::default(),
            guardrail_value: Family::default(),
            guardrail_limit: Family::default(),
            guardrail_statistic: Family::default(),
            guardrail_threshold: Family::default(),
            guardrail_breached: Family::default(),
            decisions: Family::default(),
            regression_cases: Family::default(),
            dead_letters: Family::default(),
            notifications: Family::default(),
            consumer_pending: Family::default(),
            consumer_ack_pending: Family::default(),
            heap: Gauge::default(),
            resident: Gauge::default(),
            shown: Mutex::new(BTreeMap::new()),
            series: Mutex::new(BTreeMap::new()),
            counted: Mutex::new(BTreeMap::new()),
        };
        registry.register(
            names::METRIC_RELEASE_STATUS,
            "Latest release of each prompt: 0 in progress, 1 completed, 2 frozen or rolled back, 3 withdrawn",
            m.release_status.clone(),
        );
        registry.register(
            names::METRIC_RELEASE_INFO,
            "Latest release of each prompt, with its phase (proposed, rolling_out, paused, frozen, completed, rolled_back, withdrawn); always 1",
            m.release_info.clone(),
        );
        registry.register(
            names::METRIC_ROLLOUT_WEIGHT,
            "Percent of the current stage's segment the candidate serves (0 while frozen)",
            m.rollout_weight.clone(),
        );
        registry.register(
            names::METRIC_ROLLOUT_STAGE,
            "Index of the rollout's current stage in its plan (0 is the first)",
            m.rollout_stage.clone(),
        );
        registry.register(
            names::METRIC_CANARY_SAMPLES,
            "Outcomes counted in the current stage, per arm (candidate, control)",
            m.samples.clone(),
        );
        registry.register(
            names::METRIC_GUARDRAIL_VALUE,
            "Each guardrail bound's measured value per arm in the current stage",
            m.guardrail_value.clone(),
        );
        registry.register(
            names::METRIC_GUARDRAIL_LIMIT,
            "Each guardrail bound's limit for the candidate (in the guardrail's unit)",
            m.guardrail_limit.clone(),
        );
        registry.register(
            names::METRIC_GUARDRAIL_STATISTIC,
            "Each guardrail bound's sequential test statistic (log likelihood ratio)",
            m.guardrail_statistic.clone(),
        );
        registry.register(
            names::METRIC_GUARDRAIL_THRESHOLD,
            "The statistic at which the bound is breached",
            m.guardrail_threshold.clone(),
        );
        registry.register(
            names::METRIC_GUARDRAIL_BREACHED,
            "1 when the bound is breached, else 0",
            m.guardrail_breached.clone(),
        );
        registry.register(
            names::METRIC_DECISIONS,
            "Decisions recorded on the ledger since this process started (gate_passed, gate_failed, advance, freeze, rollback, completion)",
            m.decisions.clone(),
        );
        registry.register(
            names::METRIC_REGRESSION_CASES,
            "Regression cases recorded on the ledger since this process started",
            m.regression_cases.clone(),
        );
        registry.register(
            names::METRIC_DEAD_LETTERS,
            "Messages a worker could not use, copied to the dead-letter stream with the reason",
            m.dead_letters.clone(),
        );
        registry.register(
            names::METRIC_NOTIFICATIONS,
            "Webhook deliveries by result: delivered, retried (an attempt failed and is tried again), gave_up (dead-lettered), dropped (delivered by another replica, or the webhook was removed)",
            m.notifications.clone(),
        );
        registry.register(
            names::METRIC_CONSUMER_PENDING,
            "Messages a worker's durable consumer has not been delivered yet (its lag)",
            m.consumer_pending.clone(),
        );
        registry.register(
            names::METRIC_CONSUMER_ACK_PENDING,
            "Messages delivered to a worker's durable consumer and not acknowledged yet",
            m.consumer_ack_pending.clone(),
        );
        registry.register(
            names::METRIC_PROCESS_HEAP,
            "Bytes this process has allocated and not freed, as asked for: its data, without what the allocator holds on to (0 in a build that does not count them, such as --features system-alloc)",
            m.heap.clone(),
        );
        registry.register(
            names::METRIC_PROCESS_RESIDENT,
            "This process's resident memory (VmRSS); beside the heap, the difference is what the allocator holds on to",
            m.resident.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition (OpenMetrics) of every family.
    pub fn encode(&self) -> String {
        if let Some(heap) = HEAP_READER.get() {
            self.heap.set(heap() as i64);
        }
        if let Some(rss) = resident_bytes() {
            self.resident.set(rss as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// A prompt's latest release, from its state as the monitor read it.
    pub fn observe_prompt(&self, state: &PromptState) {
        let Some((_, latest)) = state.releases.last_key_value() else {
            return;
        };
        let labels = PhaseLabels {
            prompt: state.name.to_string(),
            release: latest.id.to_string(),
            phase: latest.status.name().to_string(),
        };
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = shown.insert(labels.prompt.clone(), labels.clone()) {
            if old != labels {
                self.release_info.remove(&old);
            }
            if old.release != labels.release {
                self.release_status
                    .remove(&release_labels(&old.prompt, &old.release));
                self.forget_release(&old.prompt, &old.release);
            }
        }
        self.release_info.get_or_create(&labels).set(1);
        let release = release_labels(&labels.prompt, &labels.release);
        self.release_status
            .get_or_create(&release)
            .set(release_status_value(&latest.status));
        if let (Some(stage), Some(plan)) = (latest.status.stage(), &latest.plan) {
            // A frozen rollout routes everything back to the baseline: the candidate serves
            // none (Flagger's weight after a failure is 0 too).
            let weight = match (&latest.status, plan.stages.get(stage)) {
                (ReleaseStatus::RollingOut { .. }, Some(s)) => s.percent,
                _ => 0.0,
            };
            self.rollout_weight.get_or_create(&release).set(weight);
            self.rollout_stage
                .get_or_create(&release)
                .set(i64::try_from(stage).unwrap_or(i64::MAX));
        }
        if latest.status.ended().is_some() || latest.status.stage().is_none() {
            self.forget_release(&labels.prompt, &labels.release);
        }
    }

    /// The monitor's judgement of a release's current stage.
    pub fn observe_canary(&self, view: &RolloutView, status: &CanaryStatus) {
        let prompt = view.release.prompt().to_string();
        let release = view.release.to_string();
        let j = &status.judgement;
        let mut now = ReleaseSeries::default();
        for (arm, samples) in [
            ("candidate", j.candidate.samples),
            ("control", j.control.samples),
        ] {
            let l = ArmLabels {
                prompt: prompt.clone(),
                release: release.clone(),
                stage: status.stage.clone(),
                arm: arm.to_string(),
            };
            self.samples
                .get_or_create(&l)
                .set(i64::try_from(samples).unwrap_or(i64::MAX));
            now.arms.push(l);
        }
        for g in &j.guardrails {
            let l = GuardrailLabels {
                prompt: prompt.clone(),
                release: release.clone(),
                guardrail: g.guardrail.to_string(),
                bound: g.bound.name().to_string(),
            };
            self.guardrail_limit.get_or_create(&l).set(g.limit);
            self.guardrail_statistic.get_or_create(&l).set(g.statistic);
            self.guardrail_threshold.get_or_create(&l).set(g.threshold);
            self.guardrail_breached
                .get_or_create(&l)
                .set(i64::from(g.breached));
            for (arm, value) in [
                ("candidate", g.candidate_value),
                ("control", g.control_value),
            ] {
                let la = GuardrailArmLabels {
                    prompt: prompt.clone(),
                    release: release.clone(),
                    guardrail: l.guardrail.clone(),
                    bound: l.bound.clone(),
                    arm: arm.to_string(),
                };
                self.guardrail_value.get_or_create(&la).set(value);
                now.guardrail_arms.push(la);
            }
            now.guardrails.push(l);
        }
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = series.insert(release.clone(), now) {
            let kept = &series[&release];
            for l in old.arms.iter().filter(|l| !kept.arms.contains(l)) {
                self.samples.remove(l);
            }
            for l in old
                .guardrails
                .iter()
                .filter(|l| !kept.guardrails.contains(l))
            {
                self.remove_guardrail(l);
            }
            for l in old
                .guardrail_arms
                .iter()
                .filter(|l| !kept.guardrail_arms.contains(l))
            {
                self.guardrail_value.remove(l);
            }
        }
    }

    /// Counts the decisions and regression cases among `events` (a prompt's accepted events
    /// as a read returned them) that no earlier call counted: each event once, however many
    /// reads see it.
    pub fn count_events<'a>(
        &self,
        prompt: &PromptName,
        events: impl IntoIterator<Item = &'a Recorded>,
    ) {
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let upto = counted.entry(prompt.to_string()).or_insert(0);
        for r in events {
            if r.sequence <= *upto {
                continue;
            }
            *upto = r.sequence;
            if let Some(decision) = decision_of(&r.envelope.event) {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        prompt: prompt.to_string(),
                        decision: decision.to_string(),
                    })
                    .inc();
            }
            if matches!(r.envelope.event, Event::RegressionCaseCollected(_)) {
                self.regression_cases
                    .get_or_create(&PromptLabels {
                        prompt: prompt.to_string(),
                    })
                    .inc();
            }
        }
    }

    /// A prompt's events up to stream sequence `last` happened before this process looked:
    /// [`Metrics::count_events`] leaves them out (the counters count from the process's start).
    pub fn counted_up_to(&self, prompt: &PromptName, last: u64) {
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let upto = counted.entry(prompt.to_string()).or_insert(0);
        *upto = (*upto).max(last);
    }

    /// A worker dead-lettered a message.
    pub fn dead_lettered(&self, worker: &str, replica: &str) {
        self.dead_letters
            .get_or_create(&WorkerLabels {
                worker: worker.to_string(),
                replica: replica.to_string(),
            })
            .inc();
    }

    /// A webhook delivery attempt's result (`delivered`, `retried`, `gave_up`, `dropped`).
    pub fn notification(&self, webhook: &str, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                webhook: webhook.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// A worker's durable consumer: messages not delivered yet and not acknowledged yet.
    pub fn consumer_lag(&self, labels: ConsumerLabels, pending: u64, ack_pending: u64) {
        self.consumer_pending
            .get_or_create(&labels)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.consumer_ack_pending
            .get_or_create(&labels)
            .set(i64::try_from(ack_pending).unwrap_or(i64::MAX));
    }

    fn remove_guardrail(&self, l: &GuardrailLabels) {
        self.guardrail_limit.remove(l);
        self.guardrail_statistic.remove(l);
        self.guardrail_threshold.remove(l);
        self.guardrail_breached.remove(l);
    }

    /// Drops a release's rollout and canary series (it ended, or another release replaced it).
    fn forget_release(&self, prompt: &str, release: &str) {
        let labels = release_labels(prompt, release);
        self.rollout_weight.remove(&labels);
        self.rollout_stage.remove(&labels);
        let old = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(release);
        if let Some(old) = old {
            for l in &old.arms {
                self.samples.remove(l);
            }
            for l in &old.guardrails {
                self.remove_guardrail(l);
            }
            for l in &old.guardrail_arms {
                self.guardrail_value.remove(l);
            }
        }
    }
}

fn release_labels(prompt: &str, release: &str) -> ReleaseLabels {
    ReleaseLabels {
        prompt: prompt.to_string(),
        release: release.to_string(),
    }
}

/// How often [`serve`] reads the workers' consumer lag.
pub const LAG_EVERY: Duration = Duration::from_secs(5);

/// The durable consumers of the workers this process runs, as `(worker, replica, stream,
/// durable name)`.
pub type Consumers = Vec<(String, String, String, String)>;

/// Serves `/metrics` on `addr` until `shutdown` turns true, and reads each of `consumers`'
/// lag every [`LAG_EVERY`] through `js` (a consumer not created yet is skipped).
pub async fn serve(
    addr: SocketAddr,
    js: async_nats::jetstream::Context,
    consumers: Consumers,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                global().encode(),
            )
        }),
    );
    let mut stop = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    Ok(tokio::spawn(async move {
        let lag = async {
            let mut every = tokio::time::interval(LAG_EVERY);
            loop {
                every.tick().await;
                for (worker, replica, stream, durable) in &consumers {
                    let Ok(s) = js.get_stream(stream.as_str()).await else {
                        continue;
                    };
                    let Ok(mut c) = s
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
                        .await
                    else {
                        continue;
                    };
                    if let Ok(info) = c.info().await {
                        global().consumer_lag(
                            ConsumerLabels {
                                worker: worker.clone(),
                                replica: replica.clone(),
                                stream: stream.clone(),
                            },
                            info.num_pending,
                            info.num_ack_pending as u64,
                        );
                    }
                }
            }
        };
        tokio::select! {
            r = server => {
                if let Err(e) = r {
                    tracing::warn!("metrics server stopped: {e}");
                }
            }
            _ = lag => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }))
}
