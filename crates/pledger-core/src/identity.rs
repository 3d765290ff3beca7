//! Identities, keys and roles: who may sign what, at which position of the ledger.
//!
//! The roster is itself on the ledger (`pledger.ledger._fleet.roster`): identities are
//! enrolled, their keys rotated, their roles set and the identities revoked by events signed
//! by an admin. The first roster event enrols the first admin and is signed by one of its own
//! keys (trust on first use: auditors pin it). Key validity is positional: a key signs events
//! after the roster event that added it and before the one that retired it or revoked its
//! identity, by stream sequence.
//!
//! Which role may issue which command is the table [`PERMISSIONS`]: data, checked by the pure
//! decider with the rule `not-permitted`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decide::{Rejection, Rule};
use crate::event::{
    Event, IdentityEnrolled, IdentityKeyRotated, IdentityRevoked, IdentityRolesSet,
};
use crate::ids::{Actor, Timestamp};

/// What an identity may do. A command needs one of the roles its row of [`PERMISSIONS`] names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The roster, the global release windows, gate policies.
    Admin,
    /// Registers prompts, publishes versions, proposes, revises and withdraws changes.
    Author,
    /// Reviews (product and technical layers), accepts trade-offs, files regression cases.
    Reviewer,
    /// Attaches eval bundles and runs the gate.
    Ci,
    /// Plans, starts, advances, pauses, resumes and completes rollouts.
    ReleaseManager,
    /// Freezes and rolls back.
    Oncall,
    /// The workers' automatic decisions and records.
    Worker,
    /// Reads only.
    Auditor,
    /// Signs checkpoints of the ledger's Merkle tree (the notary worker).
    Notary,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::Admin,
        Role::Author,
        Role::Reviewer,
        Role::Ci,
        Role::ReleaseManager,
        Role::Oncall,
        Role::Worker,
        Role::Auditor,
        Role::Notary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Author => "author",
            Role::Reviewer => "reviewer",
            Role::Ci => "ci",
            Role::ReleaseManager => "release-manager",
            Role::Oncall => "oncall",
            Role::Worker => "worker",
            Role::Auditor => "auditor",
            Role::Notary => "notary",
        }
    }

    pub fn parse(raw: &str) -> Result<Role, crate::FieldError> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == raw.trim())
            .ok_or_else(|| {
                crate::FieldError::new(
                    "role",
                    format!(
                        "`{raw}` is not a role (one of {})",
                        Role::ALL.map(Role::name).join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use Role::*;

/// Which roles may issue which command: `(command, roles)`. The command names are
/// [`crate::Command::name`] and the fleet commands below; the table is the documented one
/// (docs/USER-GUIDE.md, "Identities, keys and roles").
pub const PERMISSIONS: &[(&str, &[Role])] = &[
    ("register", &[Author, Admin]),
    ("publish", &[Author]),
    ("adopt", &[Admin, ReleaseManager]),
    ("set-gate-policy", &[Admin]),
    ("propose", &[Author]),
    ("revise", &[Author]),
    ("withdraw", &[Author, ReleaseManager]),
    ("review", &[Reviewer]),
    ("attach-eval", &[Ci]),
    ("accept-tradeoff", &[Reviewer, ReleaseManager]),
    ("gate", &[Ci, Worker]),
    ("plan", &[ReleaseManager]),
    ("start", &[ReleaseManager]),
    ("advance", &[ReleaseManager, Worker]),
    ("pause", &[ReleaseManager, Oncall]),
    ("resume", &[ReleaseManager, Oncall]),
    ("freeze", &[Oncall, ReleaseManager, Worker]),
    ("complete", &[ReleaseManager, Worker]),
    ("rollback", &[Oncall, ReleaseManager, Worker]),
    ("set-release-windows", &[Admin, ReleaseManager]),
    ("raise-notice", &[Worker]),
    ("collect-regression-case", &[Worker, Reviewer, Oncall]),
    ("close-regression-case", &[Reviewer, ReleaseManager]),
    ("set-global-release-windows", &[Admin]),
    ("set-notifications", &[Admin]),
    ("record-digest", &[Worker, Admin, ReleaseManager]),
    ("enroll", &[Admin]),
    ("rotate-key", &[Admin]),
    ("set-roles", &[Admin]),
    ("revoke", &[Admin]),
    ("sign-checkpoint", &[Notary]),
];

/// The roles that may issue `command` (empty for an unknown name: nobody may).
pub fn roles_for(command: &str) -> &'static [Role] {
    PERMISSIONS
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, roles)| *roles)
        .unwrap_or(&[])
}

/// Refuses with `not-permitted`, naming the roles needed, unless `roles` holds one of them.
pub fn check_permitted(
    actor: &Actor,
    roles: &BTreeSet<Role>,
    command: &str,
) -> Result<(), Rejection> {
    let needed = roles_for(command);
    if needed.iter().any(|r| roles.contains(r)) {
        return Ok(());
    }
    let needed = needed
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(" or ");
    let held = if roles.is_empty() {
        "no role".to_string()
    } else {
        format!(
            "roles {}",
            roles
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(Rejection {
        rule: Rule::NotPermitted,
        message: format!(
            "{actor} may not {command}: it needs the role {needed} ({actor} has {held})"
        ),
    })
}

/// An OpenSSH ed25519 public key (`ssh-ed25519 AAAA… comment`). On the wire: that line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct PublicKey(ssh_key::PublicKey);

impl PublicKey {
    /// Parses an OpenSSH public key line; only ed25519 keys are accepted.
    pub fn parse(line: &str) -> Result<PublicKey, crate::FieldError> {
        let key = ssh_key::PublicKey::from_openssh(line.trim()).map_err(|e| {
            crate::FieldError::new(
                "key",
                format!("not an OpenSSH public key (`ssh-ed25519 AAAA… comment`): {e}"),
            )
        })?;
        PublicKey::from_ssh(key)
    }

    pub fn from_ssh(key: ssh_key::PublicKey) -> Result<PublicKey, crate::FieldError> {
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(crate::FieldError::new(
                "key",
                format!(
                    "{} keys are not accepted; use an ed25519 key",
                    key.algorithm()
                ),
            ));
        }
        Ok(PublicKey(key))
    }

    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it: the key id events carry.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint(ssh_key::HashAlg::Sha256).to_string()
    }

    pub fn ssh(&self) -> &ssh_key::PublicKey {
        &self.0
    }

    /// The same key with another comment (the comment is not part of the key's identity).
    pub fn same_key(&self, other: &ssh_key::PublicKey) -> bool {
        self.0.key_data() == other.key_data()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_openssh().unwrap_or_default())
    }
}

