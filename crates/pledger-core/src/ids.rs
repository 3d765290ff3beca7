//! Identifiers and time values. All of them are plain data: the core never reads a clock or
//! draws a random number; callers pass `now`, salts and event ids in.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Longest prompt name. Prompt names are NATS subject tokens and KV keys.
pub const MAX_PROMPT_NAME_LEN: usize = 64;

/// A prompt's name: lowercase ASCII letters, digits, `-` and `_`, starting with a letter or
/// digit. It is a subject token (`pledger.ledger.<prompt>.prompt`) and a KV key, so dots,
/// wildcards and spaces are refused.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct PromptName(String);

impl PromptName {
    pub fn parse(raw: &str) -> Result<PromptName, FieldError> {
        PromptName::check(raw)?;
        Ok(PromptName(raw.to_string()))
    }
    fn check(raw: &str) -> Result<(), FieldError> {
        let ok_first = raw
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = raw
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
        if raw.is_empty() || raw.len() > MAX_PROMPT_NAME_LEN || !ok_first || !ok_rest {
            return Err(FieldError::new(
                "prompt",
                format!(
                    "`{raw}` is not a valid prompt name (1 to {MAX_PROMPT_NAME_LEN} characters of a-z, 0-9, `-`, `_`, starting with a letter or digit)"
                ),
            ));
        }
        Ok(())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PromptName {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        PromptName::check(&value)?;
        Ok(PromptName(value))
    }
}
impl From<PromptName> for String {
    fn from(value: PromptName) -> Self {
        value.0
    }
}
impl fmt::Display for PromptName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A prompt version id: `sha256:` and the hex SHA-256 of the artifact's canonical JSON.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct VersionId(String);

pub const VERSION_ID_PREFIX: &str = "sha256:";

impl VersionId {
    pub fn from_digest_hex(hex: &str) -> VersionId {
        VersionId(format!("{VERSION_ID_PREFIX}{hex}"))
    }
    pub fn parse(raw: &str) -> Result<VersionId, FieldError> {
        VersionId::check(raw)?;
        Ok(VersionId(raw.to_string()))
    }
    fn check(raw: &str) -> Result<(), FieldError> {
        let hex = raw.strip_prefix(VERSION_ID_PREFIX).unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(FieldError::new(
                "version",
                format!(
                    "`{raw}` is not a version id (expected `sha256:` and 64 lowercase hex digits)"
                ),
            ));
        }
        Ok(())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        let hex = &self.0[VERSION_ID_PREFIX.len()..];
        &hex[..12]
    }
    /// Does a user-typed reference (`sha256:ab12…`, `ab12…`) name this version?
    pub fn matches_prefix(&self, reference: &str) -> bool {
        let hex = reference
            .strip_prefix(VERSION_ID_PREFIX)
            .unwrap_or(reference);
        !hex.is_empty() && self.0[VERSION_ID_PREFIX.len()..].starts_with(hex)
    }
}

impl TryFrom<String> for VersionId {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        VersionId::check(&value)?;
        Ok(VersionId(value))
    }
}
impl From<VersionId> for String {
    fn from(value: VersionId) -> Self {
        value.0
    }
}
impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A release id: `<prompt>-r<n>`, where `n` counts the prompt's proposals from 1. The prompt
/// aggregate assigns it, so it is unique without coordination beyond the ledger's own
/// expected-sequence check.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId {
    prompt: PromptName,
    number: u32,
}

impl ReleaseId {
    pub fn new(prompt: PromptName, number: u32) -> ReleaseId {
        ReleaseId { prompt, number }
    }
    pub fn parse(raw: &str) -> Result<ReleaseId, FieldError> {
        let bad = || {
            FieldError::new(
                "release",
                format!("`{raw}` is not a release id (expected `<prompt>-r<number>`, e.g. `support-triage-r3`)"),
            )
        };
        // The last `-r` (a byte search: this runs for every outcome a service reports).
        let at = raw
            .as_bytes()
            .windows(2)
            .rposition(|w| w == b"-r")
            .ok_or_else(bad)?;
        let (prompt, number) = (&raw[..at], &raw[at + 2..]);
        if number.is_empty()
            || !number.chars().all(|c| c.is_ascii_digit())
            || number.starts_with('0')
        {
            return Err(bad());
        }
        let number: u32 = number.parse().map_err(|_| bad())?;
        let prompt = PromptName::parse(prompt).map_err(|_| bad())?;
        Ok(ReleaseId { prompt, number })
    }
    /// Whether `raw` is a release id ([`ReleaseId::parse`] would accept it), allocating
    /// nothing: the check outcomes' stage visits take on the ingest path.
    pub fn is_valid(raw: &str) -> bool {
        let Some(at) = raw.as_bytes().windows(2).rposition(|w| w == b"-r") else {
            return false;
        };
        let (prompt, number) = (&raw[..at], &raw[at + 2..]);
        canonical_number(number)
            && number.parse::<u32>().is_ok()
            && PromptName::check(prompt).is_ok()
    }
    pub fn prompt(&self) -> &PromptName {
        &self.prompt
    }
    pub fn number(&self) -> u32 {
        self.number
    }
    /// The subject token of this release inside its prompt's family: `r<n>`.
    pub fn token(&self) -> String {
        format!("r{}", self.number)
    }
}

