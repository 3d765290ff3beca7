//! Release windows: when rollouts may start and stages may advance.
//!
//! A set of release windows names a time zone and two lists of recurring windows, `open` and
//! `closed`. Each window opens every time its cron expression fires and stays open for its
//! `duration`:
//!
//! ```toml
//! timezone = "Europe/Berlin"
//!
//! # Weekdays from 09:00 to 16:00 ...
//! [[open]]
//! cron = "0 0 9 * * Mon-Fri"
//! duration = "7h"
//!
//! # ... but never on a Friday afternoon.
//! [[closed]]
//! cron = "0 0 12 * * Fri"
//! duration = "12h"
//! note = "no Friday afternoon releases"
//! ```
//!
//! An instant is open when some `open` window covers it and no `closed` window covers it.
//! With no `open` windows at all, every instant is open except those a `closed` window covers
//! (a list of blackouts). With no windows at all, every instant is open.
//!
//! # Intervals
//!
//! A window is half-open: it includes its start and excludes its end. The window above covers
//! 09:00:00.000 up to 15:59:59.999; at 16:00 it is closed. Windows may overlap; a window that
//! ends exactly when another begins leaves no gap. `duration` is at least 1 millisecond and at
//! most 7 days (`7d`).
//!
//! # Cron expressions
//!
//! The cron dialect is the one of the `cron` crate (0.17). It has six fields, seconds first,
//! and an optional seventh for the year:
//!
//! ```text
//! sec  min  hour  day-of-month  month  day-of-week  [year]
//! 0-59 0-59 0-23  1-31          1-12   1-7          1970-2100
//! ```
//!
//! - Day-of-week counts from **Sunday = 1** to Saturday = 7 (so `0` is refused and Monday is
//!   `2`). Names are clearer and also accepted: `Sun`, `Mon`, ... `Sat`, and ranges of them
//!   (`Mon-Fri`). Months also take names (`Jan`-`Dec`).
//! - Each field takes `*`, a number, a range `a-b`, a list `a,b,c` and steps `*/15` or `a-b/2`.
//!   `?` is the same as `*` in the day-of-month and day-of-week fields.
//! - When both day-of-month and day-of-week are restricted, a day must match **both** (classic
//!   Unix cron fires when either matches).
//! - The shorthands `@yearly`, `@monthly`, `@weekly` (Sunday), `@daily` and `@hourly` fire at
//!   the start of the period.
//! - The usual five-field Unix form (`0 9 * * 1-5`) is refused: put the seconds first
//!   (`0 0 9 * * Mon-Fri`).
//!
//! Examples: `0 0 9 * * Mon-Fri` (weekdays at 09:00), `0 30 22 * * *` (every day at 22:30),
//! `0 0 0 24 Dec *` (Christmas Eve at midnight), `0 0 8 1 * *` (the first of each month at
//! 08:00), `0 0 9 * * Mon 2027` (Mondays at 09:00 in 2027 only).
//!
//! The expression is read in the windows' `timezone` (an IANA name such as `Europe/Berlin`,
//! `America/New_York` or `UTC`): `0 0 9 * * *` fires at 09:00 on the wall clocks there, which
//! is 08:00 UTC in Berlin's winter (CET, UTC+1) and 07:00 UTC in its summer (CEST, UTC+2).
//!
//! # Durations and daylight saving time
//!
//! A duration is elapsed time, not wall-clock time. A 7-hour window that starts at 09:00 ends
//! at 16:00 local on every day, including the days the clocks change (they change at night),
//! but a window that spans the change is an hour shorter or longer on the wall clock: a
//! `0 0 22 * * *` window of 7 hours in Berlin runs from 22:00 on Saturday 2026-03-28 to 06:00
//! on Sunday (CEST), and from 22:00 on Saturday 2026-10-24 to 04:00 on Sunday (CET).
//!
//! Start times that fall where the clocks change behave as follows (measured with cron 0.17
//! and pinned by pledger's tests):
//!
//! - **A start time that does not exist is skipped.** On 2026-03-29 Berlin's clocks jump from
//!   02:00 to 03:00, so a window starting at `0 30 2 * * *` does not open at all that day; it
//!   opens at 02:30 the day before and the day after. Likewise in New York on 2026-03-08 (02:00
//!   to 03:00). To be safe, do not start windows between 02:00 and 03:00 local time.
//! - **A start time that happens twice opens twice.** On 2026-10-25 Berlin's clocks go back
//!   from 03:00 to 02:00, so 02:30 happens twice: a window starting at `0 30 2 * * *` opens at
//!   02:30 CEST (00:30 UTC) and again at 02:30 CET (01:30 UTC). Likewise for 01:30 in New York
//!   on 2026-11-01 (05:30 and 06:30 UTC).
//!
//! Every firing is placed on the real timeline, so the next and previous firings of a schedule
//! are found correctly even from an instant inside the repeated hour.
//!
//! # Searching
//!
//! [`CompiledWindows::next_open`] and [`CompiledWindows::next_close`] look up to 400 days
//! ahead and answer `None` past that (for instance when the only open window is in a year that
//! has passed). They also give up after 100,000 steps, which only windows that open every few
//! seconds can reach.
//!
//! The module also has the plain cron schedules the scheduler uses ([`CronSchedule`], e.g. for
//! the weekly digest) and the ISO-week helpers of the digest ([`week_containing`],
//! [`last_completed_week`], [`parse_week`]).

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use cron::TimeUnitSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::ids::{DurationSpec, Timestamp};

