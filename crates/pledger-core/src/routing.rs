//! The runtime config layer's data: a prompt's routing table and the sticky, deterministic
//! resolution of a request to a version. The CLI, the router and the service SDK all use
//! these same functions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::Artifact;
use crate::ids::{PromptName, ReleaseId, VersionId};
use crate::plan::MatchValue;
use crate::state::PromptState;

/// Buckets per unit key: percentages resolve to 1/100 of a percent.
pub const BUCKETS: u32 = 10_000;

/// The value of a prompt's key in the `pledger_routing` KV bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoutingTable {
    pub prompt: PromptName,
    /// The version all traffic gets outside the candidate's share.
    pub stable: Option<VersionId>,
    /// The rollout in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RoutedRollout>,
    /// The ledger sequence (of the prompt's family) this table was derived from. Writers never
    /// replace a table with one derived from an older sequence.
    pub ledger_sequence: u64,
    /// The content of the versions this table routes to (stable and candidate), so that a
    /// service resolves to a prompt it can serve without another lookup.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<VersionId, Artifact>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoutedRollout {
    pub release: ReleaseId,
    pub candidate: VersionId,
    /// `rolling_out`, `paused` or `frozen`. A frozen rollout routes everything to stable.
    pub state: String,
    pub current_stage: String,
    /// The current stage visit ([`StageVisit`]): which stage, entered when. Services put it on
    /// their outcomes so that an outcome counts in the stage it was served in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_visit: Option<String>,
    pub bucketing_salt: String,
    /// Stages up to and including the current one: the candidate's cumulative share.
    pub stages: Vec<RoutedStage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoutedStage {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matches: BTreeMap<String, MatchValue>,
    pub percent: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The release's baseline (the stable version) during a rollout: the control.
    Baseline,
    Candidate,
}

/// Which version a request gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resolution {
    pub version: Option<VersionId>,
    pub release: Option<ReleaseId>,
    pub arm: Option<Arm>,
    /// The rollout's stage visit the request was resolved under (only during a rollout, from
    /// a table that carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_visit: Option<String>,
}

/// One visit of a rollout to one of its stages: the release, the stage's index in the plan
/// and when the stage was entered. A stage resumed after a freeze, or entered again, is a new
/// visit. Its text form, `<release>/<stage index>/<entered at, unix ms>`, is what routing
/// tables and outcomes carry (`stage_visit`) and what the canary monitor keys its counts by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StageVisit {
    pub release: ReleaseId,
    pub stage: usize,
    pub entered_at_ms: i64,
}

impl StageVisit {
    pub fn new(release: &ReleaseId, stage: usize, entered_at: crate::ids::Timestamp) -> StageVisit {
        StageVisit {
            release: release.clone(),
            stage,
            entered_at_ms: entered_at.unix_millis(),
        }
    }

    /// Whether `text` is a stage visit's text form, allocating nothing (checked for every
    /// outcome that carries one).
    pub fn is_valid(text: &str) -> bool {
        let mut parts = text.rsplitn(3, '/');
        let (Some(entered), Some(stage), Some(release)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let entered_ok = match entered.strip_prefix('-') {
            Some(magnitude) => magnitude != "0" && crate::ids::canonical_number(magnitude),
            None => crate::ids::canonical_number(entered),
        } && entered.parse::<i64>().is_ok();
        entered_ok
            && crate::ids::canonical_number(stage)
            && stage.parse::<usize>().is_ok()
            && ReleaseId::is_valid(release)
    }

    /// The text form back; `None` for anything else.
    pub fn parse(text: &str) -> Option<StageVisit> {
        let mut parts = text.rsplitn(3, '/');
        let entered_at_ms = parts.next()?.parse().ok()?;
        let stage = parts.next()?.parse().ok()?;
        let release = ReleaseId::parse(parts.next()?).ok()?;
        let visit = StageVisit {
            release,
            stage,
            entered_at_ms,
        };
        (visit.to_string() == text).then_some(visit)
    }
}

impl std::fmt::Display for StageVisit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.release, self.stage, self.entered_at_ms)
    }
}

