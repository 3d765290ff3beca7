use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use pledger_core::plan::MatchValue;
use pledger_core::routing::{RoutedRollout, RoutedStage, RoutingTable};
use pledger_core::{Artifact, FileFormat, PromptName, ReleaseId};
use pledger_infra::server::{find_nats_server, EphemeralServer, NatsServerProcess};
use pledger_infra::{Ledger, RoutingStore};

pub struct Env {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub routing: RoutingStore,
    // Dropped last: the server outlives the client.
    pub server: EphemeralServer,
}

/// A server set up as `pledger init` leaves it: streams and the routing bucket.
pub async fn env() -> Env {
    let server =
        EphemeralServer::start().expect("nats-server starts (run ops/install-nats-server.sh)");
    let client = fast_client(&server.url()).await;
    let ledger = Ledger::new(client.clone());
    ledger
        .ensure()
        .await
        .expect("streams and bucket are set up");
    let routing = RoutingStore::open(ledger.jetstream()).await.unwrap();
    Env {
        js: ledger.jetstream().clone(),
        client,
        routing,
        server,
    }
}

/// A connected client that reconnects quickly (tests stop and restart servers).
pub async fn fast_client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(50))
        .connect(url)
        .await
        .unwrap()
}

/// Starts the stopped server again, on the same address and store.
pub fn restart(server: &EphemeralServer) -> NatsServerProcess {
    let addr: SocketAddr = server.url().trim_start_matches("nats://").parse().unwrap();
    NatsServerProcess::start(&find_nats_server().unwrap(), server.data_dir(), addr)
        .expect("the server restarts on its address")
}

/// Bounds a wait: tests wait on notifications, never on sleeps, but never forever either.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn prompt(name: &str) -> PromptName {
    PromptName::parse(name).unwrap()
}

pub fn artifact(instructions: &str) -> Artifact {
    Artifact::from_text(
        &format!(
            "instructions = {instructions:?}\nknown_limitations = []\n[model]\nfamily = \"gpt-4o\"\ntemperature = 0.2\n[tools]\nschema_version = \"none\"\n"
        ),
        FileFormat::Toml,
    )
    .unwrap()
}

/// A table that serves `stable` to everyone.
pub fn stable_table(name: &str, sequence: u64, stable: &Artifact) -> RoutingTable {
    RoutingTable {
        prompt: prompt(name),
        stable: Some(stable.version_id()),
        rollout: None,
        ledger_sequence: sequence,
        artifacts: [(stable.version_id(), stable.clone())].into(),
    }
}

pub fn stage(name: &str, matches: &[(&str, &[&str])], percent: f64) -> RoutedStage {
    RoutedStage {
        name: name.into(),
        matches: matches
            .iter()
            .map(|(k, vs)| {
                let v = match vs {
                    [one] => MatchValue::One(one.to_string()),
                    many => MatchValue::Any(many.iter().map(|v| v.to_string()).collect()),
                };
                (k.to_string(), v)
            })
            .collect(),
        percent,
    }
}

/// A table in the middle of a rollout of `candidate` over `stable`.
pub fn rollout_table(
    name: &str,
    sequence: u64,
    stable: &Artifact,
    candidate: &Artifact,
    stages: Vec<RoutedStage>,
) -> RoutingTable {
    RoutingTable {
        prompt: prompt(name),
        stable: Some(stable.version_id()),
        rollout: Some(RoutedRollout {
            release: ReleaseId::new(prompt(name), 1),
            candidate: candidate.version_id(),
            state: "rolling_out".into(),
            current_stage: stages.last().map(|s| s.name.clone()).unwrap_or_default(),
            stage_visit: Some(format!("{name}-r1/0/1790000000000")),
            bucketing_salt: "a1b2c3d4e5f60718".into(),
            stages,
        }),
        ledger_sequence: sequence,
        artifacts: [
            (stable.version_id(), stable.clone()),
            (candidate.version_id(), candidate.clone()),
        ]
        .into(),
    }
}

/// The three stages of the README's plan, up to the EU quarter.
pub fn three_stages() -> Vec<RoutedStage> {
    vec![
        stage("internal", &[("user_kind", &["internal"])], 100.0),
        stage(
            "low-risk-intents",
            &[("intent", &["faq", "greeting"])],
            100.0,
        ),
        stage("eu-quarter", &[("geo", &["eu"])], 25.0),
    ]
}

/// A small deterministic generator (splitmix64), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
