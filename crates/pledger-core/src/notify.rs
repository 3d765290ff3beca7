//! Notifications: which recorded events reach which webhooks, in what shape, and what a
//! notifier does after each attempt. Pure: the notifier worker (`pledger-infra`) reads the
//! ledger, keeps the queue, claims deliveries and speaks HTTP.
//!
//! The webhooks in force are the last accepted `fleet.notifications_set` event (one subject,
//! like the global release windows), set by an admin with `pledger notify add|remove`. Each
//! webhook is notified of the verified events recorded after it was added (never of history),
//! at least once, with an idempotency key (`<event id>/<webhook id>`) that is the same on every
//! attempt and every replica.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::{Envelope, Event};
use crate::FieldError;

/// What a webhook can be notified of.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// A release gate failed (`release.gate_decided` with `passed: false`).
    GateFailed,
    /// A rollout froze (`release.rollout_frozen`), by a guardrail or by a person.
    Frozen,
    /// A release was rolled back (`release.rolled_back`).
    RolledBack,
    /// A release completed: its candidate is the stable version (`release.completed`).
    Completed,
    /// The scheduler raised a notice (`release.notice_raised`): a stage baked and waits for a
    /// person, a stage is stuck on data, a review is stale.
    Notice,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 5] = [
        NotifyOn::GateFailed,
        NotifyOn::Frozen,
        NotifyOn::RolledBack,
        NotifyOn::Completed,
        NotifyOn::Notice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NotifyOn::GateFailed => "gate_failed",
            NotifyOn::Frozen => "frozen",
            NotifyOn::RolledBack => "rolled_back",
            NotifyOn::Completed => "completed",
            NotifyOn::Notice => "notice",
        }
    }

    /// Parses one name (`gate_failed`, `gate-failed`, ...).
    pub fn parse(raw: &str) -> Result<NotifyOn, FieldError> {
        let wanted = raw.trim().replace('-', "_");
        NotifyOn::ALL
            .into_iter()
            .find(|o| o.name() == wanted)
            .ok_or_else(|| {
                FieldError::new(
                    "events",
                    format!(
                        "unknown event `{raw}` (one of {}, or all)",
                        NotifyOn::ALL.map(NotifyOn::name).join(", ")
                    ),
                )
            })
    }

    /// Parses a comma-separated list; `all` means every one.
    pub fn parse_list(raw: &str) -> Result<BTreeSet<NotifyOn>, FieldError> {
        let mut out = BTreeSet::new();
        for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
            if part.trim() == "all" {
                out.extend(NotifyOn::ALL);
            } else {
                out.insert(NotifyOn::parse(part)?);
            }
        }
        if out.is_empty() {
            return Err(FieldError::new("events", "names no event"));
        }
        Ok(out)
    }

    /// The ledger event kinds that may notify (what a notifier reads families for).
    pub fn relevant_kind(kind: &str) -> bool {
        matches!(
            kind,
            "release.gate_decided"
                | "release.rollout_frozen"
                | "release.rolled_back"
                | "release.completed"
                | "release.notice_raised"
        )
    }
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The notification as JSON (`schema: pledger.notification.v1`), with the ledger event.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
}

impl WebhookFormat {
    pub fn name(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// One webhook, as recorded on the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Its name: lower-case letters, digits and `-`, at most 40 characters.
    pub id: String,
    /// `https://…` or `http://…`, or `env:NAME`: the URL is read from the environment variable
    /// `NAME` of the notifier's process, so a secret URL (a Slack webhook's) is not on the
    /// ledger, which every reader sees.
    pub url: String,
    pub events: BTreeSet<NotifyOn>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// The environment variable of the notifier's process holding a shared secret: each
    /// request then carries `X-Pledger-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// Where a webhook's URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource<'a> {
    Literal(&'a str),
    Env(&'a str),
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Checks an `http(s)://host…` URL's shape (the notifier's HTTP client parses it fully).
pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("`{url}` names no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` contains white space"));
    }
    Ok(())
}

