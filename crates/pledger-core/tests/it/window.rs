//! Release windows, cron schedules in a zone and ISO weeks.
//!
//! Offsets used to work out the expected instants: Berlin CET = UTC+1, CEST = UTC+2
//! (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00); New York EST = UTC-5, EDT = UTC-4
//! (2026-03-08, 2026-11-01); Tokyo JST = UTC+9. 2026-11-30 and 2026-12-28 are Mondays.

use pledger_core::window::{
    last_completed_week, parse_week, week_containing, CompiledWindows, CronSchedule,
    ReleaseWindows, WindowSpec, WindowState,
};
use pledger_core::DurationSpec;

use crate::support::ts;

/// (instant in UTC, open?, what it is).
type OpenCase = (&'static str, bool, &'static str);
/// (from, expected instant or None, what it is).
type SearchCase = (&'static str, Option<&'static str>, &'static str);

fn spec(cron: &str, duration: &str) -> WindowSpec {
    WindowSpec {
        cron: cron.to_string(),
        duration: DurationSpec::parse(duration).unwrap(),
        note: None,
    }
}

fn windows(timezone: &str, open: &[(&str, &str)], closed: &[(&str, &str)]) -> CompiledWindows {
    ReleaseWindows {
        timezone: timezone.to_string(),
        open: open.iter().map(|(c, d)| spec(c, d)).collect(),
        closed: closed.iter().map(|(c, d)| spec(c, d)).collect(),
    }
    .compile()
    .unwrap()
}

fn check_open(w: &CompiledWindows, cases: &[OpenCase]) {
    for (at, open, what) in cases {
        assert_eq!(w.is_open(ts(at)), *open, "is_open at {at} ({what})");
        // `state` agrees with `is_open`.
        let state_open = matches!(w.state(ts(at)), WindowState::Open { .. });
        assert_eq!(state_open, *open, "state at {at} ({what})");
    }
}

fn check_next_open(w: &CompiledWindows, cases: &[SearchCase]) {
    for (from, expected, what) in cases {
        assert_eq!(
            w.next_open(ts(from)),
            expected.map(ts),
            "next_open from {from} ({what})"
        );
    }
}

fn check_next_close(w: &CompiledWindows, cases: &[SearchCase]) {
    for (from, expected, what) in cases {
        assert_eq!(
            w.next_close(ts(from)),
            expected.map(ts),
            "next_close from {from} ({what})"
        );
    }
}

// -------------------------------------------------------------------------------------------
// 1. Weekdays 09:00 to 16:00 in Berlin, never Friday after 12:00
// -------------------------------------------------------------------------------------------

const WORKWEEK_TOML: &str = r#"
timezone = "Europe/Berlin"

[[open]]
cron = "0 0 9 * * Mon-Fri"
duration = "7h"

[[closed]]
cron = "0 0 12 * * Fri"
duration = "12h"
note = "no Friday afternoon releases"
"#;

fn workweek() -> CompiledWindows {
    ReleaseWindows::from_toml(WORKWEEK_TOML)
        .unwrap()
        .compile()
        .unwrap()
}

const WORKWEEK_OPEN: &[OpenCase] = &[
    (
        "2026-11-30T07:59:00.000Z",
        false,
        "Mon 08:59 CET, before the window",
    ),
    (
        "2026-11-30T08:00:00.000Z",
        true,
        "Mon 09:00 CET, the window opens",
    ),
    ("2026-11-30T14:59:59.000Z", true, "Mon 15:59:59 CET"),
    (
        "2026-11-30T14:59:59.999Z",
        true,
        "Mon 15:59:59.999 CET, last instant",
    ),
    (
        "2026-11-30T15:00:00.000Z",
        false,
        "Mon 16:00 CET, half-open end",
    ),
    ("2026-12-04T10:59:00.000Z", true, "Fri 11:59 CET"),
    (
        "2026-12-04T11:00:00.000Z",
        false,
        "Fri 12:00 CET, the Friday blackout",
    ),
    (
        "2026-12-04T13:00:00.000Z",
        false,
        "Fri 14:00 CET, open window but blacked out",
    ),
    (
        "2026-12-05T09:00:00.000Z",
        false,
        "Sat 10:00 CET, no open window",
    ),
    ("2026-12-06T11:00:00.000Z", false, "Sun 12:00 CET"),
    (
        "2026-06-08T07:00:00.000Z",
        true,
        "Mon 09:00 CEST in summer is 07:00 UTC",
    ),
    ("2026-06-08T06:59:59.999Z", false, "Mon 08:59:59.999 CEST"),
];

const WORKWEEK_NEXT_OPEN: &[SearchCase] = &[
    (
        "2026-12-04T11:30:00.000Z",
        Some("2026-12-07T08:00:00.000Z"),
        "Fri 12:30 CET -> Mon 09:00 CET",
    ),
    (
        "2026-12-06T11:00:00.000Z",
        Some("2026-12-07T08:00:00.000Z"),
        "Sun in winter -> Mon 09:00 CET = 08:00 UTC",
    ),
    (
        "2026-06-07T10:00:00.000Z",
        Some("2026-06-08T07:00:00.000Z"),
        "Sun in summer -> Mon 09:00 CEST = 07:00 UTC",
    ),
    (
        "2026-11-30T10:00:00.000Z",
        Some("2026-11-30T10:00:00.000Z"),
        "already open: itself",
    ),
    (
        "2026-11-30T15:00:00.000Z",
        Some("2026-12-01T08:00:00.000Z"),
        "Mon 16:00 -> Tue 09:00",
    ),
];

const WORKWEEK_NEXT_CLOSE: &[SearchCase] = &[
    (
        "2026-11-30T10:00:00.000Z",
        Some("2026-11-30T15:00:00.000Z"),
        "Mon 11:00 -> Mon 16:00 CET",
    ),
    (
        "2026-12-04T09:00:00.000Z",
        Some("2026-12-04T11:00:00.000Z"),
        "Fri 10:00 -> the blackout at Fri 12:00 CET",
    ),
    (
        "2026-12-05T09:00:00.000Z",
        Some("2026-12-05T09:00:00.000Z"),
        "already closed: itself",
    ),
];

#[test]
fn workweek_open_and_closed_instants() {
    check_open(&workweek(), WORKWEEK_OPEN);
}

#[test]
fn workweek_next_open() {
    check_next_open(&workweek(), WORKWEEK_NEXT_OPEN);
}

#[test]
fn workweek_next_close() {
    check_next_close(&workweek(), WORKWEEK_NEXT_CLOSE);
}

#[test]
fn workweek_state_names_the_blackout_and_the_next_change() {
    let w = workweek();
    let cases: &[(&str, WindowState)] = &[
        // Mon 10:00 CET: open until 16:00 CET.
        (
            "2026-11-30T09:00:00.000Z",
            WindowState::Open {
                closes_at: Some(ts("2026-11-30T15:00:00.000Z")),
            },
        ),
        // Fri 12:00 CET: the Friday blackout, open again Mon 09:00 CET.
        (
            "2026-12-04T11:00:00.000Z",
            WindowState::Closed {
                opens_at: Some(ts("2026-12-07T08:00:00.000Z")),
                blackout: Some("no Friday afternoon releases".to_string()),
            },
        ),
        // Fri 23:59 CET: still inside the 12-hour blackout.
        (
            "2026-12-04T22:59:00.000Z",
            WindowState::Closed {
                opens_at: Some(ts("2026-12-07T08:00:00.000Z")),
                blackout: Some("no Friday afternoon releases".to_string()),
            },
        ),
        // Sat 10:00 CET: the blackout ended at midnight; simply outside every open window.
        (
            "2026-12-05T09:00:00.000Z",
            WindowState::Closed {
                opens_at: Some(ts("2026-12-07T08:00:00.000Z")),
                blackout: None,
            },
        ),
    ];
    for (at, expected) in cases {
        assert_eq!(&w.state(ts(at)), expected, "state at {at}");
    }
}

#[test]
fn local_time_is_shown_in_the_windows_zone() {
    let w = workweek();
    assert_eq!(w.timezone(), "Europe/Berlin");
    let cases: &[(&str, &str)] = &[
        ("2026-11-30T08:00:00.000Z", "Mon 2026-11-30 09:00 CET"), // winter
        ("2026-06-08T07:00:00.000Z", "Mon 2026-06-08 09:00 CEST"), // summer
        ("2026-03-29T01:00:00.000Z", "Sun 2026-03-29 03:00 CEST"), // just after spring forward
        ("2026-10-25T00:30:00.000Z", "Sun 2026-10-25 02:30 CEST"), // repeated hour, first pass
        ("2026-10-25T01:30:00.000Z", "Sun 2026-10-25 02:30 CET"), // repeated hour, second pass
    ];
    for (at, expected) in cases {
        assert_eq!(w.local(ts(at)), *expected, "local({at})");
    }
}

// -------------------------------------------------------------------------------------------
// 2. A window spanning midnight
// -------------------------------------------------------------------------------------------

fn late_night_new_york() -> CompiledWindows {
    windows("America/New_York", &[("0 0 22 * * *", "4h")], &[])
}

const LATE_NIGHT_OPEN: &[OpenCase] = &[
    ("2026-12-11T02:59:00.000Z", false, "Dec 10 21:59 EST"),
    ("2026-12-11T03:00:00.000Z", true, "Dec 10 22:00 EST, opens"),
    ("2026-12-11T04:30:00.000Z", true, "Dec 10 23:30 EST"),
    (
        "2026-12-11T05:00:00.000Z",
        true,
        "Dec 11 00:00 EST, past midnight",
    ),
    ("2026-12-11T06:30:00.000Z", true, "Dec 11 01:30 EST"),
    ("2026-12-11T06:59:59.999Z", true, "Dec 11 01:59:59.999 EST"),
    (
        "2026-12-11T07:00:00.000Z",
        false,
        "Dec 11 02:00 EST, closes",
    ),
    ("2026-12-12T02:59:00.000Z", false, "Dec 11 21:59 EST"),
];

#[test]
fn a_window_spanning_midnight() {
    let w = late_night_new_york();
    check_open(&w, LATE_NIGHT_OPEN);
    check_next_close(
        &w,
        &[(
            "2026-12-11T04:30:00.000Z",
            Some("2026-12-11T07:00:00.000Z"),
            "23:30 EST -> 02:00 EST next day",
        )],
    );
    check_next_open(
        &w,
        &[(
            "2026-12-11T07:00:00.000Z",
            Some("2026-12-12T03:00:00.000Z"),
            "02:00 EST -> 22:00 EST",
        )],
    );
}

// -------------------------------------------------------------------------------------------
// 3. Daylight-saving changes
// -------------------------------------------------------------------------------------------

const DAILY_NINE_BERLIN: &[OpenCase] = &[
    ("2026-03-28T07:59:59.999Z", false, "Sat 08:59:59.999 CET"),
    (
        "2026-03-28T08:00:00.000Z",
        true,
        "Sat 09:00 CET = 08:00 UTC",
    ),
    ("2026-03-28T14:59:00.000Z", true, "Sat 15:59 CET"),
    ("2026-03-28T15:00:00.000Z", false, "Sat 16:00 CET"),
    (
        "2026-03-29T06:59:59.999Z",
        false,
        "Sun 08:59:59.999 CEST, after spring forward",
    ),
    (
        "2026-03-29T07:00:00.000Z",
        true,
        "Sun 09:00 CEST = 07:00 UTC",
    ),
    ("2026-03-29T13:59:59.999Z", true, "Sun 15:59:59.999 CEST"),
    (
        "2026-03-29T14:00:00.000Z",
        false,
        "Sun 16:00 CEST: 7h elapsed",
    ),
    (
        "2026-10-24T07:00:00.000Z",
        true,
        "Sat 09:00 CEST before fall back",
    ),
    (
        "2026-10-25T07:00:00.000Z",
        false,
        "Sun 08:00 CET after fall back",
    ),
    (
        "2026-10-25T08:00:00.000Z",
        true,
        "Sun 09:00 CET = 08:00 UTC",
    ),
    ("2026-10-25T15:00:00.000Z", false, "Sun 16:00 CET"),
];

#[test]
fn a_daily_window_follows_the_wall_clock_across_dst() {
    let w = windows("Europe/Berlin", &[("0 0 9 * * *", "7h")], &[]);
    check_open(&w, DAILY_NINE_BERLIN);
    check_next_open(
        &w,
        &[
            (
                "2026-03-28T15:00:00.000Z",
                Some("2026-03-29T07:00:00.000Z"),
                "CET evening -> CEST morning",
            ),
            (
                "2026-10-24T14:00:00.000Z",
                Some("2026-10-25T08:00:00.000Z"),
                "CEST evening -> CET morning",
            ),
        ],
    );
}

const NIGHT_ACROSS_THE_CHANGE: &[OpenCase] = &[
    ("2026-03-28T21:00:00.000Z", true, "Sat 22:00 CET, opens"),
    ("2026-03-29T03:59:59.999Z", true, "Sun 05:59:59.999 CEST"),
    (
        "2026-03-29T04:00:00.000Z",
        false,
        "Sun 06:00 CEST: 7h elapsed, 8h on the wall clock",
    ),
    ("2026-10-24T20:00:00.000Z", true, "Sat 22:00 CEST, opens"),
    ("2026-10-25T02:59:59.999Z", true, "Sun 03:59:59.999 CET"),
    (
        "2026-10-25T03:00:00.000Z",
        false,
        "Sun 04:00 CET: 7h elapsed, 6h on the wall clock",
    ),
];

#[test]
fn durations_are_elapsed_time_across_the_change() {
    let w = windows("Europe/Berlin", &[("0 0 22 * * *", "7h")], &[]);
    check_open(&w, NIGHT_ACROSS_THE_CHANGE);
    assert_eq!(
        w.local(ts("2026-03-29T04:00:00.000Z")),
        "Sun 2026-03-29 06:00 CEST"
    );
    assert_eq!(
        w.local(ts("2026-10-25T03:00:00.000Z")),
        "Sun 2026-10-25 04:00 CET"
    );
}

/// 02:30 does not exist in Berlin on 2026-03-29: cron 0.17 skips that day's start.
const SPRING_GAP_BERLIN: &[OpenCase] = &[
    (
        "2026-03-28T01:30:00.000Z",
        true,
        "Sat 02:30 CET, opens as usual",
    ),
    (
        "2026-03-29T00:30:00.000Z",
        false,
        "Sun 01:30 CET, before the gap",
    ),
    (
        "2026-03-29T01:00:00.000Z",
        false,
        "Sun 03:00 CEST, right after the gap: not opened",
    ),
    (
        "2026-03-29T01:30:00.000Z",
        false,
        "Sun 03:30 CEST: no window that day",
    ),
    (
        "2026-03-30T00:30:00.000Z",
        true,
        "Mon 02:30 CEST, opens again",
    ),
];

#[test]
fn a_start_in_the_spring_forward_gap_is_skipped() {
    let w = windows("Europe/Berlin", &[("0 30 2 * * *", "1h")], &[]);
    check_open(&w, SPRING_GAP_BERLIN);
    check_next_open(
        &w,
        &[(
            "2026-03-28T03:00:00.000Z",
            Some("2026-03-30T00:30:00.000Z"),
            "Sat after the window -> Mon 02:30 CEST, skipping Sunday",
        )],
    );
    let cases: &[(&str, &str, &str)] = &[
        // (zone, from, next firing of 02:30 daily)
        (
            "Europe/Berlin",
            "2026-03-28T12:00:00.000Z",
            "2026-03-30T00:30:00.000Z",
        ),
        (
            "America/New_York",
            "2026-03-07T12:00:00.000Z",
            "2026-03-09T06:30:00.000Z",
        ),
    ];
    for (zone, from, next) in cases {
        let c = CronSchedule::parse("0 30 2 * * *", zone).unwrap();
        assert_eq!(c.next_after(ts(from)), Some(ts(next)), "{zone} from {from}");
        assert_eq!(
            c.last_at_or_before(ts(next)),
            Some(ts(next)),
            "{zone} at {next}"
        );
    }
    // Walking back from Monday skips Sunday too: Sat 02:30 CET.
    let c = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
    assert_eq!(
        c.last_at_or_before(ts("2026-03-30T00:00:00.000Z")),
        Some(ts("2026-03-28T01:30:00.000Z"))
    );
}

/// 02:30 happens twice in Berlin on 2026-10-25: the window opens at both.
const FALL_BACK_TWICE_BERLIN: &[OpenCase] = &[
    ("2026-10-25T00:29:59.999Z", false, "02:29:59.999 CEST"),
    (
        "2026-10-25T00:30:00.000Z",
        true,
        "02:30 CEST, first pass opens",
    ),
    ("2026-10-25T00:59:59.999Z", true, "02:59:59.999 CEST"),
    (
        "2026-10-25T01:00:00.000Z",
        false,
        "02:00 CET, the hour repeats",
    ),
    ("2026-10-25T01:29:59.999Z", false, "02:29:59.999 CET"),
    (
        "2026-10-25T01:30:00.000Z",
        true,
        "02:30 CET, second pass opens",
    ),
    ("2026-10-25T01:59:59.999Z", true, "02:59:59.999 CET"),
    ("2026-10-25T02:00:00.000Z", false, "03:00 CET"),
];

#[test]
fn a_start_in_the_repeated_hour_opens_twice() {
    let w = windows("Europe/Berlin", &[("0 30 2 * * *", "30m")], &[]);
    check_open(&w, FALL_BACK_TWICE_BERLIN);
    check_next_open(
        &w,
        &[
            (
                "2026-10-25T00:45:00.000Z",
                Some("2026-10-25T00:45:00.000Z"),
                "inside the first pass",
            ),
            (
                "2026-10-25T01:00:00.000Z",
                Some("2026-10-25T01:30:00.000Z"),
                "between the passes -> 02:30 CET",
            ),
            (
                "2026-10-25T02:00:00.000Z",
                Some("2026-10-26T01:30:00.000Z"),
                "after both -> Mon 02:30 CET",
            ),
        ],
    );
    check_next_close(
        &w,
        &[(
            "2026-10-25T00:30:00.000Z",
            Some("2026-10-25T01:00:00.000Z"),
            "first pass ends at 02:00 CET",
        )],
    );

    // A 90-minute window: the two windows overlap into one stretch from 02:30 CEST to 03:00
    // CET (00:30 to 03:00 UTC).
    let long = windows("Europe/Berlin", &[("0 30 2 * * *", "90m")], &[]);
    check_open(
        &long,
        &[
            ("2026-10-25T01:59:00.000Z", true, "both windows"),
            (
                "2026-10-25T02:00:00.000Z",
                true,
                "only the second-pass window",
            ),
            ("2026-10-25T02:59:59.999Z", true, "03:59:59.999 CET"),
            ("2026-10-25T03:00:00.000Z", false, "04:00 CET"),
        ],
    );
    check_next_close(
        &long,
        &[(
            "2026-10-25T00:30:00.000Z",
            Some("2026-10-25T03:00:00.000Z"),
            "the stretch ends at 04:00 CET",
        )],
    );
}

#[test]
fn cron_firings_in_the_repeated_hour_are_in_timeline_order() {
    // (zone, cron, instant, next firing after it, last firing at or before it)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // Berlin, 02:30 fires at 00:30 and 01:30 UTC on 2026-10-25.
        // Before both.
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            "2026-10-24T23:00:00.000Z",
            "2026-10-25T00:30:00.000Z",
            "2026-10-24T00:30:00.000Z",
        ),
        // 02:40 CEST, between the passes (the repeat is still ahead on the timeline).
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            "2026-10-25T00:40:00.000Z",
            "2026-10-25T01:30:00.000Z",
            "2026-10-25T00:30:00.000Z",
        ),
        // 02:20 CET, second pass (the first pass is behind on the timeline).
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            "2026-10-25T01:20:00.000Z",
            "2026-10-25T01:30:00.000Z",
            "2026-10-25T00:30:00.000Z",
        ),
        // Exactly the first firing.
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            "2026-10-25T00:30:00.000Z",
            "2026-10-25T01:30:00.000Z",
            "2026-10-25T00:30:00.000Z",
        ),
        // Exactly the second firing.
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            "2026-10-25T01:30:00.000Z",
            "2026-10-26T01:30:00.000Z",
            "2026-10-25T01:30:00.000Z",
        ),
        // After both.
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            "2026-10-25T03:00:00.000Z",
            "2026-10-26T01:30:00.000Z",
            "2026-10-25T01:30:00.000Z",
        ),
        // New York, 01:30 fires at 05:30 (EDT) and 06:30 (EST) UTC on 2026-11-01.
        (
            "America/New_York",
            "0 30 1 * * *",
            "2026-11-01T05:45:00.000Z",
            "2026-11-01T06:30:00.000Z",
            "2026-11-01T05:30:00.000Z",
        ),
        (
            "America/New_York",
            "0 30 1 * * *",
            "2026-11-01T06:15:00.000Z",
            "2026-11-01T06:30:00.000Z",
            "2026-11-01T05:30:00.000Z",
        ),
        // Every 20 minutes through the repeated hour: 02:00 CEST, 02:20 CEST, ... 02:40 CET.
        (
            "Europe/Berlin",
            "0 */20 * * * *",
            "2026-10-25T00:50:00.000Z",
            "2026-10-25T01:00:00.000Z",
            "2026-10-25T00:40:00.000Z",
        ),
        (
            "Europe/Berlin",
            "0 */20 * * * *",
            "2026-10-25T01:10:00.000Z",
            "2026-10-25T01:20:00.000Z",
            "2026-10-25T01:00:00.000Z",
        ),
    ];
    for (zone, cron, at, next, last) in cases {
        let c = CronSchedule::parse(cron, zone).unwrap();
        assert_eq!(
            c.next_after(ts(at)),
            Some(ts(next)),
            "{cron} in {zone}: next after {at}"
        );
        assert_eq!(
            c.last_at_or_before(ts(at)),
            Some(ts(last)),
            "{cron} in {zone}: last at or before {at}"
        );
    }
}

