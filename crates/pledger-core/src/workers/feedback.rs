//! The feedback collector's rules: feedback attached to outcomes becomes pending regression
//! cases, redacted before anything is kept and de-duplicated by fingerprint (the thousandth
//! report of one failure raises a count); pending cases go to the ledger rate-limited per
//! prompt (new cases) and coalesced per case (recurrences: at most one event per case per hour
//! of the ledger's clock), so that neither a flood nor a failure that keeps occurring grows the
//! prompt's history per report. The reports not yet on the ledger are counted live
//! ([`FeedbackCounters::unrecorded`]). The driver keeps pending cases, counters and when each
//! case was last recorded in its store, and executes what [`Collector::next_submission`]
//! returns.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::decide::NewRegressionCase;
use crate::event::CaseSource;
use crate::outcome::{FeedbackTag, Outcome};
use crate::redact::{fingerprint, Redactor};
use crate::{Command, PromptName, ReleaseId, Timestamp, VersionId};

/// New cases a prompt may add per minute; more are counted, not recorded.
pub const NEW_CASES_PER_MINUTE: u32 = 20;
/// The rate limit's window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A known case's further reports are recorded at most once per this many milliseconds of the
/// ledger's clock, counted in slots from the epoch (UTC hours): at most 24
/// `regression_case_recurred` events per case per day, whatever the rate of reports.
pub const RECURRENCE_SLOT_MILLIS: i64 = 3_600_000;

/// The recurrence slot (UTC hour) `at` falls in.
pub fn recurrence_slot(at: Timestamp) -> i64 {
    at.unix_millis().div_euclid(RECURRENCE_SLOT_MILLIS)
}

/// Reports of one failure not yet on the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCase {
    pub prompt: PromptName,
    pub fingerprint: String,
    pub tag: FeedbackTag,
    pub example: String,
    pub version: VersionId,
    pub release: Option<ReleaseId>,
    pub count: u64,
    pub through_sequence: u64,
}

impl PendingCase {
    /// Adds later reports of the same failure.
    pub fn merge(&mut self, later: &PendingCase) {
        self.count += later.count;
        self.through_sequence = later.through_sequence;
    }

    /// The command that records these reports: a new case, or a recurrence of a known one
    /// (the ledger recognises a resubmission by its `through_sequence`).
    pub fn command(&self) -> Command {
        Command::CollectRegressionCase(NewRegressionCase {
            fingerprint: self.fingerprint.clone(),
            tag: self.tag,
            example: self.example.clone(),
            version: Some(self.version.clone()),
            release: self.release.clone(),
            source: CaseSource::Production,
            count: self.count,
            through_sequence: self.through_sequence,
        })
    }
}

/// Per-prompt counters, published for `pledger regressions list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackCounters {
    pub reports: u64,
    pub cases_recorded: u64,
    /// New cases refused by the rate limit.
    pub rate_limited: u64,
    /// Replacements made by redaction, by pattern name.
    pub redacted: BTreeMap<String, u64>,
    /// Reports collected but not on the ledger yet, by case fingerprint: a case's live count is
    /// its recorded count plus this. Filled when the counters are published, from the pending
    /// cases; not kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unrecorded: BTreeMap<String, u64>,
}

impl FeedbackCounters {
    pub fn add(&mut self, other: &FeedbackCounters) {
        self.reports += other.reports;
        self.cases_recorded += other.cases_recorded;
        self.rate_limited += other.rate_limited;
        for (k, v) in &other.redacted {
            *self.redacted.entry(k.clone()).or_default() += v;
        }
    }
}

/// What a batch of outcomes adds: pending cases by fingerprint and counters by prompt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    pub pending: BTreeMap<String, PendingCase>,
    pub counters: BTreeMap<PromptName, FeedbackCounters>,
}

/// Folds outcomes (with the stream sequence of their message) into pending cases. Only the
/// redacted example is kept; the raw text never leaves this function.
pub fn collect<'a>(
    redactor: &Redactor,
    outcomes: impl IntoIterator<Item = (u64, &'a Outcome)>,
) -> Collected {
    let mut c = Collected::default();
    for (sequence, o) in outcomes {
        let Some(f) = &o.feedback else { continue };
        let redacted = redactor.redact(&f.example);
        let counters = c.counters.entry(o.prompt.clone()).or_default();
        counters.reports += 1;
        for (pattern, n) in &redacted.replaced {
            *counters.redacted.entry(pattern.clone()).or_default() += u64::from(*n);
        }
        let fp = fingerprint(&o.prompt, f.tag, &redacted.text);
        let entry = c.pending.entry(fp.clone()).or_insert_with(|| PendingCase {
            prompt: o.prompt.clone(),
            fingerprint: fp,
            tag: f.tag,
            example: redacted.text.clone(),
            version: o.version.clone(),
            release: o.release.clone(),
            count: 0,
            through_sequence: 0,
        });
        entry.count += 1;
        entry.through_sequence = sequence;
    }
    c
}

/// What to do with one pending case now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    /// Execute the case's command.
    Submit,
    /// A known case already recorded in this recurrence slot: keep accumulating.
    Later,
    /// A new case over its prompt's rate limit: drop it and count its reports as rate-limited.
    RateLimited,
}

/// Whether a pending case is new or was recorded before, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    New,
    /// Recorded before; `last` is the ledger time of its last recording (`None` from a store
    /// written before recurrences were coalesced: it may be recorded now).
    Recorded {
        last: Option<Timestamp>,
    },
}

/// The collector's pacing of new cases, per replica (recurrences are paced by the ledger's
/// clock and the store, so a restart does not record a case twice in one slot).
#[derive(Debug, Default)]
pub struct Collector {
    /// Per prompt: the start of the rate window and the new cases submitted in it.
    budget: BTreeMap<PromptName, (Instant, u32)>,
}

impl Collector {
    pub fn new() -> Collector {
        Collector::default()
    }

    /// Decides about one pending case at `at` (the pacing clock) and `now` (the ledger's
    /// clock). A `Submit` of a new case uses one of its prompt's [`NEW_CASES_PER_MINUTE`]; a
    /// known case is submitted once per recurrence slot ([`recurrence_slot`]).
    pub fn next_submission(
        &mut self,
        case: &PendingCase,
        known: Known,
        at: Instant,
        now: Timestamp,
    ) -> Submission {
        if let Known::Recorded { last } = known {
            let same_slot = last.is_some_and(|l| recurrence_slot(l) >= recurrence_slot(now));
            return if same_slot {
                Submission::Later
            } else {
                Submission::Submit
            };
        }
        let (since, used) = self.budget.entry(case.prompt.clone()).or_insert((at, 0));
        if at.saturating_duration_since(*since) >= RATE_WINDOW {
            *since = at;
            *used = 0;
        }
        if *used >= NEW_CASES_PER_MINUTE {
            return Submission::RateLimited;
        }
        *used += 1;
        Submission::Submit
    }
}

/// The reports of each pending case not yet on the ledger, by fingerprint, for the prompt's
/// published counters.
pub fn unrecorded<'a>(
    prompt: &PromptName,
    pending: impl IntoIterator<Item = &'a PendingCase>,
) -> BTreeMap<String, u64> {
    pending
        .into_iter()
        .filter(|c| &c.prompt == prompt)
        .map(|c| (c.fingerprint.clone(), c.count))
        .collect()
}
