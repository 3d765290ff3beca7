//! Routing tables in the precomputed form the resolver serves from, and the allocation-free
//! equivalent of [`pledger_core::routing::resolve`].
//!
//! Every table is compiled once, when it arrives, into the three answers it can give (no
//! rollout, baseline, candidate), each behind one `Arc`. Resolving is then: find the largest
//! share among the matching stages, hash the unit key if the share is partial, and clone one
//! `Arc`. Nothing is allocated and no string is copied per call.

use std::sync::Arc;

use pledger_core::outcome::Outcome;
use pledger_core::plan::MatchValue;
use pledger_core::routing::{self, Arm, RoutingTable, BUCKETS};
use pledger_core::{Artifact, PromptName, ReleaseId, VersionId};
use sha2::{Digest, Sha256};

use crate::context::{Attributes, RequestContext};

/// The sticky bucket of a unit key under a salt, in `0..10000`: identical to
/// [`pledger_core::routing::bucket`] (SHA-256 of `salt:unit`, first 8 bytes big-endian, modulo
/// 10000), without building the `salt:unit` string.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(b":")
        .chain_update(unit.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % BUCKETS as u64) as u32
}

/// One possible answer of a table, shared by every request that gets it.
#[derive(Debug)]
pub(crate) struct Served {
    prompt: PromptName,
    version: Option<VersionId>,
    artifact: Option<Arc<Artifact>>,
    release: Option<ReleaseId>,
    arm: Option<Arm>,
    /// The rollout's stage visit, copied onto outcomes.
    stage_visit: Option<String>,
    ledger_sequence: u64,
}

/// A routing table compiled for resolving.
#[derive(Debug)]
pub(crate) struct CompiledTable {
    pub(crate) table: Arc<RoutingTable>,
    /// The answer when there is no rollout.
    plain: Arc<Served>,
    rollout: Option<CompiledRollout>,
}

#[derive(Debug)]
struct CompiledRollout {
    frozen: bool,
    salt: Box<str>,
    /// Sorted by share, largest first: the first matching stage has the largest share.
    stages: Box<[CompiledStage]>,
    baseline: Arc<Served>,
    candidate: Arc<Served>,
}

#[derive(Debug)]
struct CompiledStage {
    /// The candidate's share in buckets (`round(percent * 100)`, as the core computes it).
    share: u32,
    matches: Box<[Condition]>,
}

/// One key of a stage's `match`: the request's value must be one of `accepted`.
#[derive(Debug)]
struct Condition {
    key: Box<str>,
    accepted: Box<[Box<str>]>,
}

impl CompiledStage {
    fn matches(&self, attrs: &dyn Attributes) -> bool {
        self.matches.iter().all(|c| {
            attrs
                .attr(&c.key)
                .is_some_and(|v| c.accepted.iter().any(|a| &**a == v))
        })
    }
}

impl CompiledTable {
    pub(crate) fn compile(table: RoutingTable) -> CompiledTable {
        let artifact = |v: &Option<VersionId>| {
            v.as_ref()
                .and_then(|v| table.artifacts.get(v))
                .map(|a| Arc::new(a.clone()))
        };
        let stable_artifact = artifact(&table.stable);
        let served = |version: Option<VersionId>,
                      artifact: Option<Arc<Artifact>>,
                      release: Option<ReleaseId>,
                      arm: Option<Arm>,
                      stage_visit: Option<String>| {
            Arc::new(Served {
                prompt: table.prompt.clone(),
                version,
                artifact,
                release,
                arm,
                stage_visit,
                ledger_sequence: table.ledger_sequence,
            })
        };
        let plain = served(
            table.stable.clone(),
            stable_artifact.clone(),
            None,
            None,
            None,
        );
        let rollout = table.rollout.as_ref().map(|r| {
            let candidate = Some(r.candidate.clone());
            let mut stages: Vec<CompiledStage> = r
                .stages
                .iter()
                .map(|s| CompiledStage {
                    share: (s.percent * 100.0).round() as u32,
                    matches: s
                        .matches
                        .iter()
                        .map(|(k, v)| {
                            let accepted: Box<[Box<str>]> = match v {
                                MatchValue::One(one) => Box::new([one.as_str().into()]),
                                MatchValue::Any(any) => {
                                    any.iter().map(|a| a.as_str().into()).collect()
                                }
                            };
                            Condition {
                                key: k.as_str().into(),
                                accepted,
                            }
                        })
                        .collect(),
                })
                .collect();
            stages.sort_by_key(|s| std::cmp::Reverse(s.share));
            CompiledRollout {
                frozen: r.state == "frozen",
                salt: r.bucketing_salt.as_str().into(),
                stages: stages.into(),
                baseline: served(
                    table.stable.clone(),
                    stable_artifact.clone(),
                    Some(r.release.clone()),
                    Some(Arm::Baseline),
                    r.stage_visit.clone(),
                ),
                candidate: served(
                    candidate.clone(),
                    artifact(&candidate),
                    Some(r.release.clone()),
                    Some(Arm::Candidate),
                    r.stage_visit.clone(),
                ),
            }
        });
        CompiledTable {
            plain,
            rollout,
            table: Arc::new(table),
        }
    }