#[test]
fn a_daily_window_in_new_york_across_both_changes() {
    let w = windows("America/New_York", &[("0 0 9 * * *", "8h")], &[]);
    check_open(
        &w,
        &[
            (
                "2026-03-07T14:00:00.000Z",
                true,
                "Sat 09:00 EST = 14:00 UTC",
            ),
            (
                "2026-03-08T13:00:00.000Z",
                true,
                "Sun 09:00 EDT = 13:00 UTC",
            ),
            ("2026-03-08T12:59:59.999Z", false, "Sun 08:59:59.999 EDT"),
            ("2026-03-08T21:00:00.000Z", false, "Sun 17:00 EDT"),
            ("2026-10-31T13:00:00.000Z", true, "Sat 09:00 EDT"),
            ("2026-11-01T13:00:00.000Z", false, "Sun 08:00 EST"),
            (
                "2026-11-01T14:00:00.000Z",
                true,
                "Sun 09:00 EST = 14:00 UTC",
            ),
        ],
    );
}

// -------------------------------------------------------------------------------------------
// 4. Time zones
// -------------------------------------------------------------------------------------------

#[test]
fn the_same_spec_in_different_zones() {
    let tokyo = windows("Asia/Tokyo", &[("0 0 9 * * *", "8h")], &[]);
    let utc = windows("UTC", &[("0 0 9 * * *", "8h")], &[]);
    // (instant, open in Tokyo, open in UTC, what it is)
    let cases: &[(&str, bool, bool, &str)] = &[
        (
            "2026-06-01T00:00:00.000Z",
            true,
            false,
            "09:00 JST / 00:00 UTC",
        ),
        (
            "2026-06-01T03:00:00.000Z",
            true,
            false,
            "12:00 JST / 03:00 UTC",
        ),
        (
            "2026-06-01T08:00:00.000Z",
            false,
            false,
            "17:00 JST / 08:00 UTC",
        ),
        (
            "2026-06-01T09:00:00.000Z",
            false,
            true,
            "18:00 JST / 09:00 UTC",
        ),
        (
            "2026-06-01T16:59:00.000Z",
            false,
            true,
            "01:59 JST / 16:59 UTC",
        ),
    ];
    for (at, in_tokyo, in_utc, what) in cases {
        assert_eq!(tokyo.is_open(ts(at)), *in_tokyo, "Tokyo at {at} ({what})");
        assert_eq!(utc.is_open(ts(at)), *in_utc, "UTC at {at} ({what})");
    }
    let from = ts("2026-06-01T01:00:00.000Z");
    assert_eq!(tokyo.next_close(from), Some(ts("2026-06-01T08:00:00.000Z")));
    assert_eq!(utc.next_open(from), Some(ts("2026-06-01T09:00:00.000Z")));
    let tokyo_cron = CronSchedule::parse("0 0 9 * * *", "Asia/Tokyo").unwrap();
    let utc_cron = CronSchedule::parse("0 0 9 * * *", "UTC").unwrap();
    assert_eq!(
        tokyo_cron.next_after(from),
        Some(ts("2026-06-02T00:00:00.000Z"))
    );
    assert_eq!(
        utc_cron.next_after(from),
        Some(ts("2026-06-01T09:00:00.000Z"))
    );
    assert_eq!(tokyo.local(from), "Mon 2026-06-01 10:00 JST");
    assert_eq!(utc.local(from), "Mon 2026-06-01 01:00 UTC");
}