impl TryFrom<String> for PublicKey {
    type Error = crate::FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        PublicKey::parse(&value)
    }
}

impl From<PublicKey> for String {
    fn from(value: PublicKey) -> String {
        value.to_string()
    }
}

/// One key of an identity, with the stream sequences bounding its validity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyRecord {
    pub identity: Actor,
    pub key: PublicKey,
    /// The roster event that added it.
    pub added_at: u64,
    /// The roster event that retired it (rotation), if any.
    pub retired_at: Option<u64>,
}

/// An identity on the roster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identity {
    pub name: Actor,
    /// The roles in force now.
    pub roles: BTreeSet<Role>,
    /// Every role set with the sequence it took effect at, oldest first.
    pub role_history: Vec<(u64, BTreeSet<Role>)>,
    /// Fingerprints of every key it ever held, oldest first.
    pub keys: Vec<String>,
    pub enrolled_at: u64,
    pub enrolled_on: Timestamp,
    pub enrolled_by: Actor,
    pub revoked_at: Option<u64>,
    pub revoked_reason: Option<String>,
}

impl Identity {
    /// The roles in force for an event at stream sequence `position`.
    pub fn roles_at(&self, position: u64) -> BTreeSet<Role> {
        self.role_history
            .iter()
            .rev()
            .find(|(at, _)| *at < position)
            .map(|(_, roles)| roles.clone())
            .unwrap_or_default()
    }
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// The roster folded from its events, keeping every key's and role's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Roster {
    pub identities: BTreeMap<Actor, Identity>,
    /// Every key ever enrolled, by fingerprint.
    pub keys: BTreeMap<String, KeyRecord>,
    /// The roster's first event (the first admin's enrolment): what auditors pin.
    pub genesis: Option<RosterGenesis>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RosterGenesis {
    pub sequence: u64,
    pub event_id: String,
    /// `sha256:<hex>` of the event's stored bytes.
    pub hash: String,
    pub admin: Actor,
}

/// Why a key may not sign an event at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    Unknown,
    NotYetValid { added_at: u64 },
    Retired { retired_at: u64 },
    IdentityRevoked { identity: Actor, revoked_at: u64 },
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Unknown => f.write_str("the key is not on the roster"),
            KeyProblem::NotYetValid { added_at } => {
                write!(f, "the key was enrolled later, at sequence {added_at}")
            }
            KeyProblem::Retired { retired_at } => {
                write!(f, "the key was retired at sequence {retired_at}")
            }
            KeyProblem::IdentityRevoked {
                identity,
                revoked_at,
            } => write!(f, "{identity} was revoked at sequence {revoked_at}"),
        }
    }
}

