//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, and transparency-log
//! checkpoints (<https://c2sp.org/tlog-checkpoint>).
//!
//! A note is a text (one or more lines, each ending in a newline), a blank line, and one or
//! more signature lines `— <key name> <base64(key id ‖ signature)>`, the first character being
//! U+2014 EM DASH. The signature covers the text up to and including its final newline, not
//! the blank line. The text is separated from the signatures by the *last* blank line, so the
//! text may hold blank lines of its own.
//!
//! An Ed25519 key's id is the first four bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key);
//! its verifier key, as the Go `golang.org/x/mod/sumdb/note` package prints it, is
//! `<name>+<8 hex digits of the key id>+<base64(0x01 ‖ public key)>`.
//!
//! [`open`] ignores signatures by keys it does not know (same name and key id), fails on a
//! known key's signature that does not verify, and needs at least one that does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};

/// The start of every signature line: U+2014 EM DASH and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The signature type byte of Ed25519 in key ids and verifier keys.
pub const ED25519_TYPE: u8 = 0x01;

/// The most signature lines [`open`] reads (the spec asks verifiers for a limit of at least
/// 16; the Go implementation uses 100).
pub const MAX_SIGNATURES: usize = 100;

/// Why a note, a verifier key or a checkpoint is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note, line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("cannot sign this text: {0}")]
    InvalidBody(String),
    #[error("invalid key name {name:?}: {reason}")]
    InvalidKeyName { name: String, reason: &'static str },
    #[error("malformed verifier key (want <name>+<8 hex digits>+<base64 key>): {0}")]
    MalformedVerifierKey(String),
    #[error("verifier key {name}: its key id is {stated}, but the key's id is {computed}")]
    KeyIdMismatch {
        name: String,
        stated: String,
        computed: String,
    },
    #[error("ambiguous key {name}+{key_id}: more than one verifier has this name and key id")]
    AmbiguousKey { name: String, key_id: String },
    #[error("the signature by known key {name} does not verify")]
    BadSignature { name: String },
    #[error("no signature by a known key: the note is not verified")]
    NoVerifiedSignature,
    #[error("malformed checkpoint, line {line}: {reason}")]
    MalformedCheckpoint { line: usize, reason: String },
}

/// The key id of an Ed25519 key named `name`: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[..4].
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Checks a key name: non-empty, no Unicode white space, no '+'.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    let reason = if name.is_empty() {
        "a key name is not empty"
    } else if name.chars().any(char::is_whitespace) {
        "a key name holds no white space"
    } else if name.contains('+') {
        "a key name holds no '+'"
    } else {
        return Ok(());
    };
    Err(NoteError::InvalidKeyName {
        name: name.to_owned(),
        reason,
    })
}

fn hex4(id: &[u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(*id))
}

/// A key that signed notes are verified with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub key_id: [u8; 4],
    pub key: VerifyingKey,
}

impl NoteVerifier {
    /// The verifier of `key` under `name` (its key id computed by [`key_id`]).
    pub fn new(name: impl Into<String>, key: VerifyingKey) -> NoteVerifier {
        let name = name.into();
        let key_id = key_id(&name, &key);
        NoteVerifier { name, key_id, key }
    }

    /// Its verifier key string ([`verifier_key`]).
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, &self.key)
    }
}

/// The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ key)>`.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> String {
    let mut bytes = Vec::with_capacity(33);
    bytes.push(ED25519_TYPE);
    bytes.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex4(&key_id(name, key)),
        STANDARD.encode(bytes)
    )
}