/// How far ahead `next_open` and `next_close` look.
pub const SEARCH_HORIZON_DAYS: i64 = 400;
/// The longest window.
pub const MAX_WINDOW_DURATION_MILLIS: u64 = 7 * DAY_MS as u64;
/// The most steps one search of `next_open` / `next_close` takes.
const MAX_SEARCH_STEPS: usize = 100_000;

const SECOND_MS: i64 = 1_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Clock changes are looked for this far around an instant. Real ones shift the clock by at
/// most two hours (Antarctica/Troll), most by one.
const FOLD_LOOKAROUND_MS: i64 = 3 * HOUR_MS;

const CRON_HELP: &str = "use 6 or 7 fields, seconds first: `sec min hour day-of-month month day-of-week [year]`, with day-of-week 1-7 where Sunday = 1, or names like `Mon-Fri`; e.g. `0 0 9 * * Mon-Fri` is weekdays at 09:00";

/// One recurring window: it opens at every time the cron expression fires and lasts `duration`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// When the window opens: a cron expression with seconds first, read in the windows'
    /// time zone (`0 0 9 * * Mon-Fri`).
    pub cron: String,
    /// How long the window stays open after each start (elapsed time, e.g. `7h`, `1h30m`;
    /// more than 0, at most `7d`).
    pub duration: DurationSpec,
    /// Why the window exists, for people (shown when a closed window blocks a step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Release windows: when rollouts may start and stages may advance.
/// `open` empty means "always open" (except `closed`). An instant is open when some `open`
/// window covers it and no `closed` window covers it. Intervals are half-open [start, start+duration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseWindows {
    /// The IANA time zone the cron expressions are read in (`Europe/Berlin`, `UTC`).
    pub timezone: String,
    /// Windows in which steps may happen. None: always, except in `closed` windows.
    #[serde(default)]
    pub open: Vec<WindowSpec>,
    /// Windows in which no step may happen, even inside an `open` window.
    #[serde(default)]
    pub closed: Vec<WindowSpec>,
}

impl ReleaseWindows {
    /// Reads release windows from TOML and checks them ([`ReleaseWindows::compile`]).
    pub fn from_toml(text: &str) -> Result<ReleaseWindows, FieldError> {
        let de = toml::Deserializer::new(text);
        let windows: ReleaseWindows = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().trim().to_string();
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("{message} (line {line})");
            }
            syntax_error(&path, message)
        })?;
        windows.compile()?;
        Ok(windows)
    }

    /// Reads release windows from JSON and checks them ([`ReleaseWindows::compile`]).
    pub fn from_json(text: &str) -> Result<ReleaseWindows, FieldError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let windows: ReleaseWindows = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| syntax_error(&e.path().to_string(), e.inner().to_string()))?;
        de.end()
            .map_err(|e| FieldError::new("windows", format!("not valid JSON: {e}")))?;
        windows.compile()?;
        Ok(windows)
    }

    /// Checks every field and parses the cron expressions. Errors name the field:
    /// `timezone`, `open[0].cron`, `closed[1].duration`.
    pub fn compile(&self) -> Result<CompiledWindows, FieldError> {
        let tz = parse_timezone(&self.timezone, "timezone")?;
        let compile_list = |list: &[WindowSpec], name: &str| -> Result<Vec<Spec>, FieldError> {
            list.iter()
                .enumerate()
                .map(|(i, w)| Spec::compile(w, tz, &format!("{name}[{i}]")))
                .collect()
        };
        Ok(CompiledWindows {
            timezone: self.timezone.clone(),
            tz,
            open: compile_list(&self.open, "open")?,
            closed: compile_list(&self.closed, "closed")?,
        })
    }
}

