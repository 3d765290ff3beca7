//! C2SP signed notes and checkpoints: the Go `sumdb/note` example, a deterministic key's
//! golden note, and the refusals.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use pledger_core::merkle::{hash_from_base64, EMPTY_ROOT};
use pledger_core::note::{
    key_id, open, parse_verifier_key, sign, verifier_key, Checkpoint, NoteError, NoteVerifier,
    Opened,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// The example of golang.org/x/mod/sumdb/note (note_test.go: TestSign, TestOpen)
// ---------------------------------------------------------------------------------------------

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
/// Go's signer key string: `PRIVATE+KEY+<name>+<key id>+base64(0x01 ‖ Ed25519 seed)`.
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter_note() -> String {
    format!("{PETER_TEXT}\n{PETER_SIG}")
}

fn peter() -> NoteVerifier {
    parse_verifier_key(PETER_VKEY).unwrap()
}

fn malformed_line(result: Result<Opened, NoteError>) -> usize {
    match result {
        Err(NoteError::Malformed { line, .. }) => line,
        other => panic!("want Malformed, got {other:?}"),
    }
}

#[test]
fn the_go_example_verifier_key_parses_with_its_key_id() {
    let v = peter();
    assert_eq!(v.name, "PeterNeumann");
    assert_eq!(v.key_id, [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(key_id("PeterNeumann", &v.key), v.key_id);
    assert_eq!(verifier_key("PeterNeumann", &v.key), PETER_VKEY);
    assert_eq!(v.verifier_key(), PETER_VKEY);
    assert_eq!(
        parse_verifier_key(ENOCH_VKEY).unwrap().key_id,
        [0xaf, 0x0c, 0xfe, 0x78]
    );
}

#[test]
fn the_go_example_note_opens() {
    let opened = open(&peter_note(), &[peter()]).unwrap();
    assert_eq!(
        opened,
        Opened {
            body: PETER_TEXT.to_owned(),
            verified_by: vec!["PeterNeumann".to_owned()],
            unknown_signatures: 0,
        }
    );
    // With EnochRoot's signature too: ignored when unknown, verified when known.
    let two = format!("{PETER_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let opened = open(&two, &[peter()]).unwrap();
    assert_eq!(opened.verified_by, ["PeterNeumann"]);
    assert_eq!(opened.unknown_signatures, 1);
    let enoch = parse_verifier_key(ENOCH_VKEY).unwrap();
    let opened = open(&two, &[enoch.clone(), peter()]).unwrap();
    assert_eq!(opened.verified_by, ["PeterNeumann", "EnochRoot"]);
    assert_eq!(opened.unknown_signatures, 0);
    // Neither known.
    assert_eq!(open(&two, &[]), Err(NoteError::NoVerifiedSignature));
    // A repeated signature counts its key once.
    let twice = format!("{PETER_TEXT}\n{PETER_SIG}{PETER_SIG}");
    assert_eq!(
        open(&twice, &[peter()]).unwrap().verified_by,
        ["PeterNeumann"]
    );
    // A changed text.
    let changed = peter_note().replace("cryptography", "cryptographY");
    assert_eq!(
        open(&changed, &[peter()]),
        Err(NoteError::BadSignature {
            name: "PeterNeumann".into()
        })
    );
}

/// Ed25519 is deterministic: signing the text with Go's example key gives Go's note, byte
/// for byte.
#[test]
fn signing_with_the_go_example_key_reproduces_the_go_note() {
    let b64 = PETER_SKEY.splitn(5, '+').last().unwrap();
    let bytes = STANDARD.decode(b64).unwrap();
    assert_eq!(bytes.len(), 33);
    assert_eq!(bytes[0], 0x01);
    let key = SigningKey::from_bytes(&bytes[1..].try_into().unwrap());
    assert_eq!(key.verifying_key(), peter().key);
    assert_eq!(
        sign(PETER_TEXT, "PeterNeumann", &key).unwrap(),
        peter_note()
    );
}

#[test]
fn the_go_examples_malformed_notes_are_malformed() {
    let v = [peter()];
    let text_lines = 2;
    let cases: [(String, usize); 6] = [
        // No blank line, no signature line.
        (PETER_TEXT.to_owned(), text_lines + 1),
        (format!("{PETER_TEXT}\n"), text_lines + 2),
        // The signature line does not end in a newline.
        (
            format!("{PETER_TEXT}\n{}", PETER_SIG.trim_end_matches('\n')),
            text_lines + 2,
        ),
        // A control character.
        (format!("\x01{PETER_TEXT}\n{PETER_SIG}"), 1),
        // A key name with a space (and no final newline).
        (
            format!(
                "{PETER_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
            ),
            text_lines + 2,
        ),
        // A line after the signatures that is not a signature.
        (
            format!("{PETER_TEXT}\n{PETER_SIG}Unexpected line.\n"),
            text_lines + 3,
        ),
    ];
    for (text, line) in cases {
        assert_eq!(malformed_line(open(&text, &v)), line, "{text:?}");
    }
    // More than 100 signatures, known or not.
    let many = format!("{PETER_TEXT}\n{}", PETER_SIG.repeat(101));
    malformed_line(open(&many, &v));
    malformed_line(open(&many, &[]));
    // 100 are fine.
    let hundred = format!("{PETER_TEXT}\n{}", PETER_SIG.repeat(100));
    assert_eq!(open(&hundred, &v).unwrap().verified_by, ["PeterNeumann"]);
}

#[test]
fn mangled_verifier_keys_are_refused() {
    // Every proper substring, and every single-byte change (as in the Go tests).
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let k = &PETER_VKEY[i..j];
                assert!(parse_verifier_key(k).is_err(), "{k}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let k = String::from_utf8(m).unwrap();
        assert!(parse_verifier_key(&k).is_err(), "{k}");
    }
    // A 33-byte key of another length or type, with the key id adjusted.
    assert!(parse_verifier_key(
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
    )
    .is_err());
    assert!(matches!(
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::MalformedVerifierKey(reason)) if reason.contains("0x65")
    ));
    // The key id must be the key's.
    assert_eq!(
        parse_verifier_key("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::KeyIdMismatch {
            name: "PeterNeumann".into(),
            stated: "c74f20a4".into(),
            computed: "c74f20a3".into(),
        })
    );
}

// ---------------------------------------------------------------------------------------------
// A deterministic key
// ---------------------------------------------------------------------------------------------

const NAME: &str = "example.com/pledger";

fn log_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn log_verifier() -> NoteVerifier {
    NoteVerifier::new(NAME, log_key().verifying_key())
}

fn checkpoint() -> Checkpoint {
    Checkpoint {
        origin: NAME.into(),
        size: 8,
        // The root of the RFC 6962 reference tree of 8 leaves.
        root: hash_from_base64("XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=").unwrap(),
        extensions: Vec::new(),
    }
}

/// The checkpoint above signed by `log_key()`: its exact text, pinned.
const GOLDEN: &str = "example.com/pledger\n\
                      8\n\
                      XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\
                      \n\
                      \u{2014} example.com/pledger 9kYwT91yjFHA6CEkFMKRB+Z2WQohbG8UcRhK8Au21/IOMmyD64Q/BqpL5/qSjBMdh4vyEa7/sWfnVj3buPLuWakQ1Ao=\n";

#[test]
fn the_key_id_is_the_definition() {
    let key = log_key().verifying_key();
    let mut h = Sha256::new();
    h.update(NAME.as_bytes());
    h.update([0x0a, 0x01]);
    h.update(key.to_bytes());
    let want: [u8; 4] = h.finalize()[..4].try_into().unwrap();
    assert_eq!(key_id(NAME, &key), want);
    assert_eq!(log_verifier().key_id, want);
    // The verifier key string carries it, and parses back to the same verifier.
    let vkey = verifier_key(NAME, &key);
    assert_eq!(
        vkey,
        format!(
            "{NAME}+{}+{}",
            want.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            STANDARD.encode([&[0x01][..], &key.to_bytes()].concat())
        )
    );
    assert_eq!(parse_verifier_key(&vkey), Ok(log_verifier()));
}

#[test]
fn a_signed_checkpoint_is_stable_and_opens() {
    let cp = checkpoint();
    let note = sign(&cp.body(), NAME, &log_key()).unwrap();
    assert_eq!(note, GOLDEN);
    // The signature line: em dash, space, name, space, base64 of key id ‖ 64-byte signature.
    let sig_line = note.lines().last().unwrap();
    let rest = sig_line.strip_prefix("\u{2014} ").unwrap();
    let (name, b64) = rest.split_once(' ').unwrap();
    assert_eq!(name, NAME);
    let bytes = STANDARD.decode(b64).unwrap();
    assert_eq!(bytes.len(), 68);
    assert_eq!(bytes[..4], log_verifier().key_id);

    let opened = open(&note, &[log_verifier()]).unwrap();
    assert_eq!(opened.body, cp.body());
    assert_eq!(opened.verified_by, [NAME]);
    assert_eq!(opened.unknown_signatures, 0);
    assert_eq!(Checkpoint::parse_body(&opened.body), Ok(cp));
}

#[test]
fn a_hyphen_instead_of_the_em_dash_is_malformed() {
    let note = sign(&checkpoint().body(), NAME, &log_key()).unwrap();
    for dash in ["- ", "-- ", "\u{2013} ", "\u{2014}"] {
        let bad = note.replace("\u{2014} ", dash);
        match open(&bad, &[log_verifier()]) {
            Err(NoteError::Malformed { line, reason }) => {
                assert_eq!(line, 5, "{dash:?}");
                assert!(reason.contains("em dash"), "{reason}");
                if dash.starts_with('-') {
                    assert!(reason.contains("hyphen"), "{reason}");
                }
            }
            other => panic!("{dash:?}: {other:?}"),
        }
    }
}

#[test]
fn unknown_signatures_are_ignored_and_counted() {
    let body = checkpoint().body();
    let note = sign(&body, NAME, &log_key()).unwrap();
    let witness = SigningKey::from_bytes(&[8u8; 32]);
    let witness_note = sign(&body, "witness.example", &witness).unwrap();
    let witness_line = witness_note.lines().last().unwrap();
    let cosigned = format!("{note}{witness_line}\n");

    let opened = open(&cosigned, &[log_verifier()]).unwrap();
    assert_eq!(opened.verified_by, [NAME]);
    assert_eq!(opened.unknown_signatures, 1);

    let witness_verifier = NoteVerifier::new("witness.example", witness.verifying_key());
    let opened = open(&cosigned, &[witness_verifier.clone(), log_verifier()]).unwrap();
    assert_eq!(opened.verified_by, [NAME, "witness.example"]);
    assert_eq!(opened.unknown_signatures, 0);

    // Same name, other key id (a rotated key); same key id, other name: both unknown.
    let rotated = NoteVerifier::new(NAME, witness.verifying_key());
    let renamed = NoteVerifier {
        name: "other.example".into(),
        ..log_verifier()
    };
    assert_eq!(
        open(&note, &[rotated, renamed]),
        Err(NoteError::NoVerifiedSignature)
    );
    // A note signed only by an unknown key.
    assert_eq!(
        open(&witness_note, &[log_verifier()]),
        Err(NoteError::NoVerifiedSignature)
    );
    // An unknown key's signature need not be 64 bytes (any length from the key id on).
    let odd = format!(
        "{note}\u{2014} witness.example {}\n",
        STANDARD.encode([1, 2, 3, 4, 5])
    );
    assert_eq!(open(&odd, &[log_verifier()]).unwrap().unknown_signatures, 1);
}

#[test]
fn a_flipped_bit_gives_a_bad_signature() {
    let note = sign(&checkpoint().body(), NAME, &log_key()).unwrap();
    let bad = || {
        Err(NoteError::BadSignature {
            name: NAME.to_owned(),
        })
    };
    // In the body: every bit of every byte before the blank line, as long as the text stays
    // valid UTF-8 without control characters (all of it is ASCII: flip the low 5 bits of
    // printable characters that stay printable).
    let body_len = checkpoint().body().len();
    let mut flips = 0;
    for i in 0..body_len {
        for bit in 0..7 {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 1 << bit;
            if bytes[i] < 0x20 || bytes[i] == b'\n' || note.as_bytes()[i] == b'\n' {
                continue;
            }
            let text = String::from_utf8(bytes).unwrap();
            assert_eq!(open(&text, &[log_verifier()]), bad(), "byte {i} bit {bit}");
            flips += 1;
        }
    }
    assert!(flips > 300, "{flips}");
    // In the signature: every bit of the 64 signature bytes.
    let (head, line) = note.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let b64 = line.rsplit(' ').next().unwrap();
    let sig = STANDARD.decode(b64).unwrap();
    for i in 4..68 {
        for bit in 0..8 {
            let mut s = sig.clone();
            s[i] ^= 1 << bit;
            let text = format!("{head}\n\u{2014} {NAME} {}\n", STANDARD.encode(&s));
            assert_eq!(open(&text, &[log_verifier()]), bad(), "byte {i} bit {bit}");
        }
    }
    // A flipped bit in the key id makes it another key: unknown.
    let mut s = sig.clone();
    s[0] ^= 1;
    let text = format!("{head}\n\u{2014} {NAME} {}\n", STANDARD.encode(&s));
    assert_eq!(
        open(&text, &[log_verifier()]),
        Err(NoteError::NoVerifiedSignature)
    );
}

#[test]
fn known_keys_signatures_must_be_well_formed() {
    let note = sign(&checkpoint().body(), NAME, &log_key()).unwrap();
    let (head, line) = note.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let sig = STANDARD.decode(line.rsplit(' ').next().unwrap()).unwrap();
    let with = |b64: &str| format!("{head}\n\u{2014} {NAME} {b64}\n");
    // Too short or too long for the known key, shorter than a key id, not base64.
    for b64 in [
        STANDARD.encode(&sig[..67]),
        STANDARD.encode([&sig[..], &[0]].concat()),
        STANDARD.encode(&sig[..3]),
        "not base64!".to_owned(),
        String::new(),
    ] {
        assert_eq!(
            malformed_line(open(&with(&b64), &[log_verifier()])),
            5,
            "{b64}"
        );
    }
    // No space after the name; a bad key name; an empty key name.
    for text in [
        format!("{head}\n\u{2014} {NAME}\n"),
        format!("{head}\n\u{2014} a+b {}\n", STANDARD.encode(&sig)),
        format!("{head}\n\u{2014}  {}\n", STANDARD.encode(&sig)),
    ] {
        malformed_line(open(&text, &[log_verifier()]));
    }
    // An empty note; a carriage return.
    assert_eq!(malformed_line(open("", &[log_verifier()])), 1);
    assert_eq!(
        malformed_line(open(&note.replace("8\n", "8\r\n"), &[log_verifier()])),
        2
    );
}

#[test]
fn a_text_with_blank_lines_is_split_at_the_last_one() {
    let body = "first\n\nthird\n\n";
    let note = sign(body, NAME, &log_key()).unwrap();
    assert!(
        note.starts_with(&format!("{body}\n\u{2014} {NAME} ")),
        "{note}"
    );
    assert_eq!(open(&note, &[log_verifier()]).unwrap().body, body);
}

#[test]
fn sign_refuses_what_open_would_refuse() {
    let key = log_key();
    assert!(matches!(
        sign("", NAME, &key),
        Err(NoteError::InvalidBody(_))
    ));
    assert!(matches!(
        sign("no newline", NAME, &key),
        Err(NoteError::InvalidBody(_))
    ));
    assert!(matches!(
        sign("tab\there\n", NAME, &key),
        Err(NoteError::InvalidBody(_))
    ));
    for name in ["", "a b", "a+b", "a\u{a0}b", "a\nb"] {
        assert!(
            matches!(
                sign("x\n", name, &key),
                Err(NoteError::InvalidKeyName { .. })
            ),
            "{name:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoints_print_and_parse() {
    let cp = checkpoint();
    assert_eq!(
        cp.body(),
        "example.com/pledger\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    );
    assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp.clone()));
    let with_ext = Checkpoint {
        extensions: vec!["ext one".into(), "— ext two".into()],
        ..cp
    };
    assert!(with_ext.body().ends_with("=\next one\n— ext two\n"));
    assert_eq!(
        Checkpoint::parse_body(&with_ext.body()),
        Ok(with_ext.clone())
    );
    let empty = Checkpoint {
        origin: "log".into(),
        size: 0,
        root: EMPTY_ROOT,
        extensions: vec![],
    };
    assert_eq!(
        empty.body(),
        "log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    );
    assert_eq!(Checkpoint::parse_body(&empty.body()), Ok(empty));
    let max = format!(
        "log\n{}\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        u64::MAX
    );
    assert_eq!(Checkpoint::parse_body(&max).unwrap().size, u64::MAX);
}

#[test]
fn malformed_checkpoints_are_refused_with_their_line() {
    let root = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=";
    let root31 = STANDARD.encode([0u8; 31]);
    let cases: Vec<(String, usize)> = vec![
        (format!("\n8\n{root}\n"), 1),
        (format!("log\n08\n{root}\n"), 2),
        (format!("log\n00\n{root}\n"), 2),
        (format!("log\n+8\n{root}\n"), 2),
        (format!("log\n-1\n{root}\n"), 2),
        (format!("log\n\n{root}\n"), 2),
        (format!("log\n 8\n{root}\n"), 2),
        (format!("log\n18446744073709551616\n{root}\n"), 2),
        (format!("log\n8\n{root31}\n"), 3),
        (format!("log\n8\n{}\n", root.trim_end_matches('=')), 3),
        ("log\n8\n".to_owned(), 3),
        (format!("log\n8\n{root}"), 3),
        (format!("log\n8\n{root}\n\n"), 4),
        (format!("log\n8\n{root}\next\n\nmore\n"), 5),
    ];
    for (body, want) in cases {
        match Checkpoint::parse_body(&body) {
            Err(NoteError::MalformedCheckpoint { line, reason }) => {
                assert_eq!(line, want, "{body:?}: {reason}")
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let err = Checkpoint::parse_body(&format!("log\n08\n{root}\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed checkpoint, line 2: the tree size \"08\" has a leading zero"
    );
}