// -------------------------------------------------------------------------------------------
// 5. Blackouts only, and no windows at all
// -------------------------------------------------------------------------------------------

const HOLIDAY_FREEZE_JSON: &str = r#"{
  "timezone": "UTC",
  "closed": [
    { "cron": "0 0 0 20 Dec *", "duration": "7d", "note": "holiday freeze" }
  ]
}"#;

const HOLIDAY_FREEZE_OPEN: &[OpenCase] = &[
    (
        "2026-12-01T10:00:00.000Z",
        true,
        "no open windows: open by default",
    ),
    ("2026-12-19T23:59:59.999Z", true, "just before the freeze"),
    ("2026-12-20T00:00:00.000Z", false, "the freeze starts"),
    (
        "2026-12-26T23:59:59.999Z",
        false,
        "last instant of the freeze",
    ),
    ("2026-12-27T00:00:00.000Z", true, "the freeze is over"),
];

#[test]
fn closed_windows_alone_are_blackouts() {
    let raw = ReleaseWindows::from_json(HOLIDAY_FREEZE_JSON).unwrap();
    assert!(raw.open.is_empty());
    let w = raw.compile().unwrap();
    check_open(&w, HOLIDAY_FREEZE_OPEN);
    check_next_close(
        &w,
        &[
            (
                "2026-11-01T00:00:00.000Z",
                Some("2026-12-20T00:00:00.000Z"),
                "the next freeze",
            ),
            (
                "2026-12-27T00:00:00.000Z",
                Some("2027-12-20T00:00:00.000Z"),
                "next year's freeze",
            ),
        ],
    );
    assert_eq!(
        w.state(ts("2026-12-24T12:00:00.000Z")),
        WindowState::Closed {
            opens_at: Some(ts("2026-12-27T00:00:00.000Z")),
            blackout: Some("holiday freeze".to_string()),
        }
    );
    // A closed window without a note is named by its cron expression.
    let unnamed = windows("UTC", &[], &[("0 0 0 20 Dec *", "7d")]);
    assert_eq!(
        unnamed.state(ts("2026-12-24T12:00:00.000Z")),
        WindowState::Closed {
            opens_at: Some(ts("2026-12-27T00:00:00.000Z")),
            blackout: Some("0 0 0 20 Dec *".to_string()),
        }
    );
}