impl Webhook {
    pub fn url_source(&self) -> UrlSource<'_> {
        match self.url.strip_prefix("env:") {
            Some(name) => UrlSource::Env(name),
            None => UrlSource::Literal(&self.url),
        }
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 40
            && self.id.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(FieldError::new(
                "id",
                format!(
                    "`{}` is not a webhook name (lower-case letters, digits and `-`, starting with a letter, at most 40)",
                    self.id
                ),
            ));
        }
        match self.url_source() {
            UrlSource::Env(name) if !valid_env_name(name) => {
                return Err(FieldError::new(
                    "url",
                    format!("`env:{name}` does not name an environment variable (A-Z, 0-9, _)"),
                ))
            }
            UrlSource::Env(_) => {}
            UrlSource::Literal(url) => {
                check_http_url(url).map_err(|m| FieldError::new("url", m))?
            }
        }
        if self.events.is_empty() {
            return Err(FieldError::new("events", "names no event"));
        }
        if let Some(name) = &self.secret_env {
            if !valid_env_name(name) {
                return Err(FieldError::new(
                    "secret_env",
                    format!("`{name}` is not an environment variable's name (A-Z, 0-9, _)"),
                ));
            }
        }
        Ok(())
    }
}

/// The payload of `fleet.notifications_set`: every webhook in force (sorted by id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationsSet {
    pub webhooks: Vec<Webhook>,
}

impl NotificationsSet {
    /// Every webhook valid, ids unique and sorted.
    pub fn validate(&self) -> Result<(), FieldError> {
        let mut seen = BTreeSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate()
                .map_err(|e| FieldError::new(format!("webhooks[{i}].{}", e.field), e.message))?;
            if !seen.insert(w.id.as_str()) {
                return Err(FieldError::new(
                    format!("webhooks[{i}].id"),
                    format!("`{}` appears twice", w.id),
                ));
            }
        }
        if !self.webhooks.windows(2).all(|p| p[0].id < p[1].id) {
            return Err(FieldError::new("webhooks", "not sorted by id"));
        }
        Ok(())
    }

    /// The set with `webhook` added; refused when its id is taken.
    pub fn with(&self, webhook: Webhook) -> Result<NotificationsSet, FieldError> {
        if self.webhooks.iter().any(|w| w.id == webhook.id) {
            return Err(FieldError::new(
                "id",
                format!(
                    "a webhook `{}` exists (`pledger notify remove {}` first)",
                    webhook.id, webhook.id
                ),
            ));
        }
        let mut webhooks = self.webhooks.clone();
        webhooks.push(webhook);
        webhooks.sort_by(|a, b| a.id.cmp(&b.id));
        let set = NotificationsSet { webhooks };
        set.validate()?;
        Ok(set)
    }

    /// The set without the webhook `id`; refused when there is none.
    pub fn without(&self, id: &str) -> Result<NotificationsSet, FieldError> {
        if !self.webhooks.iter().any(|w| w.id == id) {
            return Err(FieldError::new("id", format!("no webhook `{id}`")));
        }
        Ok(NotificationsSet {
            webhooks: self
                .webhooks
                .iter()
                .filter(|w| w.id != id)
                .cloned()
                .collect(),
        })
    }
}

/// A webhook in force and the ledger sequence from which it is notified: that of the event
/// that added it (or last changed it). Events at or before it are history to this webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    pub webhook: Webhook,
    pub since: u64,
}

/// The webhooks in force, folded from the accepted `fleet.notifications_set` events in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscriptions {
    pub webhooks: BTreeMap<String, Subscribed>,
}

impl Subscriptions {
    /// Applies the set recorded at `sequence`: a webhook kept unchanged keeps its `since`.
    pub fn apply(&mut self, sequence: u64, set: &NotificationsSet) {
        let mut next = BTreeMap::new();
        for w in &set.webhooks {
            let since = match self.webhooks.get(&w.id) {
                Some(s) if s.webhook == *w => s.since,
                _ => sequence,
            };
            next.insert(
                w.id.clone(),
                Subscribed {
                    webhook: w.clone(),
                    since,
                },
            );
        }
        self.webhooks = next;
    }

    /// The set in force (what the next change starts from).
    pub fn set(&self) -> NotificationsSet {
        NotificationsSet {
            webhooks: self.webhooks.values().map(|s| s.webhook.clone()).collect(),
        }
    }
}

/// What one recorded event says to people.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    pub on: NotifyOn,
    pub event_id: String,
    pub kind: &'static str,
    /// The event's ledger stream sequence.
    pub sequence: u64,
    pub occurred_at: crate::Timestamp,
    pub actor: crate::Actor,
    pub prompt: crate::PromptName,
    pub release: crate::ReleaseId,
    /// One line for people.
    pub summary: String,
}