impl RoutingTable {
    /// Decodes a routing table from the JSON of its KV value. The error's field is the path to
    /// the value that fails (`rollout.stages[0].percent`), or `routing` for the value as a whole
    /// (broken JSON, with its line and column; a missing top-level field, named in the message).
    pub fn from_json(bytes: &[u8]) -> Result<RoutingTable, crate::FieldError> {
        // The usual, valid value decodes in one pass; only a refused one is decoded again,
        // tracking the path to the value that fails.
        serde_json::from_slice(bytes).map_err(|plain| {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let (path, message) = match serde_path_to_error::deserialize::<_, RoutingTable>(&mut de)
            {
                Err(e) => (e.path().to_string(), e.into_inner().to_string()),
                Ok(_) => (String::new(), de.end().err().unwrap_or(plain).to_string()),
            };
            let field = if path.is_empty() || path == "." {
                "routing".to_string()
            } else {
                path
            };
            crate::FieldError::new(field, message)
        })
    }
}

/// Derives the routing table from a prompt's state.
pub fn routing_table_for(state: &PromptState, ledger_sequence: u64) -> RoutingTable {
    let rollout = state.active_rollout().and_then(|r| {
        let plan = r.plan.as_ref()?;
        let stage = r.status.stage()?;
        let stage_visit = r
            .status
            .stage_entered_at()
            .map(|at| StageVisit::new(&r.id, stage, at).to_string());
        let salt = r.bucketing_salt.clone()?;
        let served = plan.stages.get(..=stage)?;
        Some(RoutedRollout {
            release: r.id.clone(),
            candidate: r.candidate.clone(),
            state: r.status.name().to_string(),
            current_stage: served.last()?.name.clone(),
            stage_visit,
            bucketing_salt: salt,
            stages: served
                .iter()
                .map(|s| RoutedStage {
                    name: s.name.clone(),
                    matches: s.matches.clone(),
                    percent: s.percent,
                })
                .collect(),
        })
    });
    let artifacts = state
        .stable
        .iter()
        .chain(rollout.as_ref().map(|r| &r.candidate))
        .filter_map(|v| {
            state
                .versions
                .get(v)
                .map(|p| (v.clone(), p.artifact.clone()))
        })
        .collect();
    RoutingTable {
        prompt: state.name.clone(),
        stable: state.stable.clone(),
        rollout,
        ledger_sequence,
        artifacts,
    }
}

/// How a routing table found in the bucket compares with the one derived from the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCheck {
    /// The same routing, whatever sequence each names.
    Agrees,
    /// Different routing, but the ledger has events for this prompt that the router has not
    /// applied yet: the bucket is behind, and the derived table brings it up to date.
    Behind,
    /// Different routing that lag does not explain: the stored table claims a later sequence
    /// than the ledger has, routes differently at the ledger's own sequence, or differs from
    /// what the router has already projected.
    Disagrees,
}

/// Compares a `stored` table with the one `derived` from the prompt's family, for a router
/// that has applied the ledger up to stream sequence `applied`. Every outcome but
/// [`TableCheck::Agrees`] is rewritten from the ledger (the ledger wins); only
/// [`TableCheck::Disagrees`] is a table that the ledger, however far the router has read it,
/// does not explain.
pub fn check_table(stored: &RoutingTable, derived: &RoutingTable, applied: u64) -> TableCheck {
    if stored.ledger_sequence > derived.ledger_sequence {
        return TableCheck::Disagrees;
    }
    let same_routing = RoutingTable {
        ledger_sequence: derived.ledger_sequence,
        ..stored.clone()
    } == *derived;
    if same_routing {
        TableCheck::Agrees
    } else if stored.ledger_sequence < derived.ledger_sequence && derived.ledger_sequence > applied
    {
        TableCheck::Behind
    } else {
        TableCheck::Disagrees
    }
}

/// The sticky bucket of a unit key under a salt: SHA-256 of `salt:unit`, first 8 bytes
/// big-endian, modulo [`BUCKETS`]. Any client can recompute it.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    let digest = Sha256::digest(format!("{salt}:{unit}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % BUCKETS as u64) as u32
}

