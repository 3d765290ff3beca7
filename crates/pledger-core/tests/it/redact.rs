//! Redaction of feedback examples, normalisation and fingerprints (`redact.rs`).

use std::collections::BTreeMap;

use pledger_core::outcome::FeedbackTag;
use pledger_core::redact::{
    case_id_from_fingerprint, fingerprint, normalize, RedactionPattern, RedactionPolicy, Redactor,
    NORMALIZED_MAX_CHARS,
};
use pledger_core::sim::SimRng;
use pledger_core::{FileError, FileFormat, PromptName};
use sha2::{Digest, Sha256};

fn redactor() -> Redactor {
    Redactor::new(&RedactionPolicy::default()).expect("the default policy compiles")
}

fn prompt(name: &str) -> PromptName {
    PromptName::parse(name).unwrap()
}

const ALL_TAGS: [FeedbackTag; 4] = [
    FeedbackTag::UnexpectedRefusal,
    FeedbackTag::WrongToolSequence,
    FeedbackTag::HallucinatedField,
    FeedbackTag::ExcessiveVerbosity,
];

/// Luhn check over the digits of `number` (separators ignored).
fn luhn_valid(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (1, doubled) if doubled > 9 => doubled - 9,
            (1, doubled) => doubled,
            _ => d,
        })
        .sum();
    !digits.is_empty() && sum.checked_rem(10) == Some(0)
}

