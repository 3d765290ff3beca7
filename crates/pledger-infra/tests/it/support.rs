use std::sync::{Arc, OnceLock};

use pledger_core::artifact::Artifact;
use pledger_core::identity::Role;
use pledger_core::{FileFormat, PromptName};
use pledger_infra::cast::Cast;
use pledger_infra::server::EphemeralServer;
use pledger_infra::Ledger;

/// The tests' identities, with keys generated in this process (once per test binary) and
/// enrolled on every harness's ledger.
pub fn cast() -> &'static Cast {
    static CAST: OnceLock<Cast> = OnceLock::new();
    const PEOPLE: &[Role] = &[
        Role::Author,
        Role::Reviewer,
        Role::Ci,
        Role::ReleaseManager,
        Role::Oncall,
    ];
    CAST.get_or_init(|| {
        Cast::generate(&[
            ("admin", &[Role::Admin]),
            ("ana", PEOPLE),
            ("ci", PEOPLE),
            ("lead", PEOPLE),
            ("bo", PEOPLE),
            ("cy", PEOPLE),
            ("gatekeeper", &[Role::Worker]),
            ("router", &[Role::Worker]),
        ])
    })
}

pub struct Harness {
    pub ledger: Ledger,
    // Dropped last: the server outlives the client.
    pub server: EphemeralServer,
}

pub async fn harness() -> Harness {
    let server =
        EphemeralServer::start().expect("nats-server starts (run ops/install-nats-server.sh)");
    let client = pledger_infra::connect(&server.url())
        .await
        .expect("connects");
    let ledger = Ledger::new(client);
    ledger
        .ensure()
        .await
        .expect("streams and bucket are set up");
    cast().enroll(&ledger).await.expect("the cast is enrolled");
    Harness { ledger, server }
}

pub fn prompt(name: &str) -> PromptName {
    PromptName::parse(name).unwrap()
}

/// The key `name` of the cast signs with.
pub fn signer(name: &str) -> Arc<ssh_key::PrivateKey> {
    cast().key(name)
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
