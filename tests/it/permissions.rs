//! tidy: wire names in this file: it pins, subject by subject, what `ops/nats-auth.conf`
//! permits, so it spells the names as that file does.
//!
//! NATS permissions for a real deployment (`ops/nats-auth.conf`): a server started with that
//! configuration, the streams and buckets created by `admin` with the project's own set-up, and
//! for each role the operations it may do succeeding and the others refused by the server.
//!
//! A refused operation is recognised by the server's own answer: nats-server drops a publish
//! the user may not make and sends `-ERR 'Permissions Violation for Publish to "<subject>"'`
//! on the connection (the request itself gets no reply and would only time out). Each check
//! waits for that error naming the exact subject, then the admin checks that nothing changed.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use pledger_e2e::*;
use pledger_infra::ledger::{LEDGER_STREAM, ROUTING_BUCKET};
use pledger_infra::server::NatsAuth;
use tokio::sync::mpsc;

/// The event the admin records before the roles act, and the routing value it writes.
const EVENT_SUBJECT: &str = "pledger.ledger.triage.prompt";
const EVENT: &[u8] = b"{\"written by\":\"admin\"}";
const ROUTING_KEY: &str = "triage";
const ROUTING_VALUE: &[u8] = b"{\"routing\":\"admin's\"}";

/// A server with ops/nats-auth.conf whose streams and buckets the admin created with
/// `Ledger::ensure`, holding one ledger event and one routing key.
struct Deployment {
    server: EphemeralServer,
    admin: jetstream::Context,
}

impl Deployment {
    async fn start() -> Deployment {
        let server = EphemeralServer::start_with_auth(NatsAuth::generate())
            .expect("nats-server starts with ops/nats-auth.conf (run ops/install-nats-server.sh)");
        // The project's own connect, with the credentials in the URL as `--nats` passes them.
        let client = pledger_infra::connect(&server.url_as("admin"))
            .await
            .expect("admin connects with the user and password in the URL");
        let ledger = pledger_infra::Ledger::new(client.clone());
        ledger.ensure().await.expect("admin creates the streams");
        let admin = jetstream::new(client);
        admin
            .publish(EVENT_SUBJECT, EVENT.into())
            .await
            .unwrap()
            .await
            .expect("admin appends to the ledger");
        admin
            .get_key_value(ROUTING_BUCKET)
            .await
            .unwrap()
            .put(ROUTING_KEY, ROUTING_VALUE.into())
            .await
            .expect("admin writes routing");
        Deployment { server, admin }
    }

    async fn connect(&self, user: &'static str) -> Role {
        Role::connect(&self.server, user).await
    }

    /// The ledger stream as the admin sees it.
    async fn ledger_info(&self) -> stream::Info {
        self.admin
            .get_stream(LEDGER_STREAM)
            .await
            .expect("the ledger stream exists")
            .info()
            .await
            .unwrap()
            .clone()
    }

    /// The last message on `subject` of the ledger stream, if any.
    async fn ledger_last(&self, subject: &str) -> Option<Vec<u8>> {
        let stream = self.admin.get_stream(LEDGER_STREAM).await.unwrap();
        match stream.direct_get_last_for_subject(subject).await {
            Ok(m) => Some(m.payload.to_vec()),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => None,
            Err(e) => panic!("direct get {subject}: {e}"),
        }
    }

    async fn routing_value(&self) -> Option<Vec<u8>> {
        let kv = self.admin.get_key_value(ROUTING_BUCKET).await.unwrap();
        kv.get(ROUTING_KEY).await.unwrap().map(|b| b.to_vec())
    }
}

/// One role's connection, with the errors the server sent it.
struct Role {
    user: &'static str,
    client: async_nats::Client,
    js: jetstream::Context,
    errors: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Role {
    async fn connect(server: &EphemeralServer, user: &'static str) -> Role {
        let url = server.url_as(user);
        let (tx, errors) = mpsc::unbounded_channel();
        let client = pledger_infra::nats_url::connect_options(&url)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client.clone());
        Role {
            user,
            client,
            js,
            errors: tokio::sync::Mutex::new(errors),
        }
    }

