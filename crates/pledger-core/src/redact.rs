//! Redaction and de-duplication of production feedback examples, before they become regression
//! cases on the ledger.
//!
//! - [`RedactionPolicy`]: named regular expressions and the placeholder each match becomes.
//!   [`RedactionPolicy::default`] covers e-mail addresses, secrets (API keys, tokens, passwords,
//!   private keys), card numbers and phone numbers.
//! - [`Redactor`]: a policy compiled once; [`Redactor::redact`] applies its patterns in order.
//! - [`normalize`], [`fingerprint`], [`case_id_from_fingerprint`]: the same failure reported a
//!   thousand times (with different names, numbers, casing or spacing) maps to one case.
//!
//! Pure: no IO, no clock, no randomness. Matching is linear in the text (the `regex` crate has
//! no backtracking), so a hostile example cannot stall a worker.

use std::collections::BTreeMap;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::hex;
use crate::error::{parse_file, FieldError, FileError, FileFormat};
use crate::ids::PromptName;
use crate::outcome::FeedbackTag;

/// Largest redaction policy file accepted (bytes), like the other policy files.
pub const MAX_REDACTION_POLICY_BYTES: usize = 64 * 1024;
/// [`normalize`] keeps at most this many characters.
pub const NORMALIZED_MAX_CHARS: usize = 512;

/// What to redact, in order. Patterns are applied one after the other, each to the output of
/// the ones before it, so an earlier pattern wins where two would match the same characters.
/// A policy read from a file replaces the default entirely.
///
/// ```toml
/// [[patterns]]
/// name = "employee_id"
/// regex = 'EMP-[0-9]{6}'
/// placeholder = "<employee>"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactionPolicy {
    pub patterns: Vec<RedactionPattern>,
}

/// One named pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactionPattern {
    /// Unique within the policy; the key of [`Redacted::replaced`].
    pub name: String,
    /// A regular expression in the syntax of the Rust `regex` crate (no look-around, no
    /// back-references). It must not match the empty string.
    pub regex: String,
    /// The text each match is replaced with, literally (`$1` is not expanded, so a placeholder
    /// can never copy the matched text back).
    pub placeholder: String,
}

impl RedactionPattern {
    fn new(name: &str, regex: &str, placeholder: &str) -> RedactionPattern {
        RedactionPattern {
            name: name.to_string(),
            regex: regex.to_string(),
            placeholder: placeholder.to_string(),
        }
    }
}

impl Default for RedactionPolicy {
    /// The default patterns, in this order (and why):
    ///
    /// 1. `private_key` — PEM private-key blocks, whole, before their base64 lines are cut up.
    /// 2. `url_credentials` — `scheme://user:password@`, before `email` would take
    ///    `password@host` and leave the user name.
    /// 3. `email`. Before the secret and number patterns, so that digits or long tokens in a
    ///    local part do not leave the rest of the address behind (`<card>@example.com`).
    /// 4. `authorization_header`, `bearer_token`, `password_assignment` (`password: ...`,
    ///    `api_key=...`, ...), `jwt`, then the vendor formats `aws_access_key_id`,
    ///    `github_token`, `slack_token`, `stripe_key`, `openai_style_key` (`sk-...`),
    ///    `google_api_key`, and last `long_token` (any run of 32+ characters of
    ///    `[A-Za-z0-9+/_=-]` that contains a digit: hex digests, base64 secrets).
    ///    All secrets come before the number patterns: a number pattern run first would replace
    ///    the digits inside a key and leave fragments too short to be recognised as a key.
    /// 5. `phone_international` — `+` and 7 or more digits with any of ` ().-` between them.
    ///    Before `card`, which would otherwise take the digits of `+4915112345678`.
    /// 6. `card` — 13 to 19 digits, contiguous or in the usual groups (4-4-4-1..4[-1..3],
    ///    Amex/Diners 4-6-4..5), separated by spaces or dashes. No word boundary is required,
    ///    so a number glued to letters (`card4111111111111111`) is still caught. Before
    ///    `phone`, whose rules would otherwise take a part of a card number.
    /// 7. `phone` — `00` international forms (after `card`, because `00` also starts card
    ///    groups like `2223 0031 2200 3222`), `(area) number`, the common national shapes
    ///    (3-4, 3-3-4, 1-3-3-4, trunk-`0` forms, five pairs) and any run of 7 or more digits.
    ///
    /// Cards are redacted without a Luhn check: a mistyped card number is still personal, a
    /// long digit run in a feedback example is almost never what the failure is about, and
    /// [`normalize`] turns digits into `#` anyway, so over-redaction costs neither
    /// de-duplication nor a useful case.
    fn default() -> RedactionPolicy {
        let p = RedactionPattern::new;
        RedactionPolicy {
            patterns: vec![
                p(
                    "private_key",
                    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----",
                    "<secret>",
                ),
                p(
                    "url_credentials",
                    r"://[^\s/?#@:]+:[^\s/?#@]+@",
                    "://<secret>@",
                ),
                p("email", r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.\w{2,}", "<email>"),
                p(
                    "authorization_header",
                    r#"(?i)\bauthorization["']?\s*[:=]\s*(?:(?:bearer|basic|digest|token|negotiate|apikey)\s+)?[^\s,;"'<][^\s,;"']*"#,
                    "Authorization: <secret>",
                ),
                p(
                    "bearer_token",
                    r"(?i)\bbearer\s+(?:[A-Za-z0-9._~+/-]{16,}=*|[A-Za-z._~+/-]*[0-9][A-Za-z0-9._~+/-]*=*)",
                    "Bearer <secret>",
                ),
                p(
                    "password_assignment",
                    r#"(?i)\b(?:password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|private[_-]?key)["']?\s*[:=]\s*[^\s,;]+"#,
                    "<secret>",
                ),
                p(
                    "jwt",
                    r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
                    "<secret>",
                ),
                p(
                    "aws_access_key_id",
                    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}\b",
                    "<secret>",
                ),
                p(
                    "github_token",
                    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
                    "<secret>",
                ),
                p(
                    "slack_token",
                    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
                    "<secret>",
                ),
                p(
                    "stripe_key",
                    r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}",
                    "<secret>",
                ),
                p("openai_style_key", r"\bsk-[A-Za-z0-9_-]{16,}", "<secret>"),
                p("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", "<secret>"),
                p("long_token", &long_token_regex(), "<secret>"),
                p(
                    "phone_international",
                    r"\+[0-9](?:[ ().-]{0,3}[0-9]){6,}",
                    "<phone>",
                ),
                p(
                    "card",
                    r"[0-9]{4}(?:[ -]?[0-9]{4}){2}[ -]?[0-9]{1,4}(?:[ -]?[0-9]{1,3})?|[0-9]{4}[ -]?[0-9]{6}[ -]?[0-9]{4,5}",
                    "<card>",
                ),
                p(
                    "phone",
                    concat!(
                        r"\b00[1-9](?:[ ().-]{0,3}[0-9]){6,}",
                        r"|\([0-9]{2,5}\)[ -]?[0-9]{3,}(?:[ -][0-9]{2,})*",
                        r"|\b(?:1[ -])?[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4}\b",
                        r"|\b0[0-9]{1,4}[ -][0-9]{3,4}[ -]?[0-9]{2,5}\b",
                        r"|\b[0-9]{2}(?:[ .-][0-9]{2}){4}\b",
                        r"|\b[0-9]{3}[ -][0-9]{4}\b",
                        r"|[0-9]{7,}",
                    ),
                    "<phone>",
                ),
            ],
        }
    }
}

