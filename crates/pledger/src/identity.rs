//! `pledger init` and `pledger identity`: the roster of who may sign what.

use std::collections::BTreeSet;

use pledger_core::identity::{PublicKey, Role, Roster, RosterCommand};
use pledger_core::Actor;
use pledger_infra::ledger::LEDGER_STREAM;
use serde_json::json;

use crate::app::{App, Report};
use crate::cli::IdentityCommand;
use crate::failure::Failure;

fn parse_roles(raw: &[String]) -> Result<BTreeSet<Role>, Failure> {
    raw.iter()
        .flat_map(|r| r.split(','))
        .map(|r| Role::parse(r).map_err(Failure::from))
        .collect()
}

fn replicas_json(replication: &[(String, usize)]) -> serde_json::Value {
    json!(replication
        .iter()
        .map(|(n, r)| json!({ "stream": n, "replicas": r }))
        .collect::<Vec<_>>())
}

/// How auditors pin the roster: its first event.
fn genesis_line(roster: &Roster) -> String {
    match &roster.genesis {
        Some(g) => format!(
            "roster genesis: {} enrolled at sequence {} (event {}, {}); auditors pin this",
            g.admin, g.sequence, g.event_id, g.hash
        ),
        None => "the roster is empty".to_string(),
    }
}

impl App {
    /// `pledger init [--admin NAME]`: create or check the streams and buckets; enrol the
    /// first admin with the signing key.
    pub(crate) async fn init(
        &self,
        admin: Option<&str>,
        replicas: Option<usize>,
    ) -> Result<Report, Failure> {
        {
            // Creates (or checks) what an ordinary command only looks up.
            let client = pledger_infra::connect(&self.url).await?;
            pledger_infra::Ledger::new(client)
                .ensure_replicated(replicas)
                .await?;
        }
        let conn = self.connect().await?;
        let url = pledger_infra::nats_url::redact_all(&self.url);
        let (replication, servers) = conn.ledger.replication().await?;
        let copies: Vec<String> = replication
            .iter()
            .map(|(name, n)| format!("{name} R{n}"))
            .collect();
        let mut text = format!(
            "ready: stream {LEDGER_STREAM}, stream PLEDGER_OUTCOMES and bucket pledger_routing at {url}\n{} server(s); {}",
            servers,
            copies.join(", ")
        );
        let Some(name) = admin else {
            let (roster, _, _) = conn.ledger.roster().await?;
            if roster.roster.is_empty() {
                text.push_str("\nthe roster is empty: run `pledger init --admin NAME --key FILE` to enrol the first admin");
            } else {
                text.push('\n');
                text.push_str(&genesis_line(&roster.roster));
            }
            return Ok(Report::ok(
                text,
                json!({ "url": url, "streams": [LEDGER_STREAM, pledger_core::names::OUTCOMES_STREAM], "buckets": [pledger_core::names::ROUTING_BUCKET], "genesis": roster.roster.genesis, "servers": servers, "replicas": replicas_json(&replication) }),
            ));
        };
        let identity = Actor::parse(name)?;
        let mut signer = self.signer()?;
        signer.claimed = None;
        let key = PublicKey::from_ssh(signer.key.public_key().clone())?;
        let (before, _, _) = conn.ledger.roster().await?;
        if let Some(g) = &before.roster.genesis {
            let same = g.admin == identity
                && before
                    .roster
                    .current_owner(signer.key.public_key())
                    .is_some_and(|i| i.name == identity);
            if !same {
                return Err(Failure::usage(format!(
                    "the roster already has its first admin: {} (sequence {}); ask an admin to enrol you with `pledger identity add`",
                    g.admin, g.sequence
                )));
            }
            text.push_str(&format!("\n{identity} is already the first admin\n"));
            text.push_str(&genesis_line(&before.roster));
            return Ok(Report::ok(
                text,
                json!({ "url": url, "admin": identity, "genesis": before.roster.genesis, "new": false, "servers": servers, "replicas": replicas_json(&replication) }),
            ));
        }
        let command = RosterCommand::Enroll {
            identity: identity.clone(),
            keys: vec![key.clone()],
            roles: [Role::Admin].into(),
        };
        conn.ledger.change_roster(&command, &signer).await?;
        let (after, _, _) = conn.ledger.roster().await?;
        match &after.roster.genesis {
            Some(g) if g.admin == identity => {}
            Some(g) => {
                return Err(Failure::other(format!(
                    "another first admin ({}) was enrolled at sequence {} before this one: check who can write to the ledger",
                    g.admin, g.sequence
                )))
            }
            None => return Err(Failure::other("the enrolment was not accepted by verification")),
        }
        text.push_str(&format!(
            "\nenrolled {identity} as the first admin with key {}\n{}",
            key.fingerprint(),
            genesis_line(&after.roster)
        ));
        Ok(Report::ok(
            text,
            json!({ "url": url, "admin": identity, "key": key.fingerprint(), "genesis": after.roster.genesis, "new": true, "servers": servers, "replicas": replicas_json(&replication) }),
        ))
    }

