//! Ledger subject names: the one place they are spelled. `pledger-infra` re-exports them
//! beside its stream, bucket and consumer names.

use crate::event::{Aggregate, FleetTopic};
use crate::ids::PromptName;

/// Every ledger subject starts with this.
pub const LEDGER_SUBJECTS: &str = "pledger.ledger.>";
/// The global release windows: one subject, its last accepted event is in force.
pub const FLEET_WINDOWS_SUBJECT: &str = "pledger.ledger._fleet.windows";
/// The roster of identities, keys and roles.
pub const ROSTER_SUBJECT: &str = "pledger.ledger._fleet.roster";
/// Every digest subject.
pub const DIGEST_FILTER: &str = "pledger.ledger._fleet.digest.*";

pub fn prompt_subject(prompt: &PromptName) -> String {
    format!("pledger.ledger.{prompt}.prompt")
}

/// Every subject of a prompt's family: the prompt and its releases.
pub fn family_filter(prompt: &PromptName) -> String {
    format!("pledger.ledger.{prompt}.>")
}

/// The subject of one week's digest. It holds at most one event: the digest is appended only
/// if the subject is still empty (`Nats-Expected-Last-Subject-Sequence: 0`).
pub fn digest_subject(week: &str) -> String {
    format!("pledger.ledger._fleet.digest.{week}")
}

/// The subject an event of `aggregate` is recorded on.
pub fn subject_for(aggregate: &Aggregate) -> String {
    match aggregate {
        Aggregate::Prompt(p) => prompt_subject(p),
        Aggregate::Release(r) => format!("pledger.ledger.{}.release.{}", r.prompt(), r.token()),
        Aggregate::Fleet(FleetTopic::Windows) => FLEET_WINDOWS_SUBJECT.to_string(),
        Aggregate::Fleet(FleetTopic::Roster) => ROSTER_SUBJECT.to_string(),
        Aggregate::Fleet(FleetTopic::Digest(week)) => digest_subject(week),
    }
}