#[test]
fn no_windows_at_all_is_always_open() {
    let w = ReleaseWindows::from_toml("timezone = \"UTC\"\n")
        .unwrap()
        .compile()
        .unwrap();
    for at in [
        "1970-01-01T00:00:00.000Z",
        "2026-11-30T08:00:00.000Z",
        "2099-12-31T23:59:59.999Z",
    ] {
        assert!(w.is_open(ts(at)), "{at}");
        assert_eq!(w.next_open(ts(at)), Some(ts(at)), "{at}");
        assert_eq!(w.next_close(ts(at)), None, "{at}");
        assert_eq!(
            w.state(ts(at)),
            WindowState::Open { closes_at: None },
            "{at}"
        );
    }
}

#[test]
fn searches_stop_at_400_days() {
    // Open only in 2020: never again.
    let past = windows("UTC", &[("0 0 9 * * * 2020", "1h")], &[]);
    let now = ts("2026-11-30T08:00:00.000Z");
    assert!(!past.is_open(now));
    assert_eq!(past.next_open(now), None);
    assert_eq!(
        past.state(now),
        WindowState::Closed {
            opens_at: None,
            blackout: None
        }
    );
    // Open on 2028-01-01 only: more than 400 days after 2026-11-01 (2027-12-06), but within
    // 400 days of 2027-12-01.
    let later = windows("UTC", &[("0 0 9 1 Jan * 2028", "1h")], &[]);
    assert_eq!(later.next_open(ts("2026-11-01T00:00:00.000Z")), None);
    assert_eq!(later.next_open(now), Some(ts("2028-01-01T09:00:00.000Z")));
    assert_eq!(
        later.next_open(ts("2027-12-01T00:00:00.000Z")),
        Some(ts("2028-01-01T09:00:00.000Z"))
    );
    // An open window that covers everything but a yearly hour: closes within 400 days.
    let always = windows("UTC", &[], &[("0 0 0 1 Jan *", "1h")]);
    assert_eq!(always.next_close(now), Some(ts("2027-01-01T00:00:00.000Z")));
}