    pub(crate) async fn identity(&self, command: IdentityCommand) -> Result<Report, Failure> {
        let conn = self.connect().await?;
        match command {
            IdentityCommand::List => {
                let (v, ignored, _) = conn.ledger.roster().await?;
                let roster = &v.roster;
                let mut text = format!("{}\n", genesis_line(roster));
                let mut rows = Vec::new();
                for i in roster.identities.values() {
                    let keys: Vec<&str> = i
                        .keys
                        .iter()
                        .filter(|k| roster.keys[*k].retired_at.is_none())
                        .map(String::as_str)
                        .collect();
                    let status = match i.revoked_at {
                        Some(at) => format!(
                            "revoked at sequence {at}: {}",
                            i.revoked_reason.as_deref().unwrap_or_default()
                        ),
                        None => "active".to_string(),
                    };
                    let roles: Vec<Role> = i.roles.iter().copied().collect();
                    text.push_str(&format!(
                        "  {:<20} {:<40} {}\n      key {}\n      enrolled by {} at {} (sequence {})\n",
                        i.name.as_str(),
                        crate::render::roles(&roles),
                        status,
                        keys.join(", "),
                        i.enrolled_by,
                        i.enrolled_on,
                        i.enrolled_at
                    ));
                    rows.push(json!({
                        "identity": i.name,
                        "roles": i.roles,
                        "keys": keys,
                        "retired_keys": i.keys.iter().filter(|k| roster.keys[*k].retired_at.is_some()).collect::<Vec<_>>(),
                        "enrolled_by": i.enrolled_by,
                        "enrolled_at": i.enrolled_on,
                        "enrolled_sequence": i.enrolled_at,
                        "revoked_sequence": i.revoked_at,
                        "active": i.is_active(),
                    }));
                }
                if !ignored.is_empty() {
                    text.push_str(&format!("{} roster event(s) ignored:\n", ignored.len()));
                    for i in &ignored {
                        text.push_str(&format!("  {}\n", i.finding));
                    }
                }
                let ignored: Vec<_> = ignored.iter().map(|i| &i.finding).collect();
                Ok(Report::ok(
                    text,
                    json!({ "genesis": roster.genesis, "identities": rows, "ignored": ignored }),
                ))
            }
            IdentityCommand::Add {
                name,
                public_key,
                generate,
                roles,
            } => {
                let identity = Actor::parse(&name)?;
                let roles = parse_roles(&roles)?;
                let (key, generated) = self.new_key(&name, public_key.as_deref(), generate)?;
                let signer = self.signer()?;
                let done = conn
                    .ledger
                    .change_roster(
                        &RosterCommand::Enroll {
                            identity: identity.clone(),
                            keys: vec![key.clone()],
                            roles: roles.clone(),
                        },
                        &signer,
                    )
                    .await?;
                let stored = self.keep_generated(&name, generated)?;
                let roles: Vec<Role> = roles.into_iter().collect();
                Ok(Report::ok(
                    format!(
                        "enrolled {identity} as {} with key {}{stored}",
                        crate::render::roles(&roles),
                        key.fingerprint()
                    ),
                    json!({ "identity": identity, "roles": roles, "key": key.fingerprint(), "sequence": done.map(|r| r.sequence) }),
                ))
            }
            IdentityCommand::Rotate {
                name,
                public_key,
                generate,
            } => {
                let identity = Actor::parse(&name)?;
                let keyring = self.keyring();
                // A generated replacement is kept beside the old key until the rotation is
                // recorded, then takes its place.
                let (key, generated) = match (public_key, generate) {
                    (Some(path), _) => (crate::keys::read_public_key(&path)?, None),
                    (None, _) => {
                        let mut k = ssh_key::PrivateKey::random(
                            &mut rand_core::OsRng,
                            ssh_key::Algorithm::Ed25519,
                        )
                        .map_err(|e| Failure::other(format!("generating a key: {e}")))?;
                        k.set_comment(format!("pledger:{name}"));
                        (PublicKey::from_ssh(k.public_key().clone())?, Some(k))
                    }
                };
                let signer = self.signer()?;
                let done = conn
                    .ledger
                    .change_roster(
                        &RosterCommand::RotateKey {
                            identity: identity.clone(),
                            key: key.clone(),
                        },
                        &signer,
                    )
                    .await?;
                let mut note = String::new();
                if let Some(k) = generated {
                    let old = keyring.path(&name);
                    if old.exists() {
                        let retired = keyring.path(&format!(
                            "{name}.retired-{}",
                            pledger_infra::ledger::now().unix_millis()
                        ));
                        std::fs::rename(&old, &retired)
                            .map_err(|e| Failure::other(format!("{}: {e}", old.display())))?;
                        let _ = std::fs::remove_file(old.with_extension("pub"));
                    }
                    keyring.store(&name, &k)?;
                    note = format!(
                        "; the new private key is in {}",
                        keyring.path(&name).display()
                    );
                }
                Ok(Report::ok(
                    format!("rotated {identity}'s key to {}{note}", key.fingerprint()),
                    json!({ "identity": identity, "key": key.fingerprint(), "sequence": done.map(|r| r.sequence) }),
                ))
            }
            IdentityCommand::Roles { name, roles } => {
                let identity = Actor::parse(&name)?;
                let roles = parse_roles(&roles)?;
                let signer = self.signer()?;
                let done = conn
                    .ledger
                    .change_roster(
                        &RosterCommand::SetRoles {
                            identity: identity.clone(),
                            roles: roles.clone(),
                        },
                        &signer,
                    )
                    .await?;
                let roles: Vec<Role> = roles.into_iter().collect();
                Ok(Report::ok(
                    format!(
                        "{identity} has roles {}{}",
                        crate::render::roles(&roles),
                        if done.is_none() { " (unchanged)" } else { "" }
                    ),
                    json!({ "identity": identity, "roles": roles, "new": done.is_some() }),
                ))
            }
            IdentityCommand::Revoke { name, reason } => {
                let identity = Actor::parse(&name)?;
                let signer = self.signer()?;
                let done = conn
                    .ledger
                    .change_roster(
                        &RosterCommand::Revoke {
                            identity: identity.clone(),
                            reason: reason.clone(),
                        },
                        &signer,
                    )
                    .await?;
                Ok(Report::ok(
                    format!(
                        "revoked {identity}{}",
                        if done.is_none() {
                            " (already revoked)"
                        } else {
                            ""
                        }
                    ),
                    json!({ "identity": identity, "new": done.is_some() }),
                ))
            }
        }
    }

