use pledger_core::artifact::Artifact;
use pledger_core::{Actor, FileFormat, PromptName};
use pledger_infra::server::EphemeralServer;
use pledger_infra::Ledger;

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
    Harness { ledger, server }
}

pub fn prompt(name: &str) -> PromptName {
    PromptName::parse(name).unwrap()
}

pub fn actor(name: &str) -> Actor {
    Actor::parse(name).unwrap()
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
