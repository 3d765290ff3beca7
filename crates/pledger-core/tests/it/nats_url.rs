//! Credentials in NATS URLs: taken out for the connect options, never printed.

use pledger_core::nats_url::{credentials, redact};

#[test]
fn credentials_are_taken_from_the_url_and_percent_decoded() {
    let cases = [
        ("nats://127.0.0.1:4222", None),
        (
            "nats://worker:s3cret@127.0.0.1:4222",
            Some(("worker", "s3cret")),
        ),
        (
            "nats://worker:p%40ss%3Aword@h:4222",
            Some(("worker", "p@ss:word")),
        ),
        ("nats://token-only@h:4222", Some(("token-only", ""))),
        ("nats://:nouser@h:4222", None),
        ("not a url", None),
    ];
    for (url, expect) in cases {
        let got = credentials(url);
        assert_eq!(
            got.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            expect,
            "{url}"
        );
    }
}

#[test]
fn a_password_is_never_shown() {
    assert_eq!(
        redact("nats://person:hunter2@127.0.0.1:4222"),
        "nats://person:***@127.0.0.1:4222"
    );
    assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    assert!(!redact("tls://a:b%40c@h:1/x").contains("b%40c"));
}

#[test]
fn a_nats_value_may_list_the_servers_of_a_cluster() {
    use pledger_core::nats_url::{credentials_of, redact_all, servers};
    let urls = "nats://a:4222, nats://w:pw@b:4222,,nats://c:4222";
    assert_eq!(
        servers(urls),
        ["nats://a:4222", "nats://w:pw@b:4222", "nats://c:4222"]
    );
    assert_eq!(
        credentials_of(urls),
        Some(("w".to_string(), "pw".to_string()))
    );
    assert_eq!(
        redact_all(urls),
        "nats://a:4222,nats://w:***@b:4222,nats://c:4222"
    );
}