    /// Runs `op` and asserts that the server refuses it as a publish to `subject` the user may
    /// not make, before any answer comes.
    #[track_caller]
    fn refused<'a, T, E: std::fmt::Debug>(
        &'a self,
        subject: &'a str,
        op: impl Future<Output = Result<T, E>> + 'a,
    ) -> impl Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let expected = format!("Permissions Violation for Publish to \"{subject}\"");
            let mut errors = self.errors.lock().await;
            tokio::select! {
                result = op => panic!(
                    "{caller}: {} was not refused {subject}: it {}",
                    self.user,
                    match result {
                        Ok(_) => "succeeded".to_string(),
                        Err(e) => format!("failed otherwise: {e:?}"),
                    }
                ),
                error = errors.recv() => {
                    let error = error.expect("the connection is open");
                    assert!(
                        error.contains(&expected),
                        "{caller}: {} expected {expected:?}, the server said {error:?}",
                        self.user
                    );
                }
            }
        }
    }

    /// A core NATS publish (no reply expected) on `subject`, flushed, and the server's refusal.
    async fn refused_publish(&self, subject: &str) {
        self.client
            .publish(subject.to_string(), "forged".into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), self.errors.lock().await.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: a publish on {subject} was not refused", self.user))
            .expect("the connection is open");
        let expected = format!("Permissions Violation for Publish to \"{subject}\"");
        assert!(
            error.contains(&expected),
            "{}: expected {expected:?}, the server said {error:?}",
            self.user
        );
    }

    /// Asserts that the server sent no error since the last check: what just succeeded was
    /// not partly refused.
    #[track_caller]
    fn no_errors(&self) {
        if let Ok(error) = self.errors.try_lock().expect("no check runs").try_recv() {
            panic!("{}: unexpected server error {error:?}", self.user);
        }
    }

    /// Publishes through JetStream and waits for the stream's acknowledgement.
    async fn append(&self, subject: &str, payload: &[u8]) -> jetstream::publish::PublishAck {
        self.js
            .publish(subject.to_string(), payload.to_vec().into())
            .await
            .unwrap_or_else(|e| panic!("{} publishing on {subject}: {e}", self.user))
            .await
            .unwrap_or_else(|e| panic!("{}: no ack for {subject}: {e}", self.user))
    }

    /// A JetStream publish whose acknowledgement is awaited: refused before the publish is
    /// stored, it would time out.
    async fn try_append(&self, subject: &str) -> Result<jetstream::publish::PublishAck, String> {
        self.js
            .publish(subject.to_string(), "x".into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    }
}

async fn fetch_one(consumer: &consumer::PullConsumer) -> jetstream::Message {
    consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .expect("a message is delivered")
        .unwrap()
}

#[tokio::test]
async fn a_service_publishes_outcomes_and_reads_routing_only() {
    let d = Deployment::start().await;
    let service = d.connect("service").await;

    // Not on the ledger: refused by the server, and nothing stored.
    let subject = "pledger.ledger.x.prompt";
    service.refused(subject, service.try_append(subject)).await;
    assert_eq!(d.ledger_last(subject).await, None);

    // Outcomes: acknowledged by PLEDGER_OUTCOMES.
    let ack = service.append("pledger.outcomes.x", b"{}").await;
    assert_eq!(ack.stream, "PLEDGER_OUTCOMES");
    // The SDK's own connect takes the service's credentials from the URL.
    let sdk = pledger_client::connect(&d.server.url_as("service"))
        .await
        .unwrap();
    let ack = jetstream::new(sdk)
        .publish("pledger.outcomes.x", "{}".into())
        .await
        .unwrap()
        .await
        .expect("the SDK's connection may publish outcomes");
    assert_eq!(ack.stream, "PLEDGER_OUTCOMES");

    // The routing bucket: get and watch (what the SDK's resolver does), no put.
    let kv = service.js.get_key_value(ROUTING_BUCKET).await.unwrap();
    assert_eq!(
        kv.get(ROUTING_KEY).await.unwrap().as_deref(),
        Some(ROUTING_VALUE)
    );
    let mut watch = kv.watch_with_history(">").await.unwrap();
    let entry = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch delivers the bucket's history")
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.key.as_str(), &entry.value[..]),
        (ROUTING_KEY, ROUTING_VALUE)
    );
    service.no_errors();
    let put = format!("$KV.{ROUTING_BUCKET}.{ROUTING_KEY}");
    service
        .refused(&put, kv.put(ROUTING_KEY, "forged".into()))
        .await;
    assert_eq!(d.routing_value().await.as_deref(), Some(ROUTING_VALUE));

    // Nothing else: no reading the ledger, no dead letters, no bucket of its own.
    service
        .refused(
            "$JS.API.STREAM.INFO.PLEDGER_LEDGER",
            service.js.get_stream(LEDGER_STREAM),
        )
        .await;
    service
        .refused(
            "pledger.deadletter.x",
            service.try_append("pledger.deadletter.x"),
        )
        .await;
    service
        .refused(
            "$JS.API.STREAM.CREATE.KV_mine",
            service.js.create_stream(stream::Config {
                name: "KV_mine".into(),
                subjects: vec!["$KV.mine.>".into()],
                ..Default::default()
            }),
        )
        .await;
}