    /// The public key of a new identity: read from a file, or generated (kept in memory until
    /// the enrolment is recorded).
    fn new_key(
        &self,
        name: &str,
        public_key: Option<&std::path::Path>,
        generate: bool,
    ) -> Result<(PublicKey, Option<ssh_key::PrivateKey>), Failure> {
        match (public_key, generate) {
            (Some(path), false) => Ok((crate::keys::read_public_key(path)?, None)),
            _ => {
                if self.keyring().has(name) {
                    return Err(Failure::usage(format!(
                        "{} already exists; a key is never overwritten",
                        self.keyring().path(name).display()
                    )));
                }
                let k =
                    ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
                        .map_err(|e| Failure::other(format!("generating a key: {e}")))?;
                Ok((PublicKey::from_ssh(k.public_key().clone())?, Some(k)))
            }
        }
    }

    fn keep_generated(
        &self,
        name: &str,
        generated: Option<ssh_key::PrivateKey>,
    ) -> Result<String, Failure> {
        let Some(mut k) = generated else {
            return Ok(String::new());
        };
        k.set_comment(format!("pledger:{name}"));
        let keyring = self.keyring();
        keyring.store(name, &k)?;
        Ok(format!(
            "; its private key is in {} (`--as {name}` signs with it)",
            keyring.path(name).display()
        ))
    }
}
