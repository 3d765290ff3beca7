//! A cast of identities with keys held in memory, enrolled on a ledger in one go: the demo's
//! people and workers, the bench's, and the tests'. Production identities are enrolled one by
//! one with `pledger identity add`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pledger_core::identity::{PublicKey, Role, RosterCommand};
use pledger_core::Actor;
use ssh_key::PrivateKey;

use crate::ledger::{ExecuteError, Ledger};

/// Names, roles and private keys. The first member is the admin who enrols the others.
#[derive(Clone)]
pub struct Cast {
    members: Vec<(Actor, BTreeSet<Role>)>,
    keys: BTreeMap<String, Arc<PrivateKey>>,
}

impl Cast {
    /// Generates a fresh ed25519 key for every member. The first must hold `admin`.
    pub fn generate(members: &[(&str, &[Role])]) -> Cast {
        let mut cast = Cast {
            members: Vec::new(),
            keys: BTreeMap::new(),
        };
        for (name, roles) in members {
            let mut key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
                .expect("ed25519 key generation");
            key.set_comment(format!("pledger:{name}"));
            cast.add(name, roles, key);
        }
        cast
    }

    /// Adds a member with a given key.
    pub fn add(&mut self, name: &str, roles: &[Role], key: PrivateKey) {
        self.members.push((
            Actor::parse(name).expect("cast names are valid"),
            roles.iter().copied().collect(),
        ));
        self.keys.insert(name.to_string(), Arc::new(key));
    }

    /// The member's key. Panics for a name not in the cast (a programming error).
    pub fn key(&self, name: &str) -> Arc<PrivateKey> {
        self.keys
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the cast"))
            .clone()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(a, _)| a.as_str())
    }

    /// Enrols every member not yet on the roster: the first one (an admin) as the roster's
    /// first identity if the roster is empty, signed by its own key; the others by it.
    pub async fn enroll(&self, ledger: &Ledger) -> Result<(), ExecuteError> {
        let Some((admin, _)) = self.members.first() else {
            return Ok(());
        };
        let admin_key = self.key(admin.as_str());
        let (roster, _, _) = ledger.roster().await?;
        for (name, roles) in &self.members {
            if roster.roster.identities.contains_key(name) {
                continue;
            }
            let key = self.key(name.as_str());
            ledger
                .change_roster(
                    &RosterCommand::Enroll {
                        identity: name.clone(),
                        keys: vec![PublicKey::from_ssh(key.public_key().clone())
                            .expect("ed25519 keys are accepted")],
                        roles: roles.clone(),
                    },
                    if name == admin { &*key } else { &*admin_key },
                )
                .await?;
        }
        Ok(())
    }
}