/// A deserialization error as a [`FieldError`]: the path to the bad value is the field; for an
/// unknown or missing field, the path to that field itself.
fn syntax_error(path: &str, message: String) -> FieldError {
    let mut field = if path.is_empty() || path == "." {
        String::new()
    } else {
        path.to_string()
    };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|marker| message.split(marker).nth(1));
    if let Some(rest) = named {
        if let Some(name) = rest.split('`').next() {
            let already_named = field == name || field.ends_with(&format!(".{name}"));
            if !already_named {
                field = if field.is_empty() {
                    name.to_string()
                } else {
                    format!("{field}.{name}")
                };
            }
        }
    }
    if field.is_empty() {
        field = "windows".to_string();
    }
    // A value's own parser may already name its field (`duration: ...`): say it once.
    let last = field.rsplit('.').next().unwrap_or_default();
    let message = match message.strip_prefix(&format!("{last}: ")) {
        Some(rest) => rest.to_string(),
        None => message,
    };
    FieldError::new(field, message)
}

/// One compiled window.
#[derive(Clone, Debug)]
struct Spec {
    schedule: CronSchedule,
    duration_ms: i64,
    /// The note, else the cron expression: how a closed window is named to people.
    label: String,
}

impl Spec {
    fn compile(spec: &WindowSpec, tz: Tz, field: &str) -> Result<Spec, FieldError> {
        let schedule = parse_cron(&spec.cron, &format!("{field}.cron"))?;
        let ms = spec.duration.millis();
        if ms == 0 || ms > MAX_WINDOW_DURATION_MILLIS {
            return Err(FieldError::new(
                format!("{field}.duration"),
                format!(
                    "`{}` is not a window duration: it must be more than 0 and at most 7d",
                    spec.duration
                ),
            ));
        }
        let label = match spec.note.as_deref().map(str::trim) {
            Some(note) if !note.is_empty() => note.to_string(),
            _ => spec.cron.trim().to_string(),
        };
        Ok(Spec {
            schedule: CronSchedule {
                expr: spec.cron.clone(),
                timezone: tz.name().to_string(),
                schedule,
                tz,
            },
            duration_ms: ms as i64,
            label,
        })
    }

    /// The earliest start of this spec's windows that cover `t`: the first firing strictly
    /// after `t - duration`, if it is at or before `t`.
    fn earliest_covering_start(&self, t: Timestamp) -> Option<Timestamp> {
        let from = Timestamp::from_unix_millis(t.unix_millis().saturating_sub(self.duration_ms));
        self.schedule.next_after(from).filter(|s| *s <= t)
    }

    fn covers(&self, t: Timestamp) -> bool {
        self.earliest_covering_start(t).is_some()
    }

    /// The end of the first of this spec's windows covering `t` to close.
    fn earliest_covering_end(&self, t: Timestamp) -> Option<Timestamp> {
        self.earliest_covering_start(t)
            .map(|s| add_ms(s, self.duration_ms))
    }

    /// The end of the last of this spec's windows covering `t` to close.
    fn latest_covering_end(&self, t: Timestamp) -> Option<Timestamp> {
        let last = self.schedule.last_at_or_before(t)?;
        let end = add_ms(last, self.duration_ms);
        (end > t).then_some(end)
    }
}

/// Release windows ready to answer questions: the cron expressions parsed, the zone resolved.
#[derive(Clone, Debug)]
pub struct CompiledWindows {
    timezone: String,
    tz: Tz,
    open: Vec<Spec>,
    closed: Vec<Spec>,
}

/// Whether the windows are open at an instant, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowState {
    /// Steps may happen now.
    Open {
        /// When the windows next close (`None`: not within 400 days).
        #[serde(default)]
        closes_at: Option<Timestamp>,
    },
    /// No step may happen now.
    Closed {
        /// When the windows next open (`None`: not within 400 days).
        #[serde(default)]
        opens_at: Option<Timestamp>,
        /// The note (else the cron expression) of the closed window covering the instant, when
        /// that is the reason; `None` when the instant is simply outside every open window.
        #[serde(default)]
        blackout: Option<String>,
    },
}