#[tokio::test]
async fn an_auditor_reads_the_ledger_and_writes_nothing() {
    let d = Deployment::start().await;
    let auditor = d.connect("auditor").await;

    // Reads: stream info, a direct get of the last message on a subject, an ephemeral
    // consumer over the ledger.
    let stream = auditor.js.get_stream(LEDGER_STREAM).await.unwrap();
    assert_eq!(stream.cached_info().state.messages, 1);
    let last = stream
        .direct_get_last_for_subject(EVENT_SUBJECT)
        .await
        .unwrap();
    assert_eq!(&last.payload[..], EVENT);
    let reader: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: "pledger.ledger.triage.>".into(),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let message = fetch_one(&reader).await;
    assert_eq!(
        (message.subject.as_str(), &message.payload[..]),
        (EVENT_SUBJECT, EVENT)
    );
    let kv = auditor.js.get_key_value(ROUTING_BUCKET).await.unwrap();
    assert_eq!(
        kv.get(ROUTING_KEY).await.unwrap().as_deref(),
        Some(ROUTING_VALUE)
    );
    auditor.no_errors();
    // What the release pages read: a release's judgement history (new points only) and a
    // watch of its canary status.
    let history = auditor
        .js
        .get_stream(pledger_core::names::JUDGEMENTS_STREAM)
        .await
        .unwrap();
    let _points: consumer::PullConsumer = history
        .create_consumer(consumer::pull::Config {
            filter_subject: "pledger.judgements.triage-r1".into(),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let status = auditor
        .js
        .get_key_value(pledger_core::names::CANARY_STATUS_BUCKET)
        .await
        .unwrap();
    let _watch = status.watch("triage-r1").await.unwrap();
    auditor.no_errors();

    // No durable consumer (it would keep state on the server): only unnamed ones.
    auditor
        .refused(
            "$JS.API.CONSUMER.CREATE.PLEDGER_LEDGER.audit.pledger.ledger.>",
            stream.create_consumer(consumer::pull::Config {
                durable_name: Some("audit".into()),
                filter_subject: "pledger.ledger.>".into(),
                ..Default::default()
            }),
        )
        .await;

    // No writes anywhere under pledger.>, and no KV put.
    for subject in [
        "pledger.ledger.triage.release.r1",
        "pledger.ledger._fleet.roster",
        "pledger.outcomes.triage",
        "pledger.deadletter.gatekeeper.x",
        "pledger.checkpoints",
    ] {
        auditor.refused(subject, auditor.try_append(subject)).await;
    }
    // It reads the checkpoints, as `audit verify` does.
    let checkpoints = auditor.js.get_stream("PLEDGER_CHECKPOINTS").await.unwrap();
    let _: consumer::PullConsumer = checkpoints
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let put = format!("$KV.{ROUTING_BUCKET}.{ROUTING_KEY}");
    auditor
        .refused(&put, kv.put(ROUTING_KEY, "forged".into()))
        .await;
    // Core NATS too: a plain publish is refused the same way.
    auditor.refused_publish(EVENT_SUBJECT).await;
    assert_eq!(d.ledger_info().await.state.messages, 1);
    assert_eq!(d.ledger_last(EVENT_SUBJECT).await.as_deref(), Some(EVENT));
    assert_eq!(d.routing_value().await.as_deref(), Some(ROUTING_VALUE));
}

#[tokio::test]
async fn people_and_workers_append_to_the_ledger_and_write_routing() {
    let d = Deployment::start().await;
    for user in ["person", "worker"] {
        let role = d.connect(user).await;
        // Append to the ledger; write routing.
        let subject = format!("pledger.ledger.{user}.prompt");
        let ack = role.append(&subject, user.as_bytes()).await;
        assert_eq!(ack.stream, LEDGER_STREAM);
        let kv = role.js.get_key_value(ROUTING_BUCKET).await.unwrap();
        kv.put(user, "table".into()).await.unwrap();
        assert_eq!(kv.get(user).await.unwrap().as_deref(), Some(&b"table"[..]));

        // Read the ledger: direct get, an ephemeral consumer, and a durable one whose
        // acknowledgement the server confirms (a worker's way of reading).
        let stream = role.js.get_stream(LEDGER_STREAM).await.unwrap();
        let last = stream.direct_get_last_for_subject(&subject).await.unwrap();
        assert_eq!(&last.payload[..], user.as_bytes());
        let ephemeral: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: EVENT_SUBJECT.into(),
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(&fetch_one(&ephemeral).await.payload[..], EVENT);
        let name = format!("pledger_{user}_test");
        let durable: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let message = fetch_one(&durable).await;
        message.double_ack().await.expect("the ack is confirmed");
        let mut durable = stream
            .get_consumer::<consumer::pull::Config>(&name)
            .await
            .unwrap();
        assert_eq!(
            durable.info().await.unwrap().ack_floor.stream_sequence,
            ack.sequence
        );
        stream.delete_consumer(&name).await.unwrap();
        role.no_errors();

        // Dead letters and checkpoints are the workers' (the notary writes the checkpoints);
        // everyone reads the checkpoints.
        let dead = format!("pledger.deadletter.{user}.x");
        if user == "worker" {
            assert_eq!(role.append(&dead, b"{}").await.stream, "PLEDGER_DEADLETTER");
            let note = role.append("pledger.checkpoints", b"a note").await;
            assert_eq!(note.stream, "PLEDGER_CHECKPOINTS");
            // The notifier's claims: create, read, compare-and-set.
            let claims = role
                .js
                .get_key_value(pledger_core::names::NOTIFY_CLAIMS_BUCKET)
                .await
                .unwrap();
            let revision = claims.create("ops.e1", "claim".into()).await.unwrap();
            let entry = claims.entry("ops.e1").await.unwrap().unwrap();
            assert_eq!(
                (entry.revision, &entry.value[..]),
                (revision, &b"claim"[..])
            );
            claims
                .update("ops.e1", "delivered".into(), revision)
                .await
                .unwrap();
        } else {
            role.refused(
                "$KV.pledger_notify.ops.e1",
                role.try_append("$KV.pledger_notify.ops.e1"),
            )
            .await;
            role.refused(&dead, role.try_append(&dead)).await;
            role.refused(
                "pledger.checkpoints",
                role.try_append("pledger.checkpoints"),
            )
            .await;
        }
        let checkpoints = role.js.get_stream("PLEDGER_CHECKPOINTS").await.unwrap();
        let _: consumer::PullConsumer = checkpoints
            .create_consumer(consumer::pull::Config {
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        // Outcomes are the services'; streams are the admin's.
        role.refused("pledger.outcomes.x", role.try_append("pledger.outcomes.x"))
            .await;
        role.refused(
            "$JS.API.STREAM.CREATE.MINE",
            role.js.create_stream(stream::Config {
                name: "MINE".into(),
                subjects: vec!["mine.>".into()],
                ..Default::default()
            }),
        )
        .await;
    }
    assert_eq!(d.ledger_info().await.state.messages, 3);
}

#[tokio::test]
async fn only_admin_changes_deletes_or_purges_the_ledger_stream() {
    let d = Deployment::start().await;
    let before = d.ledger_info().await;
    // A change JetStream itself would accept: a limit that ages events out.
    let mut limited = before.config.clone();
    limited.max_age = Duration::from_secs(3600);
    for user in ["worker", "person", "service", "auditor"] {
        let role = d.connect(user).await;
        role.refused(
            "$JS.API.STREAM.UPDATE.PLEDGER_LEDGER",
            role.js.update_stream(&limited),
        )
        .await;
        role.refused(
            "$JS.API.STREAM.DELETE.PLEDGER_LEDGER",
            role.js.delete_stream(LEDGER_STREAM),
        )
        .await;
        // Raw API requests: purge, and delete one message.
        for (subject, body) in [
            ("$JS.API.STREAM.PURGE.PLEDGER_LEDGER", "{}"),
            ("$JS.API.STREAM.MSG.DELETE.PLEDGER_LEDGER", "{\"seq\":1}"),
            ("$JS.API.STREAM.DELETE.KV_pledger_routing", ""),
            ("$JS.API.STREAM.PURGE.KV_pledger_routing", "{}"),
        ] {
            role.refused(subject, role.client.request(subject, body.into()))
                .await;
        }
    }
    let after = d.ledger_info().await;
    assert_eq!(
        after.config, before.config,
        "the ledger's configuration is unchanged"
    );
    assert_eq!(after.state.messages, 1);
    assert_eq!(d.routing_value().await.as_deref(), Some(ROUTING_VALUE));

    // The admin may change it, limits included.
    limited.description = Some("Prompt Ledger (described by admin)".into());
    let updated = d
        .admin
        .update_stream(&limited)
        .await
        .expect("admin updates");
    assert_eq!(
        (updated.config.description, updated.config.max_age),
        (limited.description.clone(), limited.max_age)
    );
    // Nobody, admin included, may lift deny_delete once set (JetStream refuses it).
    let mut loosened = limited.clone();
    loosened.deny_delete = false;
    let lift = d.admin.update_stream(&loosened).await;
    assert!(lift.is_err(), "deny_delete cannot be lifted: {lift:?}");
    assert!(d.ledger_info().await.config.deny_delete);
    // The stream's own flags still refuse purging it or deleting a message, admin included.
    let mut stream = d.admin.get_stream(LEDGER_STREAM).await.unwrap();
    let purge = stream.purge().await;
    assert!(
        purge.is_err(),
        "deny_purge refuses the admin too: {purge:?}"
    );
    let delete = stream.delete_message(1).await;
    assert!(
        delete.is_err(),
        "deny_delete refuses the admin too: {delete:?}"
    );
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    // What permissions cannot stop: the admin deletes the whole stream.
    d.admin.delete_stream(LEDGER_STREAM).await.unwrap();
    assert!(d.admin.get_stream(LEDGER_STREAM).await.is_err());
}

/// `--nats` with a role's user and password in the URL, as a person or an auditor runs pledger:
/// the NATS admin creates the streams and the first identity, people sign as `person`, an
/// auditor reads as `auditor`.
#[tokio::test]
async fn the_cli_takes_the_user_and_password_from_the_nats_url() {
    let d = Deployment::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    write_key(&config.join("keys"), "maria");
    let pledger = |user: &str, url: &str, args: &[&str]| {
        let out = std::process::Command::new(pledger_bin())
            .args(["--nats", url, "--as", user])
            .args(args)
            .env_remove("PLEDGER_NATS_URL")
            .env_remove("PLEDGER_ACTOR")
            .env_remove("PLEDGER_KEY")
            .env("PLEDGER_CONFIG_DIR", &config)
            .env("HOME", dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("pledger runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let admin = d.server.url_as("admin");
    let person = d.server.url_as("person");
    let auditor = d.server.url_as("auditor");

    let (code, stdout, stderr) = pledger("maria", &admin, &["init", "--admin", "maria"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, stderr) = pledger("maria", &person, &["init"]);
    assert_eq!(
        code,
        Some(0),
        "a person's init only checks: {stdout}{stderr}"
    );
    let password = d.server.url_as("person");
    let password = password.split(['@', ':']).nth(2).unwrap();
    assert!(
        stdout.contains("nats://person:***@") && !stdout.contains(password),
        "the URL is shown without its password: {stdout}"
    );
    for args in [
        &[
            "identity", "roles", "maria", "--role", "admin", "--role", "author",
        ][..],
        &[
            "identity",
            "add",
            "audrey",
            "--generate",
            "--role",
            "auditor",
        ][..],
    ] {
        let (code, stdout, stderr) = pledger("maria", &person, args);
        assert_eq!(code, Some(0), "{args:?}: {stdout}{stderr}");
    }
    let (code, stdout, stderr) = pledger(
        "maria",
        &person,
        &["prompt", "register", "support-triage", "--owner", "support"],
    );
    assert_eq!(code, Some(0), "a person registers: {stdout}{stderr}");
    let (code, stdout, stderr) = pledger("audrey", &auditor, &["prompt", "show", "support-triage"]);
    assert_eq!(code, Some(0), "an auditor reads: {stdout}{stderr}");
    assert!(stdout.contains("support"), "{stdout}");
    let (code, stdout, stderr) = pledger(
        "audrey",
        &auditor,
        &["prompt", "register", "billing", "--owner", "audit"],
    );
    assert_eq!(
        code,
        Some(3),
        "an auditor cannot register: {stdout}{stderr}"
    );
    assert!(stderr.contains("not-permitted"), "{stderr}");

    let wrong = person.replace(password, "wrong-password");
    let (code, stdout, stderr) = pledger("maria", &wrong, &["prompt", "show", "support-triage"]);
    assert_eq!(code, Some(5), "a wrong password: {stdout}{stderr}");
    assert!(
        stderr.contains("refused the user and password") && !stderr.contains("wrong-password"),
        "{stderr}"
    );
}