/// What the roster says about a signing key at a position.
pub struct Signer<'a> {
    pub identity: &'a Identity,
    pub key: &'a KeyRecord,
    pub roles: BTreeSet<Role>,
}

/// A change to the roster, as an admin (or the first admin, bootstrapping) asks for it.
#[derive(Clone, Debug, PartialEq)]
pub enum RosterCommand {
    Enroll {
        identity: Actor,
        keys: Vec<PublicKey>,
        roles: BTreeSet<Role>,
    },
    RotateKey {
        identity: Actor,
        key: PublicKey,
    },
    SetRoles {
        identity: Actor,
        roles: BTreeSet<Role>,
    },
    Revoke {
        identity: Actor,
        reason: String,
    },
}

impl RosterCommand {
    pub fn name(&self) -> &'static str {
        match self {
            RosterCommand::Enroll { .. } => "enroll",
            RosterCommand::RotateKey { .. } => "rotate-key",
            RosterCommand::SetRoles { .. } => "set-roles",
            RosterCommand::Revoke { .. } => "revoke",
        }
    }

    /// The command a recorded roster event answers (for admission).
    pub fn of_event(event: &Event) -> Option<RosterCommand> {
        Some(match event {
            Event::IdentityEnrolled(e) => RosterCommand::Enroll {
                identity: e.identity.clone(),
                keys: e.keys.clone(),
                roles: e.roles.iter().copied().collect(),
            },
            Event::IdentityKeyRotated(e) => RosterCommand::RotateKey {
                identity: e.identity.clone(),
                key: e.key.clone(),
            },
            Event::IdentityRolesSet(e) => RosterCommand::SetRoles {
                identity: e.identity.clone(),
                roles: e.roles.iter().copied().collect(),
            },
            Event::IdentityRevoked(e) => RosterCommand::Revoke {
                identity: e.identity.clone(),
                reason: e.reason.clone(),
            },
            _ => return None,
        })
    }
}

fn reject<T>(rule: Rule, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        rule,
        message: message.into(),
    })
}