// -------------------------------------------------------------------------------------------
// 6. Errors name their field
// -------------------------------------------------------------------------------------------

#[test]
fn errors_name_their_field() {
    // (TOML text, field, a piece of the message)
    let cases: &[(&str, &str, &str)] = &[
        // Unknown zone, named in the message.
        ("timezone = \"Europe/Berln\"", "timezone", "Europe/Berln"),
        // Five-field Unix cron.
        (
            "timezone = \"UTC\"\n[[open]]\ncron = \"0 9 * * Mon-Fri\"\nduration = \"7h\"",
            "open[0].cron",
            "6 or 7 fields",
        ),
        // Day-of-week 0 (Sunday is 1 here).
        (
            "timezone = \"UTC\"\n[[open]]\ncron = \"0 0 9 * * 0\"\nduration = \"7h\"",
            "open[0].cron",
            "Sunday = 1",
        ),
        // Hour 25, in the second closed window.
        (
            "timezone = \"UTC\"\n[[closed]]\ncron = \"0 0 1 * * *\"\nduration = \"1h\"\n[[closed]]\ncron = \"0 0 25 * * *\"\nduration = \"1h\"",
            "closed[1].cron",
            "Hours",
        ),
        // Zero duration.
        (
            "timezone = \"UTC\"\n[[closed]]\ncron = \"0 0 1 * * *\"\nduration = \"1h\"\n[[closed]]\ncron = \"0 0 2 * * *\"\nduration = \"0\"",
            "closed[1].duration",
            "more than 0",
        ),
        // More than 7 days.
        (
            "timezone = \"UTC\"\n[[open]]\ncron = \"0 0 9 * * Mon\"\nduration = \"8d\"",
            "open[0].duration",
            "at most 7d",
        ),
        // Not a duration at all.
        (
            "timezone = \"UTC\"\n[[open]]\ncron = \"0 0 9 * * Mon\"\nduration = \"soon\"",
            "open[0].duration",
            "soon",
        ),
        // Unknown top-level field.
        ("timezone = \"UTC\"\ncolour = \"red\"", "colour", "unknown field"),
        // Unknown field in a window.
        (
            "timezone = \"UTC\"\n[[open]]\ncron = \"0 0 9 * * Mon\"\nduration = \"1h\"\nstarts = \"09:00\"",
            "open[0].starts",
            "unknown field",
        ),
        // Missing cron.
        ("timezone = \"UTC\"\n[[open]]\nduration = \"1h\"", "open[0].cron", "missing field"),
        // Missing zone.
        ("[[open]]\ncron = \"0 0 9 * * Mon\"\nduration = \"1h\"", "timezone", "missing field"),
    ];
    for (text, field, piece) in cases {
        let err = ReleaseWindows::from_toml(text).unwrap_err();
        assert_eq!(err.field, *field, "{text:?}: {err}");
        assert!(
            err.message.contains(piece),
            "{text:?}: {err} lacks {piece:?}"
        );
    }
}