/// A run of 32 or more characters of `[A-Za-z0-9+/_=-]` containing at least one digit.
///
/// The `regex` crate has no look-ahead, so "at least 32 long and contains a digit" is spelled
/// out by the position `k` of the run's first digit: `k` non-digits, the digit, then enough
/// characters to reach 32. The digit requirement keeps long identifiers and tool names
/// (`lookup_customer_by_email_address`) readable; a random 32-character base64 secret has no
/// digit with probability about 0.4%, which the vendor-specific patterns before it narrow.
fn long_token_regex() -> String {
    const NON_DIGIT: &str = "[A-Za-z+/_=-]";
    const ANY: &str = "[A-Za-z0-9+/_=-]";
    let mut alternatives: Vec<String> = (0..31)
        .map(|k| format!("{NON_DIGIT}{{{k}}}[0-9]{ANY}{{{},}}", 31 - k))
        .collect();
    alternatives.push(format!("{NON_DIGIT}{{31,}}[0-9]{ANY}*"));
    alternatives.join("|")
}

impl RedactionPolicy {
    /// Reads a policy from TOML or JSON text and checks that it compiles.
    pub fn from_text(text: &str, format: FileFormat) -> Result<RedactionPolicy, FileError> {
        let policy: RedactionPolicy =
            parse_file("redaction policy", text, format, MAX_REDACTION_POLICY_BYTES)?;
        Redactor::new(&policy).map_err(|source| FileError::Invalid {
            kind: "redaction policy",
            source,
        })?;
        Ok(policy)
    }
}

/// A compiled [`RedactionPolicy`].
#[derive(Clone, Debug)]
pub struct Redactor {
    patterns: Vec<Compiled>,
}

#[derive(Clone, Debug)]
struct Compiled {
    name: String,
    regex: Regex,
    placeholder: String,
}

/// The outcome of [`Redactor::redact`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redacted {
    /// The text with every match replaced by its pattern's placeholder.
    pub text: String,
    /// Replacements made, by pattern name; patterns that matched nothing are absent.
    pub replaced: BTreeMap<String, u32>,
}