impl CompiledWindows {
    /// Is `at` inside some open window (or are there none) and outside every closed window?
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.open_covered(at) && !self.closed.iter().any(|w| w.covers(at))
    }

    fn open_covered(&self, at: Timestamp) -> bool {
        self.open.is_empty() || self.open.iter().any(|w| w.covers(at))
    }

    /// Open or closed at `at`, with the next change and, when closed by a closed window, its
    /// note.
    pub fn state(&self, at: Timestamp) -> WindowState {
        if self.is_open(at) {
            WindowState::Open {
                closes_at: self.next_close(at),
            }
        } else {
            WindowState::Closed {
                opens_at: self.next_open(at),
                blackout: self
                    .closed
                    .iter()
                    .find(|w| w.covers(at))
                    .map(|w| w.label.clone()),
            }
        }
    }

    /// `at` itself when open; else the earliest later instant that is open; None if none within 400 days.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        let limit = add_ms(at, SEARCH_HORIZON_DAYS * DAY_MS);
        let mut c = at;
        for _ in 0..MAX_SEARCH_STEPS {
            if c > limit {
                return None;
            }
            let open_covered = self.open_covered(c);
            let closed_ends: Vec<Timestamp> = self
                .closed
                .iter()
                .filter_map(|w| w.earliest_covering_end(c))
                .collect();
            if open_covered && closed_ends.is_empty() {
                return Some(c);
            }
            // Nothing changes before the next open window starts (when no open window covers
            // `c`) or before the first covering closed window ends.
            let mut next = closed_ends.into_iter().min();
            if !open_covered {
                for w in &self.open {
                    next = earliest(next, w.schedule.next_after(c));
                }
            }
            match next {
                Some(n) if n > c => c = n,
                _ => return None,
            }
        }
        None
    }

    /// Earliest instant >= at that is closed; None when always open / none within 400 days.
    pub fn next_close(&self, at: Timestamp) -> Option<Timestamp> {
        if self.open.is_empty() && self.closed.is_empty() {
            return None;
        }
        let limit = add_ms(at, SEARCH_HORIZON_DAYS * DAY_MS);
        let mut c = at;
        for _ in 0..MAX_SEARCH_STEPS {
            if c > limit {
                return None;
            }
            if !self.is_open(c) {
                return Some(c);
            }
            // `c` is open: it stays open until a closed window starts or the last open window
            // covering it ends.
            let mut next = None;
            for w in &self.closed {
                next = earliest(next, w.schedule.next_after(c));
            }
            if !self.open.is_empty() {
                let open_until = self
                    .open
                    .iter()
                    .filter_map(|w| w.latest_covering_end(c))
                    .max();
                next = earliest(next, open_until);
            }
            match next {
                Some(n) if n > c => c = n,
                _ => return None,
            }
        }
        None
    }

    /// `at` in the windows' zone for people: e.g. "Mon 2026-11-30 09:00 CET".
    pub fn local(&self, at: Timestamp) -> String {
        format_local(self.tz, at)
    }

    /// The windows' IANA time zone name.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }
}

/// A cron schedule in a zone (used by the scheduler for the weekly digest).
#[derive(Clone, Debug, PartialEq)]
pub struct CronSchedule {
    expr: String,
    timezone: String,
    schedule: cron::Schedule,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` (the dialect of the module documentation) read in `timezone`. Errors name
    /// the field `cron` or `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<CronSchedule, FieldError> {
        let tz = parse_timezone(timezone, "timezone")?;
        let schedule = parse_cron(expr, "cron")?;
        Ok(CronSchedule {
            expr: expr.to_string(),
            timezone: timezone.to_string(),
            schedule,
            tz,
        })
    }

    /// The cron expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The IANA time zone name as given.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// `at` in the schedule's zone for people: e.g. "Mon 2026-11-30 09:00 CET".
    pub fn local(&self, at: Timestamp) -> String {
        format_local(self.tz, at)
    }