/// Does a request with `attributes` match a stage's `match` (all keys, any listed value)?
pub fn stage_matches(
    matches: &BTreeMap<String, MatchValue>,
    attributes: &BTreeMap<String, String>,
) -> bool {
    matches
        .iter()
        .all(|(k, want)| attributes.get(k).is_some_and(|v| want.accepts(v)))
}

/// Resolves a request. Without a unit key, only stages at 100% can send it to the
/// candidate (there is nothing to stick a partial share to).
pub fn resolve(
    table: &RoutingTable,
    unit: Option<&str>,
    attributes: &BTreeMap<String, String>,
) -> Resolution {
    let Some(rollout) = &table.rollout else {
        // No rollout: everything is stable, and there is no experiment to assign an arm in.
        return Resolution {
            version: table.stable.clone(),
            release: None,
            arm: None,
            stage_visit: None,
        };
    };
    let stable = Resolution {
        version: table.stable.clone(),
        release: Some(rollout.release.clone()),
        arm: Some(Arm::Baseline),
        stage_visit: rollout.stage_visit.clone(),
    };
    if rollout.state == "frozen" {
        return stable;
    }
    let share = rollout
        .stages
        .iter()
        .filter(|s| stage_matches(&s.matches, attributes))
        .map(|s| (s.percent * 100.0).round() as u32)
        .max()
        .unwrap_or(0);
    let candidate = match unit {
        _ if share >= BUCKETS => true,
        Some(unit) => bucket(&rollout.bucketing_salt, unit) < share,
        None => false,
    };
    if candidate {
        Resolution {
            version: Some(rollout.candidate.clone()),
            release: Some(rollout.release.clone()),
            arm: Some(Arm::Candidate),
            stage_visit: rollout.stage_visit.clone(),
        }
    } else {
        stable
    }
}

/// The table the resolve benchmarks measure (`cargo bench -p pledger-client` and
/// `pledger bench`): a rollout of `support-triage` at its third stage, after an attribute match
/// at 100% and a list match at 100%, sending 25% of EU units to the candidate.
pub fn benchmark_table() -> RoutingTable {
    let artifact = |n: u32| {
        Artifact::from_text(
            &format!(
                "instructions = \"Classify the customer's message (bench version {n}).\"\nknown_limitations = [\"none known\"]\n\n[model]\nfamily = \"gpt-4o\"\ntemperature = 0.2\n\n[tools]\nschema_version = \"none\"\n"
            ),
            crate::error::FileFormat::Toml,
        )
        .expect("a valid artifact")
    };
    let prompt = PromptName::parse("support-triage").expect("valid");
    let (stable, candidate) = (artifact(1), artifact(2));
    let one = |v: &str| MatchValue::One(v.into());
    RoutingTable {
        prompt: prompt.clone(),
        stable: Some(stable.version_id()),
        rollout: Some(RoutedRollout {
            release: ReleaseId::new(prompt, 1),
            candidate: candidate.version_id(),
            state: "rolling_out".into(),
            current_stage: "eu-quarter".into(),
            stage_visit: Some("support-triage-r1/2/1790000000000".into()),
            bucketing_salt: "5f0c0a7e9d3b4c21".into(),
            stages: vec![
                RoutedStage {
                    name: "internal".into(),
                    matches: [("user_kind".to_string(), one("internal"))].into(),
                    percent: 100.0,
                },
                RoutedStage {
                    name: "low-risk-intents".into(),
                    matches: [(
                        "intent".to_string(),
                        MatchValue::Any(vec!["faq".into(), "greeting".into()]),
                    )]
                    .into(),
                    percent: 100.0,
                },
                RoutedStage {
                    name: "eu-quarter".into(),
                    matches: [("geo".to_string(), one("eu"))].into(),
                    percent: 25.0,
                },
            ],
        }),
        ledger_sequence: 42,
        artifacts: [
            (stable.version_id(), stable),
            (candidate.version_id(), candidate),
        ]
        .into(),
    }
}