/// (input, expected text, the only pattern that fired, how often)
fn check_table(table: &[(&str, &str, &str, u32)]) {
    let r = redactor();
    let mut failures = Vec::new();
    for &(input, want_text, pattern, count) in table {
        let got = r.redact(input);
        let want_replaced = BTreeMap::from([(pattern.to_string(), count)]);
        if got.text != want_text || got.replaced != want_replaced {
            failures.push(format!(
                "{input:?}\n   got  {:?} {:?}\n   want {want_text:?} {want_replaced:?}",
                got.text, got.replaced
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn default_policy_redacts_email_addresses() {
    check_table(&[
        (
            "contact jane.doe@example.com for details",
            "contact <email> for details",
            "email",
            1,
        ),
        (
            "Mail: J.Smith+billing@sub.mail.example.co.uk.",
            "Mail: <email>.",
            "email",
            1,
        ),
        ("<user_42@company-mail.de>", "<<email>>", "email", 1),
        ("josé.garcía@correo.es wrote", "<email> wrote", "email", 1),
        (
            "cc first.last@example.org,second@example.net",
            "cc <email>,<email>",
            "email",
            2,
        ),
        ("from 12345678@sms.example.com", "from <email>", "email", 1),
    ]);
}

#[test]
fn default_policy_redacts_phone_numbers_in_many_formats() {
    check_table(&[
        (
            "call +1 (555) 123-4567 today",
            "call <phone> today",
            "phone_international",
            1,
        ),
        (
            "UK office +44 20 7946 0958.",
            "UK office <phone>.",
            "phone_international",
            1,
        ),
        ("+44 (0)20 7946 0958", "<phone>", "phone_international", 1),
        (
            "Berlin: +49-30-1234567",
            "Berlin: <phone>",
            "phone_international",
            1,
        ),
        ("+33 1 23 45 67 89", "<phone>", "phone_international", 1),
        (
            "mobile +4915112345678",
            "mobile <phone>",
            "phone_international",
            1,
        ),
        ("0049 30 1234567", "<phone>", "phone", 1),
        ("(555) 123-4567", "<phone>", "phone", 1),
        ("555-123-4567", "<phone>", "phone", 1),
        ("555.123.4567", "<phone>", "phone", 1),
        ("555 123 4567", "<phone>", "phone", 1),
        ("1-800-555-1234", "<phone>", "phone", 1),
        (
            "ring 555-1234 after six",
            "ring <phone> after six",
            "phone",
            1,
        ),
        ("(030) 1234567", "<phone>", "phone", 1),
        ("030 1234567", "<phone>", "phone", 1),
        ("0171 1234567", "<phone>", "phone", 1),
        ("020 7946 0958", "<phone>", "phone", 1),
        ("07700 900123", "<phone>", "phone", 1),
        ("089-123-4567", "<phone>", "phone", 1),
        ("01 23 45 67 89", "<phone>", "phone", 1),
        ("5551234567", "<phone>", "phone", 1),
        (
            "home 020 7946 0958, cell 07700 900123",
            "home <phone>, cell <phone>",
            "phone",
            2,
        ),
    ]);
}

#[test]
fn default_policy_redacts_card_numbers_with_and_without_separators() {
    let cards = [
        // Visa
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "4012888888881881",
        "4222222222222", // 13-digit Visa
        // Mastercard
        "5555 5555 5555 4444",
        "5105-1051-0510-5100",
        "2223 0031 2200 3222",
        // American Express (4-6-5)
        "3782 822463 10005",
        "3714-496353-98431",
        "378282246310005",
        // Discover, Diners (4-6-4), JCB
        "6011 1111 1111 1117",
        "3056 930902 5904",
        "3530111333300000",
    ];
    for card in cards {
        assert!(luhn_valid(card), "{card} is a Luhn-valid test number");
    }
    let table: Vec<(String, String)> = cards
        .iter()
        .map(|c| {
            (
                format!("paid with {c}, thanks"),
                "paid with <card>, thanks".into(),
            )
        })
        .collect();
    let table: Vec<(&str, &str, &str, u32)> = table
        .iter()
        .map(|(i, o)| (i.as_str(), o.as_str(), "card", 1))
        .collect();
    check_table(&table);
    // Deliberately no Luhn gate: a mistyped number is still someone's card.
    assert!(!luhn_valid("4111 1111 1111 1112"));
    check_table(&[
        ("card 4111 1111 1111 1112", "card <card>", "card", 1),
        // 19 digits, 4-4-4-4-3; and a number glued to letters.
        ("4111 1111 1111 1111 003", "<card>", "card", 1),
        ("card4111111111111111", "card<card>", "card", 1),
    ]);
}

#[test]
fn default_policy_redacts_keys_tokens_and_passwords() {
    let ghp = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4");
    let openai = format!("sk-{}", "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12Wx34");
    let openai_proj = "sk-proj-Xy9_kL2-mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hJ4";
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let owned = [
        (
            format!("token {ghp} leaked"),
            "token <secret> leaked".to_string(),
            "github_token",
        ),
        (
            format!("key={openai}"),
            "key=<secret>".to_string(),
            "openai_style_key",
        ),
        (
            format!("({openai_proj})"),
            "(<secret>)".to_string(),
            "openai_style_key",
        ),
        (format!("jwt {jwt}"), "jwt <secret>".to_string(), "jwt"),
    ];
    let mut table: Vec<(&str, &str, &str, u32)> = owned
        .iter()
        .map(|(i, o, p)| (i.as_str(), o.as_str(), *p, 1))
        .collect();
    table.extend_from_slice(&[
        ("AWS key AKIAIOSFODNN7EXAMPLE in logs", "AWS key <secret> in logs", "aws_access_key_id", 1),
        ("ASIAY34FZKBOKMUTVV7A", "<secret>", "aws_access_key_id", 1),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "<secret>",
            "github_token",
            1,
        ),
        (
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "slack <secret>",
            "slack_token",
            1,
        ),
        ("xoxp-2315678901-98765432101-ab12cd34", "<secret>", "slack_token", 1),
        ("stripe sk_live_51H8AbCdEfGhIjKlMnOp", "stripe <secret>", "stripe_key", 1),
        ("pk_live_TYooMQauvdEDq54NiTphI7jx", "<secret>", "stripe_key", 1),
        ("rk_test_4eC39HqLyjWDarjtT1zdp7dc", "<secret>", "stripe_key", 1),
        (
            "AIzaSyA-1234567890abcdefghijklmnopqrstu",
            "<secret>",
            "google_api_key",
            1,
        ),
        (
            "curl -H 'Authorization: Bearer abc.def-123_XYZ' https://api",
            "curl -H 'Authorization: <secret>' https://api",
            "authorization_header",
            1,
        ),
        (
            "authorization=Basic dXNlcjpwYXNzd29yZA==",
            "Authorization: <secret>",
            "authorization_header",
            1,
        ),
        (
            "sent bearer abcdefghijklmnopqrstuvwx and failed",
            "sent Bearer <secret> and failed",
            "bearer_token",
            1,
        ),
        ("Bearer 8f3a9c", "Bearer <secret>", "bearer_token", 1),
        ("my password: hunter2", "my <secret>", "password_assignment", 1),
        (r#"{"api_key": "abc123"}"#, r#"{"<secret>"#, "password_assignment", 1),
        ("PWD=correct-horse-battery", "<secret>", "password_assignment", 1),
        ("client_secret=xyz, next", "<secret>, next", "password_assignment", 1),
        (
            "postgres://admin:s3cr3t@db.internal:5432/app",
            "postgres://<secret>@db.internal:5432/app",
            "url_credentials",
            1,
        ),
        (
            "aws_secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end",
            "aws_secret <secret> end",
            "long_token",
            1,
        ),
        (
            "hex 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "hex <secret>",
            "long_token",
            1,
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY----- done",
            "<secret> done",
            "private_key",
            1,
        ),
    ]);
    check_table(&table);
}

#[test]
fn default_policy_leaves_ordinary_text_alone() {
    let r = redactor();
    let ordinary = [
        "Upgraded to v2.3.1 on 2026-11-24, see order #12345.",
        "The model refused to answer question 3 of 10.",
        "Between 9:30 and 17:45 the p95 latency was 1200 ms (up 15%).",
        "Price: $19.99, qty 250, SKU AB-1234, ticket PROJ-4521, build 2026.11.3",
        "Dates 24.11.2026, 11/24/2026, 2026-11-24 10:30:00 and 2026-11-24T10:30:00Z",
        "A 6-digit code 123456 was shown; tokens in: 1234, out: 567",
        // Long identifiers without digits are tool names, not secrets.
        "Called lookup_customer_by_email_address before create_support_ticket_for_customer.",
        "scikit-learn (sk-learn) style estimator; a bearer token was missing",
        "the authorization step failed; the secret sauce; passwords are hidden",
        "see https://docs.example.com/guides/refunds?lang=en#section-2",
        "user @jane.doe mentioned a@ and @b; 10 @ 12 apples",
        "room 101, floor 3, 12 34 56",
    ];
    for text in ordinary {
        let got = r.redact(text);
        assert_eq!(got.text, text, "changed: {:?}", got.replaced);
        assert!(got.replaced.is_empty(), "{text:?}: {:?}", got.replaced);
    }
}

/// Over-redaction the default policy accepts on purpose (see `RedactionPolicy::default`):
/// digits are `#` after normalisation anyway, so none of this costs de-duplication.
#[test]
fn default_policy_over_redacts_these_on_purpose() {
    check_table(&[
        // Any run of 7+ digits may be a phone or account number.
        ("order 12345678 late", "order <phone> late", "phone", 1),
        ("unix time 1732406400", "unix time <phone>", "phone", 1),
        // 13-19 digits look like a card, Luhn or not (epoch milliseconds here).
        ("at 1732406400000 ms", "at <card> ms", "card", 1),
        // Digests are indistinguishable from hex secrets.
        (
            "version sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "version sha256:<secret>",
            "long_token",
            1,
        ),
        // `sk-` plus 16 or more key characters is treated as a key.
        (
            "sk-compatible-estimator-wrapper",
            "<secret>",
            "openai_style_key",
            1,
        ),
        // `password:` takes the next word, whatever it is.
        (
            "the password: field was empty",
            "the <secret> was empty",
            "password_assignment",
            1,
        ),
    ]);
}

#[test]
fn redaction_is_idempotent_and_counts_per_pattern() {
    let r = redactor();
    let text = "From jane@example.com / +1 555 123 4567, card 4111 1111 1111 1111, \
                key AKIAIOSFODNN7EXAMPLE and bob@example.org; Authorization: Bearer abc123def456";
    let once = r.redact(text);
    assert_eq!(
        once.text,
        "From <email> / <phone>, card <card>, key <secret> and <email>; Authorization: <secret>"
    );
    assert_eq!(
        once.replaced,
        BTreeMap::from([
            ("authorization_header".to_string(), 1),
            ("aws_access_key_id".to_string(), 1),
            ("card".to_string(), 1),
            ("email".to_string(), 2),
            ("phone_international".to_string(), 1),
        ])
    );
    let twice = r.redact(&once.text);
    assert_eq!(twice.text, once.text);
    assert!(twice.replaced.is_empty(), "{:?}", twice.replaced);
}

// ---------------------------------------------------------------------------------------------
// Property: planted personal data never survives
// ---------------------------------------------------------------------------------------------

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const DIGITS: &[u8] = b"0123456789";

fn pick<T: Copy>(rng: &mut SimRng, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

fn chars_from(rng: &mut SimRng, alphabet: &[u8], n: usize) -> String {
    (0..n).map(|_| pick(rng, alphabet) as char).collect()
}

/// Random characters from `alphabet`, with at least one digit.
fn with_digit(rng: &mut SimRng, alphabet: &[u8], n: usize) -> String {
    let mut s: Vec<char> = chars_from(rng, alphabet, n).chars().collect();
    let at = rng.below(n as u64) as usize;
    s[at] = pick(rng, DIGITS) as char;
    s.into_iter().collect()
}

fn digits(rng: &mut SimRng, n: usize) -> String {
    chars_from(rng, DIGITS, n)
}

/// A Luhn-valid card number of `len` digits starting with `prefix`.
fn luhn_card(rng: &mut SimRng, prefix: &str, len: usize) -> String {
    let mut body = format!("{prefix}{}", digits(rng, len - 1 - prefix.len()));
    for check in 0..10 {
        if luhn_valid(&format!("{body}{check}")) {
            body.push(char::from_digit(check, 10).unwrap());
            return body;
        }
    }
    unreachable!("one check digit always fits")
}

fn group(number: &str, sizes: &[usize], sep: &str) -> String {
    let mut parts = Vec::new();
    let mut at = 0;
    for &size in sizes {
        if at + size >= number.len() {
            break;
        }
        parts.push(&number[at..at + size]);
        at += size;
    }
    if at < number.len() {
        parts.push(&number[at..]);
    }
    parts.join(sep)
}

fn between(rng: &mut SimRng, lo: u64, hi: u64) -> usize {
    (lo + rng.below(hi - lo + 1)) as usize
}

/// A planted value of a random kind: (the text to insert, the part of it that must not
/// survive).
fn planted(rng: &mut SimRng) -> (String, String) {
    let n = between;
    match rng.below(20) {
        16 => {
            let (user_len, pass_len) = (n(rng, 7, 10), n(rng, 6, 14));
            let secret = format!(
                "{}:{}",
                chars_from(rng, LOWER, user_len),
                chars_from(
                    rng,
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$*",
                    pass_len
                )
            );
            let scheme = pick(rng, &["postgres", "https", "amqp", "redis"]);
            (format!("{scheme}://{secret}@db.example.com/app"), secret)
        }
        17 => {
            let len = n(rng, 12, 28);
            let token = chars_from(
                rng,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                len,
            );
            let header = pick(
                rng,
                &[
                    "Authorization: Basic",
                    "authorization: token",
                    "Authorization=Bearer",
                ],
            );
            (format!("{header} {token}"), token)
        }
        18 => {
            let lines: Vec<String> = (0..n(rng, 1, 4))
                .map(|_| chars_from(rng, ALNUM, 20))
                .collect();
            let body = lines.join("\n");
            let kind = pick(rng, &["", "RSA ", "EC ", "OPENSSH "]);
            (
                format!(
                    "-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
                ),
                body,
            )
        }
        19 => {
            // Vendor keys too short for `long_token` to back up their own pattern.
            let value = if rng.bernoulli(0.5) {
                let len = n(rng, 8, 12);
                format!("xoxb-{}-{}", digits(rng, 10), chars_from(rng, ALNUM, len))
            } else {
                let len = n(rng, 16, 26);
                format!("sk-{}", chars_from(rng, ALNUM, len))
            };
            (value.clone(), value)
        }
        kind => {
            let value = planted_value(rng, kind);
            (value.clone(), value)
        }
    }
}

/// One value of kind `0..16`, planted as is.
fn planted_value(rng: &mut SimRng, kind: u64) -> String {
    let n = between;
    match kind {
        0 => {
            let local_len = n(rng, 3, 12);
            let digits_len = n(rng, 0, 4);
            let local = format!(
                "{}{}{}",
                chars_from(rng, LOWER, local_len),
                pick(rng, &["", ".", "+", "_"]),
                digits(rng, digits_len)
            );
            let domain_len = n(rng, 3, 10);
            let domain = chars_from(rng, LOWER, domain_len);
            format!(
                "{local}@{domain}.{}",
                pick(rng, &["com", "org", "de", "co.uk", "io"])
            )
        }
        1 => {
            let cc = format!("{}", 1 + rng.below(98));
            let sep = pick(rng, &[" ", "-", "", "."]);
            let area_len = n(rng, 2, 3);
            let area = digits(rng, area_len);
            let a = digits(rng, 3);
            let b = digits(rng, 4);
            if rng.bernoulli(0.3) {
                format!("+{cc} ({area}) {a}-{b}")
            } else {
                format!("+{cc}{sep}{area}{sep}{a}{sep}{b}")
            }
        }
        2 => {
            let (a, b, c) = (digits(rng, 3), digits(rng, 3), digits(rng, 4));
            match rng.below(5) {
                0 => format!("({a}) {b}-{c}"),
                1 => format!("{a}-{b}-{c}"),
                2 => format!("{a}.{b}.{c}"),
                3 => format!("{a} {b} {c}"),
                _ => format!("1-{a}-{b}-{c}"),
            }
        }
        3 => {
            // National forms with a trunk 0, and French pairs.
            match rng.below(3) {
                0 => {
                    let (trunk, rest) = (n(rng, 2, 4), n(rng, 6, 7));
                    format!("0{} {}", digits(rng, trunk), digits(rng, rest))
                }
                1 => format!("0{} {} {}", digits(rng, 2), digits(rng, 4), digits(rng, 4)),
                _ => (0..5).map(|_| digits(rng, 2)).collect::<Vec<_>>().join(" "),
            }
        }
        4 | 5 => {
            let sep = pick(rng, &[" ", "-", ""]);
            match rng.below(4) {
                0 => group(&luhn_card(rng, "4", 16), &[4, 4, 4], sep),
                1 => group(&luhn_card(rng, "5", 16), &[4, 4, 4], sep),
                2 => group(&luhn_card(rng, "37", 15), &[4, 6], sep),
                _ => {
                    let len = n(rng, 13, 19);
                    group(&luhn_card(rng, "6", len), &[4, 4, 4, 4], sep)
                }
            }
        }
        6 => format!("AKIA{}", chars_from(rng, UPPER_DIGITS, 16)),
        7 => format!("ghp_{}", chars_from(rng, ALNUM, 36)),
        8 => format!(
            "xox{}-{}-{}-{}",
            pick(rng, &["b", "p"]),
            digits(rng, 12),
            digits(rng, 13),
            chars_from(rng, ALNUM, 24)
        ),
        9 => {
            let len = n(rng, 40, 60);
            format!("sk-{}", chars_from(rng, ALNUM, len))
        }
        10 => format!(
            "{}_{}_{}",
            pick(rng, &["sk", "pk", "rk"]),
            pick(rng, &["live", "test"]),
            chars_from(rng, ALNUM, 24)
        ),
        11 => {
            let len = n(rng, 20, 48);
            format!(
                "{} {}",
                pick(rng, &["Bearer", "bearer", "BEARER"]),
                with_digit(rng, ALNUM, len)
            )
        }
        12 => {
            let len = pick(rng, &[32, 40, 64]);
            with_digit(rng, b"0123456789abcdef", len)
        }
        13 => {
            let len = n(rng, 32, 60);
            with_digit(
                rng,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                len,
            )
        }
        14 => {
            let len = n(rng, 6, 16);
            format!(
                "{}{}{}",
                pick(
                    rng,
                    &["password", "Password", "api_key", "apiKey", "secret", "pwd"]
                ),
                pick(rng, &["=", ": ", " = ", ":"]),
                chars_from(
                    rng,
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&*@^",
                    len
                )
            )
        }
        _ => format!(
            "eyJ{}.eyJ{}.{}",
            chars_from(rng, ALNUM, 20),
            chars_from(rng, ALNUM, 40),
            chars_from(rng, ALNUM, 43)
        ),
    }
}

/// Ordinary words, numbers and punctuation around the planted values.
const FILLER: &[&str] = &[
    "the",
    "model",
    "refused",
    "to",
    "answer",
    "order",
    "#12345",
    "v2.3.1",
    "2026-11-24",
    "because",
    "tool",
    "search_orders",
    "called",
    "twice",
    "customer",
    "asked",
    "about",
    "invoice",
    "42",
    "ok",
    "?",
    "!",
    "then",
    "wrote",
    "back",
    "with",
    "refund",
    "status",
    "lookup_customer_by_email_address",
    "p95",
    "3",
    "of",
    "10",
    "ms",
    "at",
    "9:30",
];
/// What may stand right before or after a planted value.
const EDGES: &[&str] = &[
    " ", ", ", " (", ") ", ": ", "\n", " \"", "\" ", " <", "> ", " [", "] ", "; ", ". ",
];

/// Redacts `cases` generated texts with planted values; the first planted value (or an
/// 8-character piece of one) that survives, or the first text redacted differently twice.
fn first_survivor(r: &Redactor, seed: u64, cases: u32) -> Option<String> {
    let mut rng = SimRng::new(seed);
    for case in 0..cases {
        let mut text = String::new();
        let mut plants = Vec::new();
        for _ in 0..(1 + rng.below(4)) {
            for _ in 0..rng.below(6) {
                text.push_str(pick(&mut rng, FILLER));
                text.push(' ');
            }
            text.push_str(pick(&mut rng, EDGES));
            let (inserted, value) = planted(&mut rng);
            text.push_str(&inserted);
            text.push_str(pick(&mut rng, EDGES));
            plants.push(value);
        }
        for _ in 0..rng.below(4) {
            text.push_str(pick(&mut rng, FILLER));
            text.push(' ');
        }
        let out = r.redact(&text);
        for value in &plants {
            // The value, or any 8-character piece of it: a partial match must not leave most
            // of a value behind.
            let chars: Vec<char> = value.chars().collect();
            for piece in chars.windows(8.min(chars.len())) {
                let piece: String = piece.iter().collect();
                if out.text.contains(&piece) {
                    return Some(format!(
                        "case {case}: {piece:?} of {value:?} survived\n  in:  {text:?}\n  out: {:?}",
                        out.text
                    ));
                }
            }
        }
        let again = r.redact(&out.text);
        if again.text != out.text {
            return Some(format!(
                "case {case}: {:?} redacts again to {:?}",
                out.text, again.text
            ));
        }
    }
    None
}

#[test]
fn planted_personal_data_never_survives_redaction() {
    if let Some(failure) = first_survivor(&redactor(), 0x5EC2E7, 5000) {
        panic!("{failure}");
    }
}

/// The property above can fail: without any one of these patterns, some planted value
/// survives. (`github_token` and `google_api_key` are missing from the list because
/// `long_token` catches the planted ones too.)
#[test]
fn the_planted_values_property_needs_every_pattern() {
    let full = RedactionPolicy::default();
    let backed_up = ["github_token", "google_api_key"];
    for (i, pattern) in full.patterns.iter().enumerate() {
        if backed_up.contains(&pattern.name.as_str()) {
            continue;
        }
        let mut without = full.clone();
        without.patterns.remove(i);
        let r = Redactor::new(&without).unwrap();
        assert!(
            first_survivor(&r, 0x5EC2E7, 3000).is_some(),
            "nothing survives without `{}`",
            pattern.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// normalize, fingerprint, case ids
// ---------------------------------------------------------------------------------------------

#[test]
fn normalize_lowercases_collapses_strips_and_hides_digits() {
    let table = [
        ("  Hello   World!!  ", "hello world"),
        ("Order 12345 failed.", "order # failed"),
        ("a\tb\n\nc\r\n", "a b c"),
        (
            "Upgraded to v2.3.1 on 2026-11-24",
            "upgraded to v#.#.# on #-#-#",
        ),
        (
            "Sent to <email> and <PHONE>.",
            "sent to <email> and <phone>",
        ),
        (
            "ends in a placeholder <card>",
            "ends in a placeholder <card>",
        ),
        ("Why did it refuse?!…", "why did it refuse"),
        ("\"quoted\"", "\"quoted"),
        ("ÉCOLE Straße", "école straße"),
        ("...", ""),
        ("", ""),
    ];
    for (input, want) in table {
        assert_eq!(normalize(input), want, "normalize({input:?})");
    }
    let long = format!("{} tail", "Abc ".repeat(200));
    let n = normalize(&long);
    assert_eq!(
        n.chars().count(),
        NORMALIZED_MAX_CHARS - 1,
        "cut at 512, trailing space stripped"
    );
    assert!(n.starts_with("abc abc"));
    assert!(!n.contains("tail"));
    assert_eq!(
        normalize(&"é".repeat(2000)).chars().count(),
        NORMALIZED_MAX_CHARS
    );
}

#[test]
fn normalize_is_idempotent() {
    let mut rng = SimRng::new(7);
    let alphabet: Vec<char> = "aB3 \t\n.,!?<>#-_É9ß\"'…".chars().collect();
    for _ in 0..2000 {
        let len = rng.below(700) as usize;
        let text: String = (0..len).map(|_| pick(&mut rng, &alphabet)).collect();
        let once = normalize(&text);
        assert_eq!(normalize(&once), once, "{text:?}");
        assert!(once.chars().count() <= NORMALIZED_MAX_CHARS);
    }
}

#[test]
fn fingerprints_ignore_case_whitespace_and_digits() {
    let p = prompt("support-triage");
    let tag = FeedbackTag::UnexpectedRefusal;
    let same = [
        "The model refused order 123.",
        "the  model REFUSED   order 98765!!",
        "\tThe model refused\norder 0",
        "THE MODEL REFUSED ORDER 42?",
    ];
    let first = fingerprint(&p, tag, same[0]);
    for text in same {
        assert_eq!(fingerprint(&p, tag, text), first, "{text:?}");
    }
    assert_ne!(fingerprint(&p, tag, "The model refused the order."), first);
}

#[test]
fn the_thousandth_report_of_a_failure_maps_to_the_same_case() {
    let r = redactor();
    let p = prompt("support-triage");
    let reports = [
        "Customer jane.doe@example.com (+1 555 123 4567) asked for a refund of order 1234; the model refused.",
        "customer BOB@corp.io (+44 20 7946 0958) asked for a refund of order 98;  The model refused",
        "Customer x_9@mail.de (030 1234567) asked for a refund of order 7; the model refused!",
    ];
    let fps: Vec<String> = reports
        .iter()
        .map(|t| fingerprint(&p, FeedbackTag::UnexpectedRefusal, &r.redact(t).text))
        .collect();
    assert!(fps.iter().all(|f| f == &fps[0]), "{fps:?}");
    let case = case_id_from_fingerprint(&fps[0]);
    assert_eq!(case, format!("rc-{}", &fps[0][..12]));
}

#[test]
fn different_tags_or_prompts_give_different_fingerprints() {
    let example = "asked for a refund; the model refused";
    let mut seen = BTreeMap::new();
    for name in ["support-triage", "billing", "support_triage"] {
        for tag in ALL_TAGS {
            let fp = fingerprint(&prompt(name), tag, example);
            assert_eq!(fp.len(), 64);
            assert!(fp
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            if let Some(other) = seen.insert(fp.clone(), (name, tag)) {
                panic!("{name}/{tag:?} collides with {other:?}");
            }
        }
    }
    assert_eq!(seen.len(), 12);
}

#[test]
fn fingerprint_is_sha256_of_prompt_tag_and_normalized_example() {
    let p = prompt("support-triage");
    let example = "The Model refused order 123.";
    for tag in ALL_TAGS {
        // The tag as services spell it on the wire.
        let wire = serde_json::to_value(tag).unwrap();
        let wire = wire.as_str().unwrap();
        let mut h = Sha256::new();
        h.update(format!("support-triage\0{wire}\0the model refused order #").as_bytes());
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(fingerprint(&p, tag, example), want, "{tag:?}");
    }
    // Pinned: fingerprints are case identities on the ledger and must never change.
    assert_eq!(
        fingerprint(
            &p,
            FeedbackTag::WrongToolSequence,
            "called search before lookup"
        ),
        PINNED_FINGERPRINT
    );
    assert_eq!(case_id_from_fingerprint(PINNED_FINGERPRINT), PINNED_CASE_ID);
}

const PINNED_FINGERPRINT: &str = "581085100a7efdf31ad7b41310b8f81173f583a7d460d7615feb8cc57ec22d2f";
const PINNED_CASE_ID: &str = "rc-581085100a7e";

#[test]
fn case_ids_take_twelve_characters() {
    let table = [
        ("0123456789abcdef0123", "rc-0123456789ab"),
        ("0123456789ab", "rc-0123456789ab"),
        ("abc", "rc-abc"),
    ];
    for (fp, want) in table {
        assert_eq!(case_id_from_fingerprint(fp), want);
    }
}

// ---------------------------------------------------------------------------------------------
// Policies: validation, files
// ---------------------------------------------------------------------------------------------

fn pattern(name: &str, regex: &str, placeholder: &str) -> RedactionPattern {
    RedactionPattern {
        name: name.into(),
        regex: regex.into(),
        placeholder: placeholder.into(),
    }
}

#[test]
fn bad_policies_are_refused_naming_the_field() {
    let ok = pattern("employee", "EMP-[0-9]{6}", "<employee>");
    let table = [
        (vec![], "patterns", "at least one"),
        (
            vec![ok.clone(), pattern("broken", "(unclosed", "<x>")],
            "patterns[1].regex",
            "does not compile",
        ),
        (
            vec![ok.clone(), ok.clone(), pattern("stars", "a*", "<x>")],
            "patterns[1].name",
            "earlier pattern",
        ),
        (
            vec![pattern("stars", "a*", "<x>")],
            "patterns[0].regex",
            "empty string",
        ),
        (
            vec![ok.clone(), pattern("gone", "x", "")],
            "patterns[1].placeholder",
            "must not be empty",
        ),
        (
            vec![pattern(" ", "x", "<x>")],
            "patterns[0].name",
            "must not be empty",
        ),
        (
            vec![ok.clone(), ok.clone()],
            "patterns[1].name",
            "`employee`",
        ),
    ];
    for (patterns, field, words) in table {
        let err = Redactor::new(&RedactionPolicy { patterns }).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(words), "`{err}` lacks `{words}`");
    }
}

const CUSTOM_POLICY: &str = r#"
[[patterns]]
name = "employee_id"
regex = '(?i)emp-[0-9]{6}'
placeholder = "<employee>"

[[patterns]]
name = "ticket"
regex = 'TCK\d{4}'
placeholder = "<ticket $0>"
"#;

#[test]
fn custom_policy_round_trips_through_toml_and_applies_literally() {
    let policy = RedactionPolicy::from_text(CUSTOM_POLICY, FileFormat::Toml).unwrap();
    assert_eq!(
        policy,
        RedactionPolicy {
            patterns: vec![
                pattern("employee_id", "(?i)emp-[0-9]{6}", "<employee>"),
                pattern("ticket", r"TCK\d{4}", "<ticket $0>"),
            ],
        }
    );
    let text = toml::to_string(&policy).unwrap();
    assert_eq!(
        RedactionPolicy::from_text(&text, FileFormat::Toml).unwrap(),
        policy
    );
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(
        RedactionPolicy::from_text(&json, FileFormat::Json).unwrap(),
        policy
    );

    let out = Redactor::new(&policy)
        .unwrap()
        .redact("EMP-123456 and emp-654321 filed TCK1234 (mail jane@example.com)");
    // A custom policy replaces the default: the e-mail stays. `$0` is not expanded.
    assert_eq!(
        out.text,
        "<employee> and <employee> filed <ticket $0> (mail jane@example.com)"
    );
    assert_eq!(
        out.replaced,
        BTreeMap::from([("employee_id".to_string(), 2), ("ticket".to_string(), 1)])
    );
}

#[test]
fn default_policy_round_trips_through_toml_and_json() {
    let policy = RedactionPolicy::default();
    let toml_text = toml::to_string(&policy).unwrap();
    assert!(toml_text.contains("[[patterns]]"));
    assert_eq!(
        RedactionPolicy::from_text(&toml_text, FileFormat::Toml).unwrap(),
        policy
    );
    let json = serde_json::to_string_pretty(&policy).unwrap();
    assert_eq!(
        RedactionPolicy::from_text(&json, FileFormat::Json).unwrap(),
        policy
    );
    // The order documented on `RedactionPolicy::default`.
    let names: Vec<&str> = policy.patterns.iter().map(|p| p.name.as_str()).collect();
    let position = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(position("email") < position("long_token"));
    assert!(position("long_token") < position("card"));
    assert!(position("card") < position("phone"));
    assert_eq!(names.last(), Some(&"phone"));
    // Unknown fields are refused by the schema too.
    let schema = serde_json::to_value(schemars::schema_for!(RedactionPolicy)).unwrap();
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    assert_eq!(schema["required"], serde_json::json!(["patterns"]));
}

#[test]
fn policy_files_refuse_unknown_fields_and_bad_regexes() {
    let unknown = "[[patterns]]\nname = \"x\"\nregex = \"x\"\nreplacement = \"<x>\"\n";
    match RedactionPolicy::from_text(unknown, FileFormat::Toml) {
        Err(FileError::Syntax { message, .. }) => {
            assert!(message.contains("replacement"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let bad = "[[patterns]]\nname = \"x\"\nregex = '[a-'\nplaceholder = \"<x>\"\n";
    match RedactionPolicy::from_text(bad, FileFormat::Toml) {
        Err(FileError::Invalid { source, .. }) => assert_eq!(source.field, "patterns[0].regex"),
        other => panic!("{other:?}"),
    }
    let top_level = "patterns = []\nextra = 1\n";
    assert!(matches!(
        RedactionPolicy::from_text(top_level, FileFormat::Toml),
        Err(FileError::Syntax { .. })
    ));
}