impl Roster {
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The identity and roles behind `fingerprint` for an event at stream sequence `position`.
    pub fn signer_at(&self, fingerprint: &str, position: u64) -> Result<Signer<'_>, KeyProblem> {
        let key = self.keys.get(fingerprint).ok_or(KeyProblem::Unknown)?;
        let identity = &self.identities[&key.identity];
        if key.added_at >= position {
            return Err(KeyProblem::NotYetValid {
                added_at: key.added_at,
            });
        }
        if let Some(retired_at) = key.retired_at.filter(|r| *r < position) {
            return Err(KeyProblem::Retired { retired_at });
        }
        if let Some(revoked_at) = identity.revoked_at.filter(|r| *r < position) {
            return Err(KeyProblem::IdentityRevoked {
                identity: identity.name.clone(),
                revoked_at,
            });
        }
        Ok(Signer {
            identity,
            key,
            roles: identity.roles_at(position),
        })
    }

    /// The identity holding this key now (enrolled, not retired, not revoked).
    pub fn current_owner(&self, key: &ssh_key::PublicKey) -> Option<&Identity> {
        let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        let record = self.keys.get(&fingerprint)?;
        let identity = self.identities.get(&record.identity)?;
        (record.retired_at.is_none() && identity.is_active()).then_some(identity)
    }

    fn active_admins(&self) -> impl Iterator<Item = &Identity> {
        self.identities
            .values()
            .filter(|i| i.is_active() && i.roles.contains(&Role::Admin))
    }

    fn active(&self, identity: &Actor) -> Result<&Identity, Rejection> {
        match self.identities.get(identity) {
            Some(i) if i.is_active() => Ok(i),
            Some(_) => reject(
                Rule::UnknownIdentity,
                format!("{identity} was revoked; identities are never re-enrolled"),
            ),
            None => reject(
                Rule::UnknownIdentity,
                format!("{identity} is not on the roster (pledger identity list)"),
            ),
        }
    }

    fn fresh_key(&self, key: &PublicKey) -> Result<(), Rejection> {
        match self.keys.get(&key.fingerprint()) {
            Some(k) => reject(
                Rule::KeyInUse,
                format!(
                    "key {} was already enrolled for {}; a key belongs to one identity, once",
                    key.fingerprint(),
                    k.identity
                ),
            ),
            None => Ok(()),
        }
    }

    /// Decides a roster change asked by `actor` holding `roles`. On an empty roster only the
    /// enrolment of a first admin, by itself, is possible.
    pub fn decide(
        &self,
        command: &RosterCommand,
        actor: &Actor,
        roles: &BTreeSet<Role>,
    ) -> Result<Vec<Event>, Rejection> {
        if self.is_empty() {
            let RosterCommand::Enroll {
                identity,
                roles: new_roles,
                ..
            } = command
            else {
                return reject(
                    Rule::UnknownIdentity,
                    "the roster is empty: enrol a first admin with `pledger init --admin NAME --key FILE`",
                );
            };
            if identity != actor || !new_roles.contains(&Role::Admin) {
                return reject(
                    Rule::NotPermitted,
                    "the roster's first identity must be an admin enrolling itself with its own key",
                );
            }
        } else {
            check_permitted(actor, roles, command.name())?;
        }
        match command {
            RosterCommand::Enroll {
                identity,
                keys,
                roles,
            } => {
                if self.identities.contains_key(identity) {
                    return reject(
                        Rule::IdentityExists,
                        format!("{identity} is already on the roster (rotate its key or set its roles instead)"),
                    );
                }
                if keys.is_empty() || roles.is_empty() {
                    return reject(
                        Rule::InvalidInput,
                        "an identity needs at least one key and one role",
                    );
                }
                let mut seen = BTreeSet::new();
                for k in keys {
                    self.fresh_key(k)?;
                    if !seen.insert(k.fingerprint()) {
                        return reject(Rule::InvalidInput, "the same key is listed twice");
                    }
                }
                Ok(vec![Event::IdentityEnrolled(IdentityEnrolled {
                    identity: identity.clone(),
                    keys: keys.clone(),
                    roles: roles.iter().copied().collect(),
                })])
            }
            RosterCommand::RotateKey { identity, key } => {
                let i = self.active(identity)?;
                self.fresh_key(key)?;
                let retired = i
                    .keys
                    .iter()
                    .filter(|f| self.keys[*f].retired_at.is_none())
                    .cloned()
                    .collect();
                Ok(vec![Event::IdentityKeyRotated(IdentityKeyRotated {
                    identity: identity.clone(),
                    key: key.clone(),
                    retired,
                })])
            }
            RosterCommand::SetRoles { identity, roles } => {
                let i = self.active(identity)?;
                if roles.is_empty() {
                    return reject(Rule::InvalidInput, "an identity needs at least one role");
                }
                if &i.roles == roles {
                    return Ok(vec![]);
                }
                if i.roles.contains(&Role::Admin)
                    && !roles.contains(&Role::Admin)
                    && self.active_admins().count() == 1
                {
                    return reject(
                        Rule::LastAdmin,
                        format!("{identity} is the last admin; enrol another admin first"),
                    );
                }
                Ok(vec![Event::IdentityRolesSet(IdentityRolesSet {
                    identity: identity.clone(),
                    roles: roles.iter().copied().collect(),
                })])
            }
            RosterCommand::Revoke { identity, reason } => {
                if reason.trim().is_empty() {
                    return reject(Rule::ReasonRequired, "revoking an identity needs a reason");
                }
                if self
                    .identities
                    .get(identity)
                    .is_some_and(|i| !i.is_active())
                {
                    return Ok(vec![]);
                }
                let i = self.active(identity)?;
                if i.roles.contains(&Role::Admin) && self.active_admins().count() == 1 {
                    return reject(
                        Rule::LastAdmin,
                        format!("{identity} is the last admin; enrol another admin first"),
                    );
                }
                Ok(vec![Event::IdentityRevoked(IdentityRevoked {
                    identity: identity.clone(),
                    reason: reason.trim().to_string(),
                })])
            }
        }
    }

    /// Applies an accepted roster event recorded at `sequence` by `by` at `at`.
    pub fn evolve(&mut self, event: &Event, sequence: u64, by: &Actor, at: Timestamp) {
        match event {
            Event::IdentityEnrolled(e) => {
                for k in &e.keys {
                    self.keys.insert(
                        k.fingerprint(),
                        KeyRecord {
                            identity: e.identity.clone(),
                            key: k.clone(),
                            added_at: sequence,
                            retired_at: None,
                        },
                    );
                }
                let roles: BTreeSet<Role> = e.roles.iter().copied().collect();
                self.identities.insert(
                    e.identity.clone(),
                    Identity {
                        name: e.identity.clone(),
                        roles: roles.clone(),
                        role_history: vec![(sequence, roles)],
                        keys: e.keys.iter().map(PublicKey::fingerprint).collect(),
                        enrolled_at: sequence,
                        enrolled_on: at,
                        enrolled_by: by.clone(),
                        revoked_at: None,
                        revoked_reason: None,
                    },
                );
            }
            Event::IdentityKeyRotated(e) => {
                for f in &e.retired {
                    if let Some(k) = self.keys.get_mut(f) {
                        k.retired_at.get_or_insert(sequence);
                    }
                }
                self.keys.insert(
                    e.key.fingerprint(),
                    KeyRecord {
                        identity: e.identity.clone(),
                        key: e.key.clone(),
                        added_at: sequence,
                        retired_at: None,
                    },
                );
                if let Some(i) = self.identities.get_mut(&e.identity) {
                    i.keys.push(e.key.fingerprint());
                }
            }
            Event::IdentityRolesSet(e) => {
                if let Some(i) = self.identities.get_mut(&e.identity) {
                    i.roles = e.roles.iter().copied().collect();
                    i.role_history.push((sequence, i.roles.clone()));
                }
            }
            Event::IdentityRevoked(e) => {
                if let Some(i) = self.identities.get_mut(&e.identity) {
                    i.revoked_at = Some(sequence);
                    i.revoked_reason = Some(e.reason.clone());
                }
            }
            _ => {}
        }
    }
}