/// Parses a verifier key string and checks that its key id is the key's.
pub fn parse_verifier_key(s: &str) -> Result<NoteVerifier, NoteError> {
    let malformed = |reason: &str| NoteError::MalformedVerifierKey(reason.to_owned());
    let (name, rest) = s
        .split_once('+')
        .ok_or_else(|| malformed("no '+' after the name"))?;
    let (hex, b64) = rest
        .split_once('+')
        .ok_or_else(|| malformed("no '+' after the key id"))?;
    check_key_name(name)?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the key id is not 8 hex digits"));
    }
    let stated = u32::from_str_radix(hex, 16)
        .map_err(|_| malformed("the key id is not 8 hex digits"))?
        .to_be_bytes();
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| NoteError::MalformedVerifierKey(format!("the key is not base64: {e}")))?;
    match bytes.first() {
        None => return Err(malformed("the key is empty")),
        Some(&ED25519_TYPE) => {}
        Some(t) => {
            return Err(NoteError::MalformedVerifierKey(format!(
                "unknown signature type 0x{t:02x} (only Ed25519, 0x01, is supported)"
            )))
        }
    }
    let raw: [u8; 32] = bytes[1..].try_into().map_err(|_| {
        NoteError::MalformedVerifierKey(format!(
            "an Ed25519 key is 32 bytes after its type byte, this is {}",
            bytes.len() - 1
        ))
    })?;
    let key = VerifyingKey::from_bytes(&raw)
        .map_err(|_| malformed("the key is not an Ed25519 public key"))?;
    if key.is_weak() {
        return Err(malformed("the key is a small-order (weak) Ed25519 key"));
    }
    let verifier = NoteVerifier::new(name, key);
    if verifier.key_id != stated {
        return Err(NoteError::KeyIdMismatch {
            name: name.to_owned(),
            stated: hex4(&stated),
            computed: hex4(&verifier.key_id),
        });
    }
    Ok(verifier)
}

/// The first control character (below U+0020, newline aside) of `text`, with its 1-based line.
fn control_character(text: &str) -> Option<(usize, char)> {
    text.split('\n').enumerate().find_map(|(i, line)| {
        line.chars()
            .find(|c| (*c as u32) < 0x20)
            .map(|c| (i + 1, c))
    })
}

/// Signs `body` with `key` under `name`: the note text (body, blank line, one signature line).
pub fn sign(body: &str, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    check_key_name(name)?;
    if body.is_empty() {
        return Err(NoteError::InvalidBody("the text is empty".into()));
    }
    if !body.ends_with('\n') {
        return Err(NoteError::InvalidBody(
            "the text does not end in a newline".into(),
        ));
    }
    if let Some((line, c)) = control_character(body) {
        return Err(NoteError::InvalidBody(format!(
            "line {line} holds the control character U+{:04X}",
            c as u32
        )));
    }
    let mut payload = Vec::with_capacity(4 + 64);
    payload.extend_from_slice(&key_id(name, &key.verifying_key()));
    payload.extend_from_slice(&key.sign(body.as_bytes()).to_bytes());
    Ok(format!(
        "{body}\n{SIGNATURE_PREFIX}{name} {}\n",
        STANDARD.encode(payload)
    ))
}

/// A note whose signatures were checked by [`open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The signed text, its final newline included.
    pub body: String,
    /// The names of the verifiers whose signatures verified, in the order of their lines
    /// (each key once).
    pub verified_by: Vec<String>,
    /// Signature lines by keys that are not among the verifiers, ignored.
    pub unknown_signatures: usize,
}

/// Parses a signed note and verifies its signatures by `verifiers`.
///
/// Signature lines by keys that match no verifier (by name and key id) are ignored and counted;
/// a signature by a known key that does not verify is [`NoteError::BadSignature`]; without any
/// verified signature the note is [`NoteError::NoVerifiedSignature`].
/// A note's text (through its last line's newline) and its signature lines: split at the last
/// blank line.
fn split_note(text: &str) -> Result<(&str, &str), NoteError> {
    let Some(split) = text.rfind("\n\n") else {
        return Err(NoteError::Malformed {
            line: text.split('\n').count(),
            reason: "no blank line between the text and the signatures".into(),
        });
    };
    Ok((&text[..split + 1], &text[split + 2..]))
}