/// The notification a recorded event makes, if any.
pub fn notification_of(envelope: &Envelope, sequence: u64) -> Option<Notification> {
    let actor = &envelope.actor;
    let (on, release, summary) = match &envelope.event {
        Event::GateDecided(e) if !e.passed => {
            let failed: Vec<&str> = e
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            (
                NotifyOn::GateFailed,
                &e.release,
                format!(
                    "{}: the release gate failed for {} ({})",
                    e.release,
                    e.evidence.candidate,
                    if failed.is_empty() {
                        "no check named".to_string()
                    } else {
                        format!("failed: {}", failed.join(", "))
                    }
                ),
            )
        }
        Event::RolloutFrozen(e) => (
            NotifyOn::Frozen,
            &e.release,
            format!(
                "{}: rollout frozen at stage `{}` by {actor}: {}",
                e.release, e.stage, e.reason
            ),
        ),
        Event::RolledBack(e) => (
            NotifyOn::RolledBack,
            &e.release,
            format!(
                "{}: rolled back from {} to {} by {actor}: {}",
                e.release, e.from_version, e.to_version, e.reason
            ),
        ),
        Event::ReleaseCompleted(e) => (
            NotifyOn::Completed,
            &e.release,
            format!(
                "{}: completed; {} is the stable version (was {})",
                e.release, e.version, e.previous_stable
            ),
        ),
        Event::NoticeRaised(e) => (
            NotifyOn::Notice,
            &e.release,
            format!("{}: {}", e.release, e.notice.describe()),
        ),
        _ => return None,
    };
    Some(Notification {
        on,
        event_id: envelope.event_id.clone(),
        kind: envelope.kind(),
        sequence,
        occurred_at: envelope.occurred_at,
        actor: actor.clone(),
        prompt: release.prompt().clone(),
        release: release.clone(),
        summary,
    })
}

/// The body of a notification for `format`. The JSON body carries the ledger event as
/// recorded (its wire form), so a receiver has the evidence without reading the ledger.
pub fn render(n: &Notification, envelope: &Envelope, format: WebhookFormat) -> String {
    let value = match format {
        WebhookFormat::Json => serde_json::json!({
            "schema": "pledger.notification.v1",
            "event": n.on,
            "summary": n.summary,
            "prompt": n.prompt,
            "release": n.release,
            "actor": n.actor,
            "occurred_at": n.occurred_at,
            "event_id": n.event_id,
            "kind": n.kind,
            "sequence": n.sequence,
            "ledger_event": envelope,
        }),
        WebhookFormat::Slack => {
            let icon = match n.on {
                NotifyOn::GateFailed => ":no_entry:",
                NotifyOn::Frozen => ":rotating_light:",
                NotifyOn::RolledBack => ":leftwards_arrow_with_hook:",
                NotifyOn::Completed => ":white_check_mark:",
                NotifyOn::Notice => ":bell:",
            };
            let text = format!("{icon} [{}] {}", n.on.name(), n.summary);
            serde_json::json!({
                "text": text,
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                    { "type": "context", "elements": [ { "type": "mrkdwn", "text": format!(
                        "`{}` · {} · {} · ledger #{} · `pledger release show {}`",
                        n.kind, n.actor, n.occurred_at, n.sequence, n.release
                    ) } ] }
                ]
            })
        }
    };
    value.to_string()
}

/// One notification waiting for one webhook, as the notifier keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub webhook: String,
    pub event_id: String,
    pub on: NotifyOn,
    /// The event's ledger stream sequence.
    pub sequence: u64,
    pub release: String,
    /// The request body (rendered when the event was queued).
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms of the first attempt's due time (when it was queued).
    pub queued_at_ms: u64,
    /// Unix ms before which no attempt is made.
    pub next_at_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Delivery {
    /// `<event id>/<webhook id>`: the same on every attempt and every replica.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.event_id, self.webhook)
    }
}

/// The deliveries a recorded event makes: one per webhook in force that wants it and was
/// added before the event (none when the event notifies nobody).
pub fn deliveries_for(
    subscriptions: &Subscriptions,
    envelope: &Envelope,
    sequence: u64,
    now_ms: u64,
) -> Vec<Delivery> {
    let Some(n) = notification_of(envelope, sequence) else {
        return Vec::new();
    };
    subscriptions
        .webhooks
        .values()
        .filter(|s| sequence > s.since && s.webhook.events.contains(&n.on))
        .map(|s| Delivery {
            webhook: s.webhook.id.clone(),
            event_id: n.event_id.clone(),
            on: n.on,
            sequence,
            release: n.release.to_string(),
            body: render(&n, envelope, s.webhook.format),
            attempts: 0,
            queued_at_ms: now_ms,
            next_at_ms: now_ms,
            last_error: None,
        })
        .collect()
}