    /// First firing strictly after `at`.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        let from = to_zoned(self.tz, at)?;
        let mut best = self.first_after(&from, at);
        // cron walks local wall-clock times. When the clocks go back within the next hours and
        // `at` is in (or before) the hour that repeats, the second pass of that hour comes
        // after `at` on the timeline but before it on the wall clock: walk the repeated hour
        // from its start as well.
        if let Some((change, shift)) = clock_change(self.tz, at, add_ms(at, FOLD_LOOKAROUND_MS)) {
            if let Some(repeat_start) = to_zoned(self.tz, add_ms(change, -shift - SECOND_MS)) {
                best = earliest(best, self.first_after(&repeat_start, at));
            }
        }
        best
    }

    /// Last firing at or before `at`.
    pub fn last_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        // cron's backward walk is strictly before its starting point (to the millisecond).
        let from = to_zoned(self.tz, add_ms(at, 1))?;
        let mut best = self.last_before(&from, at);
        // Mirror of `next_after`: when the clocks went back in the last hours and `at` is in
        // the second pass of the repeated hour, the first pass of a later wall-clock time is
        // before `at` on the timeline: walk back from the end of the repeated hour as well.
        if let Some((change, shift)) = clock_change(self.tz, add_ms(at, -FOLD_LOOKAROUND_MS), at) {
            if let Some(repeat_end) = to_zoned(self.tz, add_ms(change, shift)) {
                best = latest(best, self.last_before(&repeat_end, at));
            }
        }
        best
    }

    /// The first firing the cron iterator yields from `from` that is after `at`. In a repeated
    /// hour the iterator yields both passes of a wall-clock time, the earlier first, and from
    /// inside the second pass the earlier one is before `at`: skip it.
    fn first_after(&self, from: &DateTime<Tz>, at: Timestamp) -> Option<Timestamp> {
        self.schedule
            .after(from)
            .take(8)
            .map(|d| Timestamp::from_unix_millis(d.timestamp_millis()))
            .find(|t| *t > at)
    }

    /// The mirror of `first_after`, walking back.
    fn last_before(&self, from: &DateTime<Tz>, at: Timestamp) -> Option<Timestamp> {
        let mut from = *from;
        let year = from.year();
        let year_included = u32::try_from(year).is_ok_and(|y| self.schedule.years().includes(y));
        if !year_included {
            // cron 0.17 walks back wrongly from a year its expression leaves out (it keeps the
            // starting month, day and time as bounds in the earlier year): start from the end
            // of the last year it includes instead.
            let last_year = self
                .schedule
                .years()
                .range(..u32::try_from(year).unwrap_or(0))
                .next_back()?;
            let next_new_year = NaiveDate::from_ymd_opt(i32::try_from(last_year).ok()? + 1, 1, 1)?;
            from = to_zoned(self.tz, local_midnight(self.tz, next_new_year)?)?;
        }
        self.schedule
            .after(&from)
            .rev()
            .take(8)
            .map(|d| Timestamp::from_unix_millis(d.timestamp_millis()))
            .find(|t| *t <= at)
    }
}

/// ISO week helpers, in a zone: the week (Monday 00:00 local to next Monday 00:00 local) containing `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Week {
    /// The ISO week, `2026-W48` (the year is the ISO week-year: 2026-12-31 is in `2026-W53`,
    /// 2027-01-04 in `2027-W01`).
    pub label: String,
    /// Monday 00:00 local time.
    pub start: Timestamp,
    /// The next Monday 00:00 local time (excluded).
    pub end: Timestamp,
}

/// The ISO week (Monday 00:00 to Monday 00:00 local time in `timezone`) containing `at`.
pub fn week_containing(at: Timestamp, timezone: &str) -> Result<Week, FieldError> {
    let tz = parse_timezone(timezone, "timezone")?;
    let local = to_zoned(tz, at).ok_or_else(|| out_of_range("week", at))?;
    week_of_date(tz, local.date_naive())
}

/// The most recent week that ended at or before `at`.
pub fn last_completed_week(at: Timestamp, timezone: &str) -> Result<Week, FieldError> {
    let current = week_containing(at, timezone)?;
    week_containing(add_ms(current.start, -1), timezone)
}

/// Parses "2026-W48" or a date "2026-11-24" (the week containing that date) in the zone.
pub fn parse_week(raw: &str, timezone: &str) -> Result<Week, FieldError> {
    let tz = parse_timezone(timezone, "timezone")?;
    let text = raw.trim();
    let bad = || {
        FieldError::new(
            "week",
            format!("`{raw}` is not a week (use an ISO week like `2026-W48` or a date like `2026-11-24`)"),
        )
    };
    let iso = text.split_once("-W").or_else(|| text.split_once("-w"));
    let monday = match iso {
        Some((year, week)) => {
            let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
                n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
            };
            if !digits(year, 4..=4) || !digits(week, 1..=2) {
                return Err(bad());
            }
            let (year, week): (i32, u32) = (
                year.parse().map_err(|_| bad())?,
                week.parse().map_err(|_| bad())?,
            );
            NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or_else(|| {
                FieldError::new(
                    "week",
                    format!(
                        "`{raw}` is not a week: {year} has ISO weeks 1 to {}",
                        iso_weeks_in(year)
                    ),
                )
            })?
        }
        None => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?,
    };
    week_of_date(tz, monday)
}