pub fn open(text: &str, verifiers: &[NoteVerifier]) -> Result<Opened, NoteError> {
    let malformed = |line: usize, reason: String| NoteError::Malformed { line, reason };
    if text.is_empty() {
        return Err(malformed(1, "the note is empty".into()));
    }
    if let Some((line, c)) = control_character(text) {
        return Err(malformed(
            line,
            format!("control character U+{:04X}", c as u32),
        ));
    }
    let (body, sigs) = split_note(text)?;
    let blank_line = body.matches('\n').count() + 1;
    if sigs.is_empty() {
        return Err(malformed(
            blank_line + 1,
            "no signature line after the blank line".into(),
        ));
    }
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(malformed(
            blank_line + sigs.split('\n').count(),
            "the last signature line does not end in a newline".into(),
        ));
    };
    let lines: Vec<&str> = sigs.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(malformed(
            blank_line + MAX_SIGNATURES + 1,
            format!("more than {MAX_SIGNATURES} signature lines"),
        ));
    }

    let mut verified: Vec<(&str, [u8; 4])> = Vec::new();
    let mut unknown_signatures = 0;
    for (i, line) in lines.iter().enumerate() {
        let line_no = blank_line + 1 + i;
        let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            let reason = if line.starts_with('-') {
                "a signature line starts with an em dash (U+2014) and a space, not an ASCII hyphen"
            } else {
                "a signature line starts with an em dash (U+2014) and a space"
            };
            malformed(line_no, reason.into())
        })?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| {
            malformed(
                line_no,
                "no space between the key name and the signature".into(),
            )
        })?;
        if let Err(NoteError::InvalidKeyName { name, reason }) = check_key_name(name) {
            return Err(malformed(
                line_no,
                format!("invalid key name {name:?}: {reason}"),
            ));
        }
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| malformed(line_no, format!("the signature is not base64: {e}")))?;
        if bytes.len() < 4 {
            return Err(malformed(
                line_no,
                format!(
                    "the signature is {} bytes, shorter than its 4-byte key id",
                    bytes.len()
                ),
            ));
        }
        let id = [bytes[0], bytes[1], bytes[2], bytes[3]];
        let mut known = verifiers
            .iter()
            .filter(|v| v.name == name && v.key_id == id);
        let Some(verifier) = known.next() else {
            unknown_signatures += 1;
            continue;
        };
        if known.any(|other| other.key != verifier.key) {
            return Err(NoteError::AmbiguousKey {
                name: name.to_owned(),
                key_id: hex4(&id),
            });
        }
        let signature: [u8; 64] = bytes[4..].try_into().map_err(|_| {
            malformed(
                line_no,
                format!(
                    "the signature by known key {name} is {} bytes; an Ed25519 signature is 64",
                    bytes.len() - 4
                ),
            )
        })?;
        verifier
            .key
            .verify_strict(body.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| NoteError::BadSignature {
                name: name.to_owned(),
            })?;
        if !verified.contains(&(name, id)) {
            verified.push((name, id));
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoVerifiedSignature);
    }
    Ok(Opened {
        body: body.to_owned(),
        verified_by: verified.into_iter().map(|(n, _)| n.to_owned()).collect(),
        unknown_signatures,
    })
}

/// A transparency-log checkpoint: the body of a signed note naming a log (its origin), a tree
/// size and the tree's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Opaque extension lines after the root (each non-empty, without its newline).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`, then each extension line and a
    /// newline.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            merkle::hash_to_base64(&self.root)
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint's note text (for instance [`Opened::body`]).
    /// The checkpoint a signed note carries, read but not verified ([`open`] verifies): what an
    /// auditor needs first to know which keys may have signed it.
    pub fn of_note(text: &str) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse_body(split_note(text)?.0)
    }

    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let malformed =
            |line: usize, reason: String| NoteError::MalformedCheckpoint { line, reason };
        if let Some((line, c)) = control_character(body) {
            return Err(malformed(
                line,
                format!("control character U+{:04X}", c as u32),
            ));
        }
        let Some(text) = body.strip_suffix('\n') else {
            return Err(malformed(
                body.split('\n').count(),
                "the text does not end in a newline".into(),
            ));
        };
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < 3 {
            return Err(malformed(
                lines.len() + 1,
                "a checkpoint has three lines at least: origin, tree size, root hash".into(),
            ));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(malformed(1, "the origin is empty".into()));
        }
        let size_text = lines[1];
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(
                2,
                format!("the tree size {size_text:?} is not a decimal number"),
            ));
        }
        if size_text.len() > 1 && size_text.starts_with('0') {
            return Err(malformed(
                2,
                format!("the tree size {size_text:?} has a leading zero"),
            ));
        }
        let size = size_text.parse::<u64>().map_err(|_| {
            malformed(
                2,
                format!("the tree size {size_text:?} does not fit in 64 bits"),
            )
        })?;
        let root = merkle::hash_from_base64(lines[2])
            .map_err(|e| malformed(3, format!("the root hash: {e}")))?;
        let mut extensions = Vec::new();
        for (i, line) in lines[3..].iter().enumerate() {
            if line.is_empty() {
                return Err(malformed(4 + i, "an extension line is empty".into()));
            }
            extensions.push((*line).to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}