/// What one attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// An HTTP status (the response's `Retry-After`, in seconds, when it had one).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No response: connection refused, timeout, TLS failure, no URL in the environment.
    NoResponse(String),
}

/// What to do with a delivery after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    /// Try again at `at_ms` (unix ms).
    Retry {
        at_ms: u64,
        error: String,
    },
    /// Stop: the receiver refused it for good, or it kept failing for [`RetryPolicy::give_up_after`].
    GiveUp {
        error: String,
    },
}

/// When failed deliveries are tried again: after 1 s, doubling up to 5 min (or what the
/// receiver's `Retry-After` asks, up to an hour), for up to 24 h after the event was queued.
/// 2xx delivers; 408, 425, 429 and 5xx, and no response at all, are tried again; any other
/// status is the receiver refusing the request, and retrying would not change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    pub max_retry_after: Duration,
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed attempt (1-based).
    pub fn backoff(&self, attempts: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// Decides after an attempt on `delivery` (whose `attempts` counts this one) at `now_ms`.
    pub fn after(&self, delivery: &Delivery, attempt: &Attempt, now_ms: u64) -> AfterAttempt {
        let (retryable, retry_after, error) = match attempt {
            Attempt::Status { code, .. } if (200..300).contains(code) => {
                return AfterAttempt::Delivered
            }
            Attempt::Status { code, retry_after } => (
                matches!(code, 408 | 425 | 429) || (500..600).contains(code),
                *retry_after,
                format!("HTTP {code}"),
            ),
            Attempt::NoResponse(e) => (true, None, e.clone()),
        };
        if !retryable {
            return AfterAttempt::GiveUp {
                error: format!("{error}: the receiver refused the request (not retried)"),
            };
        }
        let wait = self
            .backoff(delivery.attempts)
            .max(retry_after.unwrap_or_default().min(self.max_retry_after));
        let at_ms = now_ms.saturating_add(wait.as_millis() as u64);
        let deadline = delivery
            .queued_at_ms
            .saturating_add(self.give_up_after.as_millis() as u64);
        if at_ms > deadline {
            return AfterAttempt::GiveUp {
                error: format!(
                    "{error}: still failing after {} attempts over {}",
                    delivery.attempts,
                    crate::DurationSpec::from_millis(self.give_up_after.as_millis() as u64)
                ),
            };
        }
        AfterAttempt::Retry { at_ms, error }
    }
}

/// What the claim of a delivery across the notifier's replicas holds (a KV entry per
/// delivery). A replica sends only while it holds the claim; a claim not renewed by its
/// `until_ms` is stale and another replica takes it over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Claim {
    /// `by` is sending, and will try again (or finish) before `until_ms`.
    Sending { by: String, until_ms: u64 },
    /// Delivered by `by` at `at_ms`.
    Delivered { by: String, at_ms: u64 },
    /// `by` gave up at `at_ms` (it dead-lettered the delivery).
    GaveUp { by: String, at_ms: u64 },
}

/// How long a claim lasts beyond its holder's next attempt.
pub const CLAIM_GRACE: Duration = Duration::from_secs(30);

/// What a replica does about a delivery, given the claim it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimStep {
    /// No claim: create one (only if still absent).
    Take,
    /// Its own claim, or a stale one: replace it (only if unchanged since read).
    Renew,
    /// Done elsewhere (delivered or given up): drop it from the queue.
    Drop,
    /// Another replica holds it: look again at `until_ms`.
    Wait { until_ms: u64 },
}

pub fn claim_step(claim: Option<&Claim>, me: &str, now_ms: u64) -> ClaimStep {
    match claim {
        None => ClaimStep::Take,
        Some(Claim::Delivered { .. } | Claim::GaveUp { .. }) => ClaimStep::Drop,
        Some(Claim::Sending { by, .. }) if by == me => ClaimStep::Renew,
        Some(Claim::Sending { until_ms, .. }) if *until_ms < now_ms => ClaimStep::Renew,
        Some(Claim::Sending { until_ms, .. }) => ClaimStep::Wait {
            until_ms: *until_ms,
        },
    }
}

/// The claim a replica writes to hold a delivery until `until_ms` (before an attempt: the
/// attempt's timeout from now; after a failed one: its next attempt), plus [`CLAIM_GRACE`].
pub fn claim_until(me: &str, until_ms: u64) -> Claim {
    Claim::Sending {
        by: me.to_string(),
        until_ms: until_ms.saturating_add(CLAIM_GRACE.as_millis() as u64),
    }
}