impl Redactor {
    /// Compiles every pattern once. Refuses an empty policy, an empty or repeated name, an
    /// empty placeholder, and a regex that does not compile or that matches the empty string;
    /// the error names the field (`patterns[2].regex`).
    pub fn new(policy: &RedactionPolicy) -> Result<Redactor, FieldError> {
        if policy.patterns.is_empty() {
            return Err(FieldError::new(
                "patterns",
                "a redaction policy needs at least one pattern",
            ));
        }
        let mut patterns: Vec<Compiled> = Vec::with_capacity(policy.patterns.len());
        for (i, p) in policy.patterns.iter().enumerate() {
            let field = |f: &str| format!("patterns[{i}].{f}");
            if p.name.trim().is_empty() {
                return Err(FieldError::new(field("name"), "must not be empty"));
            }
            if patterns.iter().any(|c| c.name == p.name) {
                return Err(FieldError::new(
                    field("name"),
                    format!("`{}` is used by an earlier pattern", p.name),
                ));
            }
            if p.placeholder.is_empty() {
                return Err(FieldError::new(
                    field("placeholder"),
                    "must not be empty (a redaction stays visible)",
                ));
            }
            let regex = Regex::new(&p.regex).map_err(|e| {
                FieldError::new(
                    field("regex"),
                    format!("does not compile: {}", e.to_string().replace('\n', " ")),
                )
            })?;
            if regex.is_match("") {
                return Err(FieldError::new(
                    field("regex"),
                    "matches the empty string (it would insert the placeholder everywhere)",
                ));
            }
            patterns.push(Compiled {
                name: p.name.clone(),
                regex,
                placeholder: p.placeholder.clone(),
            });
        }
        Ok(Redactor { patterns })
    }

    /// Applies the patterns in order, each to the output of the previous ones.
    pub fn redact(&self, text: &str) -> Redacted {
        let mut current = text.to_string();
        let mut replaced = BTreeMap::new();
        for p in &self.patterns {
            // `replace_all` with `NoExpand`, counting the matches on the way.
            let mut out = String::new();
            let mut last = 0;
            let mut count = 0u32;
            for m in p.regex.find_iter(&current) {
                out.push_str(&current[last..m.start()]);
                out.push_str(&p.placeholder);
                last = m.end();
                count = count.saturating_add(1);
            }
            if count == 0 {
                continue;
            }
            out.push_str(&current[last..]);
            current = out;
            replaced.insert(p.name.clone(), count);
        }
        Redacted {
            text: current,
            replaced,
        }
    }
}

/// The form of a (redacted) example that de-duplication compares: lowercase, every run of
/// digits replaced by one `#`, whitespace runs collapsed to one space, trimmed, at most
/// [`NORMALIZED_MAX_CHARS`] characters, then trailing whitespace, sentence punctuation and
/// quotes stripped. Placeholders (`<email>`) survive. `normalize(normalize(x)) == normalize(x)`.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * NORMALIZED_MAX_CHARS));
    let mut chars = 0usize;
    let mut pending_space = false;
    let mut in_digits = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if chars >= NORMALIZED_MAX_CHARS {
            break;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            in_digits = false;
            continue;
        }
        if c.is_numeric() && in_digits {
            continue;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
            if chars >= NORMALIZED_MAX_CHARS {
                break;
            }
        }
        in_digits = c.is_numeric();
        out.push(if in_digits { '#' } else { c });
        chars += 1;
    }
    let kept = out
        .trim_end_matches(|c: char| c.is_whitespace() || TRAILING_PUNCTUATION.contains(&c))
        .len();
    out.truncate(kept);
    out
}

/// Stripped from the end by [`normalize`]. Not `>`, `)` or `]`: placeholders end in `>`.
const TRAILING_PUNCTUATION: &[char] = &[
    '.', ',', ';', ':', '!', '?', '…', '"', '\'', '`', '\u{2019}', '\u{201D}', '»',
];

/// The de-duplication key of a feedback report: hex SHA-256 of
/// `prompt \0 tag \0 normalize(redacted_example)`, the tag in its wire spelling
/// (`unexpected_refusal`). Pass the example *after* redaction: then two reports that differ
/// only in personal data, numbers, casing or spacing share a fingerprint.
pub fn fingerprint(prompt: &PromptName, tag: FeedbackTag, redacted_example: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prompt.as_str().as_bytes());
    hasher.update([0u8]);
    hasher.update(tag_wire_name(tag).as_bytes());
    hasher.update([0u8]);
    hasher.update(normalize(redacted_example).as_bytes());
    hex(&hasher.finalize())
}

/// `rc-` and the first 12 characters of a fingerprint (48 bits).
pub fn case_id_from_fingerprint(fingerprint: &str) -> String {
    let short: String = fingerprint.chars().take(12).collect();
    format!("rc-{short}")
}

/// The tag as services spell it on the wire (`FeedbackTag`'s serde names). Spelled out here,
/// not derived from serde at run time, because fingerprints must never change; a test checks
/// the two agree.
fn tag_wire_name(tag: FeedbackTag) -> &'static str {
    match tag {
        FeedbackTag::UnexpectedRefusal => "unexpected_refusal",
        FeedbackTag::WrongToolSequence => "wrong_tool_sequence",
        FeedbackTag::HallucinatedField => "hallucinated_field",
        FeedbackTag::ExcessiveVerbosity => "excessive_verbosity",
    }
}