#[test]
fn json_errors_name_their_field() {
    let cases: &[(&str, &str)] = &[
        (r#"{"timezone": "Mars/Olympus"}"#, "timezone"),
        (
            r#"{"timezone": "UTC", "open": [{"cron": "* * *", "duration": "1h"}]}"#,
            "open[0].cron",
        ),
        (
            r#"{"timezone": "UTC", "closed": [{"cron": "0 0 9 * * *", "duration": "1h", "why": "x"}]}"#,
            "closed[0].why",
        ),
        (r#"{"timezone": "UTC", "colour": 1}"#, "colour"),
    ];
    for (text, field) in cases {
        let err = ReleaseWindows::from_json(text).unwrap_err();
        assert_eq!(err.field, *field, "{text}: {err}");
    }
}

#[test]
fn compile_checks_windows_built_in_code() {
    let bad = ReleaseWindows {
        timezone: "UTC".to_string(),
        open: vec![spec("0 0 9 * * Mon", "1h")],
        closed: vec![spec("0 0 9 * * Mon", "1h"), spec("0 0 9 * * Mon", "0")],
    };
    assert_eq!(bad.compile().unwrap_err().field, "closed[1].duration");
}

#[test]
fn windows_round_trip_through_toml_and_json() {
    let raw = ReleaseWindows::from_toml(WORKWEEK_TOML).unwrap();
    assert_eq!(raw.timezone, "Europe/Berlin");
    assert_eq!(raw.open.len(), 1);
    assert_eq!(
        raw.closed[0].note.as_deref(),
        Some("no Friday afternoon releases")
    );
    let json = serde_json::to_string(&raw).unwrap();
    assert_eq!(ReleaseWindows::from_json(&json).unwrap(), raw);
    let toml_text = toml::to_string(&raw).unwrap();
    assert_eq!(ReleaseWindows::from_toml(&toml_text).unwrap(), raw);
    // No note: the field is left out.
    assert!(!serde_json::to_string(&raw.open[0])
        .unwrap()
        .contains("note"));
}

// -------------------------------------------------------------------------------------------
// 7. Cron schedules and ISO weeks
// -------------------------------------------------------------------------------------------

#[test]
fn cron_schedule_next_and_last() {
    // (zone, instant, next after it, last at or before it), for `0 0 9 * * Mon`.
    let cases: &[(&str, &str, &str, &str)] = &[
        // UTC: Monday 2026-11-30 09:00.
        (
            "UTC",
            "2026-11-30T08:59:59.999Z",
            "2026-11-30T09:00:00.000Z",
            "2026-11-23T09:00:00.000Z",
        ),
        (
            "UTC",
            "2026-11-30T09:00:00.000Z",
            "2026-12-07T09:00:00.000Z",
            "2026-11-30T09:00:00.000Z",
        ), // strictly after / at
        (
            "UTC",
            "2026-11-30T09:00:00.001Z",
            "2026-12-07T09:00:00.000Z",
            "2026-11-30T09:00:00.000Z",
        ),
        (
            "UTC",
            "2026-12-02T12:00:00.000Z",
            "2026-12-07T09:00:00.000Z",
            "2026-11-30T09:00:00.000Z",
        ),
        // Berlin in winter: 09:00 CET = 08:00 UTC.
        (
            "Europe/Berlin",
            "2026-11-30T00:00:00.000Z",
            "2026-11-30T08:00:00.000Z",
            "2026-11-23T08:00:00.000Z",
        ),
        // Berlin in summer: 09:00 CEST = 07:00 UTC.
        (
            "Europe/Berlin",
            "2026-06-01T00:00:00.000Z",
            "2026-06-01T07:00:00.000Z",
            "2026-05-25T07:00:00.000Z",
        ),
        // Across spring forward: Mon 2026-03-23 CET, Mon 2026-03-30 CEST.
        (
            "Europe/Berlin",
            "2026-03-25T00:00:00.000Z",
            "2026-03-30T07:00:00.000Z",
            "2026-03-23T08:00:00.000Z",
        ),
        // Tokyo: Monday 09:00 JST = Monday 00:00 UTC.
        (
            "Asia/Tokyo",
            "2026-11-29T23:00:00.000Z",
            "2026-11-30T00:00:00.000Z",
            "2026-11-23T00:00:00.000Z",
        ),
    ];
    for (zone, at, next, last) in cases {
        let c = CronSchedule::parse("0 0 9 * * Mon", zone).unwrap();
        assert_eq!(c.expr(), "0 0 9 * * Mon");
        assert_eq!(c.timezone(), *zone);
        assert_eq!(
            c.next_after(ts(at)),
            Some(ts(next)),
            "{zone}: next after {at}"
        );
        assert_eq!(
            c.last_at_or_before(ts(at)),
            Some(ts(last)),
            "{zone}: last at or before {at}"
        );
    }
    // Beyond the years cron knows: nothing.
    let once = CronSchedule::parse("0 0 9 1 Jan * 2020", "UTC").unwrap();
    assert_eq!(once.next_after(ts("2026-01-01T00:00:00.000Z")), None);
    assert_eq!(
        once.last_at_or_before(ts("2026-01-01T00:00:00.000Z")),
        Some(ts("2020-01-01T09:00:00.000Z"))
    );
}

#[test]
fn cron_schedule_errors_name_their_field() {
    let cases: &[(&str, &str, &str)] = &[
        // (cron, zone, field)
        ("0 9 * * Mon", "UTC", "cron"),
        ("0 0 9 * * Funday", "UTC", "cron"),
        ("", "UTC", "cron"),
        ("0 0 9 * * Mon", "Europe/Berln", "timezone"),
        ("0 0 9 * * Mon", "", "timezone"),
    ];
    for (cron, zone, field) in cases {
        let err = CronSchedule::parse(cron, zone).unwrap_err();
        assert_eq!(err.field, *field, "{cron:?} in {zone:?}: {err}");
    }
    assert!(CronSchedule::parse("@weekly", "UTC").is_ok());
}

/// (instant, zone, label, start, end)
const WEEKS_CONTAINING: &[(&str, &str, &str, &str, &str)] = &[
    // Tuesday 2026-11-24 in UTC.
    (
        "2026-11-24T12:00:00.000Z",
        "UTC",
        "2026-W48",
        "2026-11-23T00:00:00.000Z",
        "2026-11-30T00:00:00.000Z",
    ),
    // Monday 00:00 itself starts its week.
    (
        "2026-11-30T00:00:00.000Z",
        "UTC",
        "2026-W49",
        "2026-11-30T00:00:00.000Z",
        "2026-12-07T00:00:00.000Z",
    ),
    // Sunday 23:30 UTC is already Monday 00:30 in Berlin: the next week there.
    (
        "2026-11-29T23:30:00.000Z",
        "UTC",
        "2026-W48",
        "2026-11-23T00:00:00.000Z",
        "2026-11-30T00:00:00.000Z",
    ),
    (
        "2026-11-29T23:30:00.000Z",
        "Europe/Berlin",
        "2026-W49",
        "2026-11-29T23:00:00.000Z",
        "2026-12-06T23:00:00.000Z",
    ),
    // Tokyo: Monday 00:00 JST is Sunday 15:00 UTC.
    (
        "2026-11-29T15:00:00.000Z",
        "Asia/Tokyo",
        "2026-W49",
        "2026-11-29T15:00:00.000Z",
        "2026-12-06T15:00:00.000Z",
    ),
    (
        "2026-11-29T14:59:59.999Z",
        "Asia/Tokyo",
        "2026-W48",
        "2026-11-22T15:00:00.000Z",
        "2026-11-29T15:00:00.000Z",
    ),
    // New York: Monday 00:00 EST is 05:00 UTC.
    (
        "2026-11-30T04:59:59.999Z",
        "America/New_York",
        "2026-W48",
        "2026-11-23T05:00:00.000Z",
        "2026-11-30T05:00:00.000Z",
    ),
    // The week of the fall back in Berlin is 7 days and 1 hour long: CEST to CET.
    (
        "2026-10-21T12:00:00.000Z",
        "Europe/Berlin",
        "2026-W43",
        "2026-10-18T22:00:00.000Z",
        "2026-10-25T23:00:00.000Z",
    ),
    // ISO week-year edge: Thu 2026-12-31 and Fri 2027-01-01 are in 2026-W53 (Mon 2026-12-28).
    (
        "2026-12-31T12:00:00.000Z",
        "UTC",
        "2026-W53",
        "2026-12-28T00:00:00.000Z",
        "2027-01-04T00:00:00.000Z",
    ),
    (
        "2027-01-01T12:00:00.000Z",
        "UTC",
        "2026-W53",
        "2026-12-28T00:00:00.000Z",
        "2027-01-04T00:00:00.000Z",
    ),
    (
        "2027-01-04T00:00:00.000Z",
        "UTC",
        "2027-W01",
        "2027-01-04T00:00:00.000Z",
        "2027-01-11T00:00:00.000Z",
    ),
    // Sun 2025-12-28 is in 2025-W52; Mon 2025-12-29 starts 2026-W01.
    (
        "2025-12-28T12:00:00.000Z",
        "UTC",
        "2025-W52",
        "2025-12-22T00:00:00.000Z",
        "2025-12-29T00:00:00.000Z",
    ),
    (
        "2025-12-29T12:00:00.000Z",
        "UTC",
        "2026-W01",
        "2025-12-29T00:00:00.000Z",
        "2026-01-05T00:00:00.000Z",
    ),
];

#[test]
fn week_containing_an_instant() {
    for (at, zone, label, start, end) in WEEKS_CONTAINING {
        let w = week_containing(ts(at), zone).unwrap();
        assert_eq!(w.label, *label, "{at} in {zone}");
        assert_eq!(w.start, ts(start), "{at} in {zone}");
        assert_eq!(w.end, ts(end), "{at} in {zone}");
    }
}

#[test]
fn last_completed_week_ended_at_or_before() {
    // (instant, zone, label of the last completed week)
    let cases: &[(&str, &str, &str)] = &[
        ("2026-12-02T10:00:00.000Z", "UTC", "2026-W48"),
        ("2026-11-30T00:00:00.000Z", "UTC", "2026-W48"), // W48 ended exactly now
        ("2026-11-29T23:59:59.999Z", "UTC", "2026-W47"),
        ("2026-11-29T23:30:00.000Z", "Europe/Berlin", "2026-W48"), // Mon 00:30 CET
        ("2027-01-04T09:00:00.000Z", "UTC", "2026-W53"),
        ("2027-01-01T09:00:00.000Z", "UTC", "2026-W52"),
    ];
    for (at, zone, label) in cases {
        let w = last_completed_week(ts(at), zone).unwrap();
        assert_eq!(w.label, *label, "{at} in {zone}");
        assert!(w.end <= ts(at), "{at} in {zone}: ended at {}", w.end);
        assert_eq!(week_containing(w.start, zone).unwrap(), w);
    }
    let w = last_completed_week(ts("2026-12-02T10:00:00.000Z"), "Europe/Berlin").unwrap();
    assert_eq!(
        (w.start, w.end),
        (
            ts("2026-11-22T23:00:00.000Z"),
            ts("2026-11-29T23:00:00.000Z")
        )
    );
}

#[test]
fn parse_week_takes_an_iso_week_or_a_date() {
    // (text, zone, label, start)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("2026-W48", "UTC", "2026-W48", "2026-11-23T00:00:00.000Z"),
        (
            "2026-W48",
            "Europe/Berlin",
            "2026-W48",
            "2026-11-22T23:00:00.000Z",
        ),
        ("2026-w48", "UTC", "2026-W48", "2026-11-23T00:00:00.000Z"),
        ("2026-W1", "UTC", "2026-W01", "2025-12-29T00:00:00.000Z"),
        ("2026-W53", "UTC", "2026-W53", "2026-12-28T00:00:00.000Z"),
        ("2026-11-24", "UTC", "2026-W48", "2026-11-23T00:00:00.000Z"),
        ("2026-11-29", "UTC", "2026-W48", "2026-11-23T00:00:00.000Z"), // Sunday
        ("2027-01-01", "UTC", "2026-W53", "2026-12-28T00:00:00.000Z"), // ISO week-year 2026
        (
            "2026-12-31",
            "Asia/Tokyo",
            "2026-W53",
            "2026-12-27T15:00:00.000Z",
        ),
    ];
    for (text, zone, label, start) in cases {
        let w = parse_week(text, zone).unwrap();
        assert_eq!(w.label, *label, "{text} in {zone}");
        assert_eq!(w.start, ts(start), "{text} in {zone}");
        assert_eq!(
            w.end.millis_since(w.start),
            7 * 86_400_000,
            "{text} in {zone}"
        );
    }
    // (text, zone, field)
    let errors: &[(&str, &str, &str)] = &[
        ("2026-W54", "UTC", "week"),
        ("2025-W53", "UTC", "week"), // 2025 has 52 ISO weeks
        ("2026-W00", "UTC", "week"),
        ("2026-13-01", "UTC", "week"),
        ("last week", "UTC", "week"),
        ("2026-W48", "Nowhere/City", "timezone"),
    ];
    for (text, zone, field) in errors {
        let err = parse_week(text, zone).unwrap_err();
        assert_eq!(err.field, *field, "{text} in {zone}: {err}");
    }
    assert!(week_containing(ts("2026-11-24T12:00:00.000Z"), "Nowhere/City").is_err());
}