    /// The answer for a request: the same as [`pledger_core::routing::resolve`].
    #[inline]
    pub(crate) fn resolve(&self, ctx: &RequestContext<'_>) -> &Arc<Served> {
        let Some(r) = &self.rollout else {
            return &self.plain;
        };
        if r.frozen {
            return &r.baseline;
        }
        let share = r
            .stages
            .iter()
            .find(|s| s.matches(ctx.attrs))
            .map_or(0, |s| s.share);
        let candidate = if share >= BUCKETS {
            true
        } else if share == 0 {
            // `bucket < 0` never holds: no need to hash.
            false
        } else {
            match ctx.unit {
                Some(unit) => bucket(&r.salt, unit) < share,
                None => false,
            }
        };
        if candidate {
            &r.candidate
        } else {
            &r.baseline
        }
    }
}

/// Which version a request gets, with the content to serve.
///
/// Cheap to clone (one `Arc`). Every request that gets the same arm of the same table shares
/// one `Resolution`'s data, so resolving copies no string and costs one reference-count
/// increment. An unknown prompt, or a prompt without a stable version outside a rollout,
/// resolves to an empty resolution: [`Resolution::version`] is `None` and the service serves
/// its own fallback.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    served: Option<Arc<Served>>,
}

impl Resolution {
    pub(crate) fn new(served: Arc<Served>) -> Resolution {
        Resolution {
            served: Some(served),
        }
    }

    /// The version to serve, `None` when there is nothing to serve.
    pub fn version(&self) -> Option<&VersionId> {
        self.served.as_ref()?.version.as_ref()
    }

    /// The content of that version. `None` when there is nothing to serve, or when the table
    /// was written by an older `pledger` that did not carry artifacts.
    pub fn artifact(&self) -> Option<&Arc<Artifact>> {
        self.served.as_ref()?.artifact.as_ref()
    }

    /// The release whose rollout assigned the arm (only during a rollout).
    pub fn release(&self) -> Option<&ReleaseId> {
        self.served.as_ref()?.release.as_ref()
    }

    /// `Baseline` or `Candidate` during a rollout; `None` outside one.
    pub fn arm(&self) -> Option<Arm> {
        self.served.as_ref()?.arm
    }

    /// The rollout's stage visit the request was resolved under (`None` outside a rollout, or
    /// from a table written by an older `pledger`). [`Resolution::outcome`] copies it.
    pub fn stage_visit(&self) -> Option<&str> {
        self.served.as_ref()?.stage_visit.as_deref()
    }

    /// The prompt, when the resolver knows it (`None` for an unknown prompt).
    pub fn prompt(&self) -> Option<&PromptName> {
        self.served.as_ref().map(|s| &s.prompt)
    }

    /// The ledger sequence of the table that answered (0 for an unknown prompt).
    pub fn ledger_sequence(&self) -> u64 {
        self.served.as_ref().map_or(0, |s| s.ledger_sequence)
    }

    /// Whether the prompt was known to the resolver at all.
    pub fn is_known(&self) -> bool {
        self.served.is_some()
    }

    /// The same answer in the core's type (what `pledger resolve --json` prints).
    pub fn to_core(&self) -> routing::Resolution {
        routing::Resolution {
            version: self.version().cloned(),
            release: self.release().cloned(),
            arm: self.arm(),
            stage_visit: self.stage_visit().map(str::to_string),
        }
    }

    /// An outcome for a request served with this resolution: prompt, version, release, arm and
    /// stage visit filled in, every measurement zero/false. Set the measurements (and `unit`, `attrs`,
    /// `feedback`) before reporting it. `None` when there was nothing to serve.
    pub fn outcome(&self, request_id: impl Into<String>) -> Option<Outcome> {
        let served = self.served.as_ref()?;
        Some(Outcome {
            prompt: served.prompt.clone(),
            version: served.version.clone()?,
            release: served.release.clone(),
            arm: served.arm,
            stage_visit: served.stage_visit.clone(),
            unit: None,
            attrs: Default::default(),
            request_id: request_id.into(),
            fallback: false,
            escalated: false,
            manually_corrected: false,
            refusal: false,
            latency_ms: 0.0,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: None,
            feedback: None,
        })
    }
}