fn iso_weeks_in(year: i32) -> u32 {
    NaiveDate::from_ymd_opt(year, 12, 28).map_or(52, |d| d.iso_week().week())
}

fn week_of_date(tz: Tz, date: NaiveDate) -> Result<Week, FieldError> {
    let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
    let next_monday = monday + Duration::days(7);
    let iso = monday.iso_week();
    let start = local_midnight(tz, monday)
        .ok_or_else(|| FieldError::new("week", format!("{monday} is out of range")))?;
    let end = local_midnight(tz, next_monday)
        .ok_or_else(|| FieldError::new("week", format!("{next_monday} is out of range")))?;
    Ok(Week {
        label: format!("{}-W{:02}", iso.year(), iso.week()),
        start,
        end,
    })
}

/// The first instant of `date` in `tz`: midnight, or, where the clocks skip midnight, the
/// first wall-clock time after it that exists.
fn local_midnight(tz: Tz, date: NaiveDate) -> Option<Timestamp> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    (0..=24 * 60).find_map(|minute| {
        match tz.from_local_datetime(&(midnight + Duration::minutes(minute))) {
            LocalResult::Single(d) | LocalResult::Ambiguous(d, _) => {
                Some(Timestamp::from_unix_millis(d.timestamp_millis()))
            }
            LocalResult::None => None,
        }
    })
}

fn parse_timezone(name: &str, field: &str) -> Result<Tz, FieldError> {
    Tz::from_str(name.trim()).map_err(|_| {
        FieldError::new(
            field,
            format!("`{name}` is not a known IANA time zone (use a name like `Europe/Berlin`, `America/New_York` or `UTC`)"),
        )
    })
}

fn parse_cron(expr: &str, field: &str) -> Result<cron::Schedule, FieldError> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(6..=7).contains(&fields) {
        return Err(FieldError::new(
            field,
            format!("`{expr}` has {fields} fields; {CRON_HELP}"),
        ));
    }
    cron::Schedule::from_str(trimmed).map_err(|e| {
        // cron's message draws a caret under the expression over several lines; keep the
        // explanation, its last line.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.chars().all(|c| c == '^'))
            .unwrap_or("does not parse")
            .to_string();
        FieldError::new(
            field,
            format!("`{expr}` is not a cron expression ({reason}); {CRON_HELP}"),
        )
    })
}

/// The clock change in `(from, to]` that moves the clocks back: its instant and by how many
/// milliseconds. Assumes at most one change in the interval (they are months apart).
fn clock_change(tz: Tz, from: Timestamp, to: Timestamp) -> Option<(Timestamp, i64)> {
    let before = offset_ms(tz, from)?;
    let after = offset_ms(tz, to)?;
    if after >= before {
        return None;
    }
    // Bisect for the first instant with the new offset.
    let (mut lo, mut hi) = (from.unix_millis(), to.unix_millis());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_ms(tz, Timestamp::from_unix_millis(mid))? == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((Timestamp::from_unix_millis(hi), before - after))
}

fn offset_ms(tz: Tz, at: Timestamp) -> Option<i64> {
    to_zoned(tz, at).map(|d| i64::from(d.offset().fix().local_minus_utc()) * SECOND_MS)
}

fn to_zoned(tz: Tz, at: Timestamp) -> Option<DateTime<Tz>> {
    DateTime::<Utc>::from_timestamp_millis(at.unix_millis()).map(|d| d.with_timezone(&tz))
}

fn format_local(tz: Tz, at: Timestamp) -> String {
    match to_zoned(tz, at) {
        Some(d) => d.format("%a %Y-%m-%d %H:%M %Z").to_string(),
        None => at.to_rfc3339(),
    }
}

fn out_of_range(field: &str, at: Timestamp) -> FieldError {
    FieldError::new(field, format!("{} is out of range", at.unix_millis()))
}

fn add_ms(t: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(t.unix_millis().saturating_add(ms))
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