/// Decimal digits without a leading zero (or `0` itself): the one text of a number.
pub(crate) fn canonical_number(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|c| c.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

impl TryFrom<String> for ReleaseId {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ReleaseId::parse(&value)
    }
}
impl From<ReleaseId> for String {
    fn from(value: ReleaseId) -> Self {
        value.to_string()
    }
}
impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-r{}", self.prompt, self.number)
    }
}

/// Who did something: a person's or a worker's name, as given by `--as` / `PLEDGER_ACTOR`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    pub fn parse(raw: &str) -> Result<Actor, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > 128 || trimmed.chars().any(|c| c.is_control()) {
            return Err(FieldError::new(
                "actor",
                format!("`{raw}` is not a valid actor (1 to 128 printable characters)"),
            ));
        }
        Ok(Actor(trimmed.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Actor {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Actor::parse(&value)
    }
}
impl From<Actor> for String {
    fn from(value: Actor) -> Self {
        value.0
    }
}
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 9999-12-31T23:59:59.999Z, the last instant with a four-digit year.
const LAST_WRITABLE_MILLIS: i64 = 253_402_300_799_999;

/// A point in time: milliseconds since the Unix epoch, UTC. On the wire it is an RFC 3339
/// string with millisecond precision (`2026-11-24T09:30:00.000Z`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }
    pub const fn unix_millis(self) -> i64 {
        self.0
    }
    pub fn plus(self, duration: DurationSpec) -> Timestamp {
        Timestamp(self.0.saturating_add(duration.millis() as i64))
    }
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only, as pledger writes it).
    pub fn parse_rfc3339(raw: &str) -> Result<Timestamp, FieldError> {
        let bad = || {
            FieldError::new(
                "timestamp",
                format!("`{raw}` is not an RFC 3339 UTC time like 2026-11-24T09:30:00.000Z"),
            )
        };
        let b = raw.as_bytes();
        if b.len() < 20
            || !raw.is_ascii()
            || !raw.ends_with('Z')
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |s: &str| {
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<i64>().map_err(|_| bad())
        };
        let (y, mo, d) = (num(&raw[0..4])?, num(&raw[5..7])?, num(&raw[8..10])?);
        let (h, mi, s) = (num(&raw[11..13])?, num(&raw[14..16])?, num(&raw[17..19])?);
        let frac = &raw[19..raw.len() - 1];
        let millis = if frac.is_empty() {
            0
        } else {
            let digits = frac.strip_prefix('.').ok_or_else(bad)?;
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let padded = format!("{digits:0<3}");
            num(&padded[..3])?
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        let days = days_from_civil(y, mo, d);
        // Refuse days the month does not have (2026-02-30) rather than roll them over.
        if civil_from_days(days) != (y, mo, d) {
            return Err(bad());
        }
        let millis = ((days * 86_400) + h * 3600 + mi * 60 + s) * 1000 + millis;
        // A leap second on 9999-12-31 would land in year 10000, which does not write back in
        // this format.
        if millis > LAST_WRITABLE_MILLIS {
            return Err(bad());
        }
        Ok(Timestamp(millis))
    }
}

impl TryFrom<String> for Timestamp {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Timestamp::parse_rfc3339(&value)
    }
}
impl From<Timestamp> for String {
    fn from(value: Timestamp) -> Self {
        value.to_rfc3339()
    }
}
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain description, written from it).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// A duration written the way people write them in plans: `90s`, `30m`, `1h30m`, `2d`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct DurationSpec(u64);

impl DurationSpec {
    pub const ZERO: DurationSpec = DurationSpec(0);
    pub const fn from_millis(millis: u64) -> DurationSpec {
        DurationSpec(millis)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
    pub fn parse(raw: &str) -> Result<DurationSpec, FieldError> {
        let bad = || {
            FieldError::new(
                "duration",
                format!("`{raw}` is not a duration (use e.g. `45s`, `30m`, `1h30m`, `2d`)"),
            )
        };
        let mut total: u64 = 0;
        let mut digits = String::new();
        if raw.is_empty() {
            return Err(bad());
        }
        if raw == "0" {
            return Ok(DurationSpec(0));
        }
        for c in raw.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                _ => return Err(bad()),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Ok(DurationSpec(total))
    }
}

impl TryFrom<String> for DurationSpec {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        DurationSpec::parse(&value)
    }
}
impl From<DurationSpec> for String {
    fn from(value: DurationSpec) -> Self {
        value.to_string()
    }
}
impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0 / 1000;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}
