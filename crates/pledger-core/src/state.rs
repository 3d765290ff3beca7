//! State of a prompt and its releases, folded from the ledger by [`evolve`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::artifact::{json_digest, Artifact};
use crate::bundle::EvalBundle;
use crate::event::{
    ChangeProposed, Envelope, Event, GateDecided, GateEvidence, ReviewLayer, ReviewVerdict,
};
use crate::frozen::Frozen;
use crate::gate::GatePolicy;
use crate::ids::{Actor, PromptName, ReleaseId, Timestamp, VersionId};
use crate::plan::RolloutPlan;

/// A prompt, its versions and its releases: the consistency boundary of the ledger.
///
/// A state keeps its history in one of two [`Detail`]s. Both fold the same events with the
/// same [`evolve`] and decide alike ([`crate::decide`] reads only what both keep); a
/// [`Detail::Live`] state leaves out the records of the past (artifacts of versions nothing
/// refers to, ended releases beyond the latest [`RECENT`]), so its size follows the prompt's
/// open work, not its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptState {
    pub name: PromptName,
    /// `None` until the prompt is registered.
    pub owner: Option<String>,
    /// How much of the past this state keeps in full.
    pub detail: Detail,
    /// Published versions with their artifacts: every one in a [`Detail::Full`] state; in a
    /// [`Detail::Live`] one, those [`PromptState::compact`] keeps (decisions only ask whether
    /// a version exists, which `version_order` answers).
    pub versions: BTreeMap<VersionId, PublishedVersion>,
    /// Every published version id, in publication order.
    pub version_order: VersionIds,
    /// The version serving production outside any rollout.
    pub stable: Option<VersionId>,
    pub policy: GatePolicy,
    /// [`json_digest`] of `policy` (what a gate's evidence names), kept with it.
    pub policy_digest: String,
    /// Releases by number (`<prompt>-r<number>`): every one in a [`Detail::Full`] state; in a
    /// [`Detail::Live`] one, the open releases and the [`RECENT`] highest-numbered ended ones.
    pub releases: BTreeMap<u32, ReleaseState>,
    /// Every ended release, compactly: what a decision may still ask of one.
    pub ended: EndedReleases,
    /// Regression cases by id.
    pub regression_cases: BTreeMap<String, RegressionCase>,
    /// `event_count` when the last release completed: cases collected after it are the ones
    /// the next release's bundle must cover.
    pub last_completed_at_event: u64,
    /// The prompt's own release windows (`None`: the global ones apply, if any).
    pub windows: Option<crate::window::ReleaseWindows>,
    /// Events folded so far.
    pub event_count: u64,
}

/// A regression case: a production failure (or a reviewer's example) the next eval bundle
/// must cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionCase {
    pub case_id: String,
    pub fingerprint: String,
    pub tag: crate::outcome::FeedbackTag,
    pub example: String,
    pub version: Option<VersionId>,
    pub release: Option<ReleaseId>,
    pub source: crate::event::CaseSource,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub through_sequence: u64,
    /// `event_count` at collection (orders cases against releases).
    pub collected_at_event: u64,
    pub closed: Option<String>,
}

impl PromptState {
    /// Open cases collected since the last completed release: what a gate requires covered.
    pub fn cases_to_cover(&self) -> Vec<&RegressionCase> {
        self.regression_cases
            .values()
            .filter(|c| c.closed.is_none() && c.collected_at_event > self.last_completed_at_event)
            .collect()
    }

    /// The case with this fingerprint, if any.
    pub fn case_by_fingerprint(&self, fingerprint: &str) -> Option<&RegressionCase> {
        self.regression_cases
            .values()
            .find(|c| c.fingerprint == fingerprint)
    }
}

/// How much of its history a [`PromptState`] keeps in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Every version's artifact and every release's record: what `release show`, `prompt
    /// history` and the auditor's commands read.
    #[default]
    Full,
    /// What decisions, routing and the workers read: open releases, the [`RECENT`] latest
    /// ended ones, and the artifacts of the stable version, of versions open releases name and
    /// of the [`RECENT`] latest published. A reader that needs more reads the family whole.
    Live,
}

/// How many ended releases and published versions a [`Detail::Live`] state keeps in full
/// beyond those in use (what `prompt show` lists).
pub const RECENT: usize = 10;

/// Version ids in publication order, kept as their 32 digest bytes with an index from digest
/// to position: a prompt with many versions costs 32 bytes and 4 bytes of index each, and its
/// snapshot stores them as one string of hex digits. The tables are [`Frozen`]: a copy of a
/// state shares them, and the versions it adds are its own until it freezes them
/// ([`PromptState::freeze`]), so reading a family from a snapshot costs the same whatever
/// the length of its history.
#[derive(Clone, Debug, Default)]
pub struct VersionIds {
    order: Frozen<[u8; 32]>,
    /// Positions of the frozen versions, sorted by digest.
    sorted: Arc<[u32]>,
    /// Digest to position of the versions added since the last freeze.
    recent: HashMap<[u8; 32], u32>,
}

impl PartialEq for VersionIds {
    fn eq(&self, other: &VersionIds) -> bool {
        self.order == other.order
    }
}

/// The value of a lowercase hex digit (anything else: none).
fn nibble(c: u8) -> Option<u8> {
    let v = HEX_VALUE[c as usize];
    (v != 0xff).then_some(v)
}

/// Lowercase hex digit values; 0xff: not one.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut c = 0;
    while c < 10 {
        table[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        table[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    table
};

/// The 32 bytes 64 lowercase hex digits spell.
fn digest_bytes(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut invalid = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        invalid |= high | low;
        *o = (high << 4) | (low & 0x0f);
    }
    (invalid & 0xf0 == 0).then_some(out)
}

fn digest_of(version: &VersionId) -> Option<[u8; 32]> {
    let hex = version
        .as_str()
        .strip_prefix(crate::ids::VERSION_ID_PREFIX)?;
    digest_bytes(hex.as_bytes())
}

fn version_of(digest: &[u8; 32]) -> VersionId {
    VersionId::from_digest_hex(&crate::artifact::hex(digest))
}

impl VersionIds {
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// The ids in publication order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = VersionId> + '_ {
        self.order.iter().map(version_of)
    }
    pub fn to_vec(&self) -> Vec<VersionId> {
        self.iter().collect()
    }
    pub fn contains(&self, version: &VersionId) -> bool {
        self.position(version).is_some()
    }
    /// Position in publication order (0: the first published).
    pub fn position(&self, version: &VersionId) -> Option<u32> {
        self.position_of(&digest_of(version)?)
    }
    fn position_of(&self, digest: &[u8; 32]) -> Option<u32> {
        if let Some(at) = self.recent.get(digest) {
            return Some(*at);
        }
        let frozen = self.order.frozen();
        self.sorted
            .binary_search_by(|p| frozen[*p as usize].cmp(digest))
            .ok()
            .map(|i| self.sorted[i])
    }
    pub fn get(&self, position: u32) -> Option<VersionId> {
        self.order.get(position as usize).map(version_of)
    }
    /// Appends `version` unless it is there; returns its position (none for an id that is
    /// not `sha256:` and 64 lowercase hex digits, which no parsed id is).
    pub fn push(&mut self, version: &VersionId) -> Option<u32> {
        let digest = digest_of(version)?;
        Some(self.push_digest(digest))
    }
    fn push_digest(&mut self, digest: [u8; 32]) -> u32 {
        if let Some(at) = self.position_of(&digest) {
            return at;
        }
        let at = self.order.len() as u32;
        self.order.push(digest);
        self.recent.insert(digest, at);
        if self.order.needs_freeze() {
            self.freeze();
        }
        at
    }
    /// Moves the versions added since the last freeze into the shared tables.
    pub fn freeze(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let mut added: Vec<u32> = self.recent.drain().map(|(_, at)| at).collect();
        let tail = self.order.tail();
        let first = self.order.frozen().len() as u32;
        added.sort_unstable_by(|a, b| tail[(a - first) as usize].cmp(&tail[(b - first) as usize]));
        self.order.freeze();
        let order = self.order.frozen();
        let sorted = crate::frozen::merge_sorted(&self.sorted, &added, |a, b| {
            order[*a as usize] <= order[*b as usize]
        });
        self.sorted = Arc::from(sorted);
    }
    /// The latest `n` published, oldest first.
    pub fn latest(&self, n: usize) -> Vec<VersionId> {
        self.order
            .iter()
            .skip(self.order.len().saturating_sub(n))
            .map(version_of)
            .collect()
    }
    /// The digests, 32 bytes each in publication order (a snapshot's stored form).
    pub fn to_raw(&self) -> Vec<u8> {
        self.order.iter().flatten().copied().collect()
    }
    /// From [`VersionIds::to_raw`].
    pub fn from_raw(raw: &[u8]) -> Result<VersionIds, String> {
        if !raw.len().is_multiple_of(32) {
            return Err("version ids are 32 bytes each".into());
        }
        VersionIds::from_digests(
            raw.chunks_exact(32)
                .map(|d| d.try_into().expect("32 bytes")),
        )
    }
    /// The versions `digests` spell in publication order (a repeated one counts once), frozen.
    fn from_digests(digests: impl Iterator<Item = [u8; 32]>) -> Result<VersionIds, String> {
        let mut order: Vec<[u8; 32]> = Vec::with_capacity(digests.size_hint().0);
        order.extend(digests);
        let mut sorted: Vec<u32> = (0..order.len() as u32).collect();
        sorted.sort_by(|a, b| order[*a as usize].cmp(&order[*b as usize]).then(a.cmp(b)));
        let repeated = sorted
            .windows(2)
            .any(|w| order[w[0] as usize] == order[w[1] as usize]);
        if repeated {
            // Not what a snapshot or a ledger holds; kept as `push` would have kept them.
            let mut ids = VersionIds::default();
            for d in order {
                ids.push_digest(d);
            }
            ids.freeze();
            return Ok(ids);
        }
        Ok(VersionIds {
            order: Frozen::from_vec(order),
            sorted: Arc::from(sorted),
            recent: HashMap::new(),
        })
    }
    /// The ids whose hex digits start with `prefix`.
    fn starting_with(&self, prefix: &str) -> Vec<VersionId> {
        let wanted: Option<Vec<u8>> = prefix.bytes().map(nibble).collect();
        let Some(wanted) = wanted.filter(|w| !w.is_empty() && w.len() <= 64) else {
            return Vec::new();
        };
        self.order
            .iter()
            .filter(|d| {
                wanted.iter().enumerate().all(|(i, n)| {
                    let byte = d[i / 2];
                    let got = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
                    got == *n
                })
            })
            .map(version_of)
            .collect()
    }
}

impl Serialize for VersionIds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut hex = String::with_capacity(self.order.len() * 64);
        for d in self.order.iter() {
            hex.push_str(&crate::artifact::hex(d));
        }
        serializer.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for VersionIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<VersionIds, D::Error> {
        from_str_with(deserializer, |hex| {
            if !hex.len().is_multiple_of(64) {
                return Err("version ids are 64 hex digits each".into());
            }
            let digests: Vec<[u8; 32]> = hex
                .as_bytes()
                .chunks_exact(64)
                .map(|chunk| digest_bytes(chunk).ok_or("a version id is not lowercase hex"))
                .collect::<Result<_, _>>()?;
            VersionIds::from_digests(digests.into_iter())
        })
    }
}

/// Deserializes a string through `parse`, without copying it when the input lends it (a
/// snapshot's long strings of ids).
pub(crate) fn from_str_with<'de, D, T>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text<F>(F);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> serde::de::Visitor<'de> for Text<F> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Text(parse))
}

/// What [`EndedReleases`] records of a release besides how and when it ended.
struct Ending<'a> {
    author: &'a Actor,
    proposed_at: Timestamp,
    candidate: Option<u32>,
    baseline: Option<u32>,
}

/// How a release ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Completed,
    RolledBack,
    Withdrawn,
}

/// An ended release as every state keeps it: its number, how and when it ended, when it was
/// proposed, its candidate and baseline (positions in [`PromptState::version_order`]) and its
/// author.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedRelease {
    pub number: u32,
    pub how: Ended,
    pub proposed_at: Timestamp,
    /// When it completed or was rolled back (withdrawals record none).
    pub at: Option<Timestamp>,
    pub candidate: Option<u32>,
    pub baseline: Option<u32>,
    author: u32,
}

/// Every ended release of a prompt, by number, in a form that costs a few bytes each (the
/// authors kept once). The rows are [`Frozen`], like [`VersionIds`]: copies of a state share
/// them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "EndedRows", try_from = "EndedRows")]
pub struct EndedReleases {
    entries: Frozen<EndedRelease>,
    authors: Vec<Actor>,
}

/// The stored form of [`EndedReleases`]: the authors, and one fixed-width record per release
/// in base64 ([`ENDED_ROW_BYTES`] bytes, big-endian: number u32, how u8 (0 completed, 1 rolled
/// back, 2 withdrawn), proposed at i64 ms, ended at i64 ms (`i64::MIN`: none), candidate u32,
/// baseline u32 (`u32::MAX`: none), author u32 (an index into `authors`)).
#[derive(Serialize, Deserialize)]
struct EndedRows {
    authors: Vec<Actor>,
    rows: String,
}

const ENDED_ROW_BYTES: usize = 33;

impl From<EndedReleases> for EndedRows {
    fn from(e: EndedReleases) -> EndedRows {
        use base64::Engine;
        EndedRows {
            rows: base64::engine::general_purpose::STANDARD.encode(e.rows_to_raw()),
            authors: e.authors,
        }
    }
}

impl TryFrom<EndedRows> for EndedReleases {
    type Error = String;
    fn try_from(rows: EndedRows) -> Result<EndedReleases, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(rows.rows.as_bytes())
            .map_err(|e| format!("ended releases: {e}"))?;
        EndedReleases::from_raw(rows.authors, &bytes)
    }
}

impl EndedReleases {
    /// The rows, [`ENDED_ROW_BYTES`] each (a snapshot's stored form, with the authors apart).
    pub fn rows_to_raw(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * ENDED_ROW_BYTES);
        for r in self.entries.iter() {
            bytes.extend(r.number.to_be_bytes());
            bytes.push(match r.how {
                Ended::Completed => 0,
                Ended::RolledBack => 1,
                Ended::Withdrawn => 2,
            });
            bytes.extend(r.proposed_at.unix_millis().to_be_bytes());
            bytes.extend(r.at.map_or(i64::MIN, |t| t.unix_millis()).to_be_bytes());
            bytes.extend(r.candidate.unwrap_or(u32::MAX).to_be_bytes());
            bytes.extend(r.baseline.unwrap_or(u32::MAX).to_be_bytes());
            bytes.extend(r.author.to_be_bytes());
        }
        bytes
    }

    /// The authors, kept apart from the rows.
    pub fn authors(&self) -> &[Actor] {
        &self.authors
    }

    /// From [`EndedReleases::authors`] and [`EndedReleases::rows_to_raw`].
    pub fn from_raw(authors: Vec<Actor>, bytes: &[u8]) -> Result<EndedReleases, String> {
        if !bytes.len().is_multiple_of(ENDED_ROW_BYTES) {
            return Err(format!(
                "ended releases: rows are {ENDED_ROW_BYTES} bytes each"
            ));
        }
        let u32_at =
            |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let i64_at =
            |b: &[u8], at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let some = |v: u32| (v != u32::MAX).then_some(v);
        let mut entries = Vec::with_capacity(bytes.len() / ENDED_ROW_BYTES);
        for b in bytes.chunks_exact(ENDED_ROW_BYTES) {
            let author = u32_at(b, 29);
            if author as usize >= authors.len() {
                return Err("ended releases: a row names no author".into());
            }
            let at = i64_at(b, 13);
            entries.push(EndedRelease {
                number: u32_at(b, 0),
                how: match b[4] {
                    0 => Ended::Completed,
                    1 => Ended::RolledBack,
                    2 => Ended::Withdrawn,
                    other => return Err(format!("ended releases: no ending {other}")),
                },
                proposed_at: Timestamp::from_unix_millis(i64_at(b, 5)),
                at: (at != i64::MIN).then_some(Timestamp::from_unix_millis(at)),
                candidate: some(u32_at(b, 21)),
                baseline: some(u32_at(b, 25)),
                author,
            });
        }
        if !entries.windows(2).all(|w| w[0].number < w[1].number) {
            return Err("ended releases: rows are not in increasing release numbers".into());
        }
        Ok(EndedReleases {
            entries: Frozen::from_vec(entries),
            authors,
        })
    }
}

impl EndedReleases {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &EndedRelease> {
        self.entries.iter()
    }
    pub fn get(&self, number: u32) -> Option<&EndedRelease> {
        self.entries
            .binary_search_by_key(&number, |e| e.number)
            .ok()
            .and_then(|i| self.entries.get(i))
    }
    pub fn last_number(&self) -> Option<u32> {
        self.entries.last().map(|e| e.number)
    }
    pub fn author(&self, entry: &EndedRelease) -> &Actor {
        &self.authors[entry.author as usize]
    }

    /// Records that release `number` ended (again: a completed release rolled back).
    fn record(&mut self, number: u32, how: Ended, at: Option<Timestamp>, of: Ending<'_>) {
        let Ending {
            author,
            proposed_at,
            candidate,
            baseline,
        } = of;
        let author = match self.authors.iter().position(|a| a == author) {
            Some(i) => i as u32,
            None => {
                self.authors.push(author.clone());
                (self.authors.len() - 1) as u32
            }
        };
        let entry = EndedRelease {
            number,
            how,
            proposed_at,
            at,
            candidate,
            baseline,
            author,
        };
        match self.entries.binary_search_by_key(&number, |e| e.number) {
            Ok(i) => self.entries.set(i, entry),
            Err(i) => self.entries.insert(i, entry),
        }
        if self.entries.needs_freeze() {
            self.entries.freeze();
        }
    }

    /// Moves the rows added since the last freeze into the shared table.
    pub fn freeze(&mut self) {
        self.entries.freeze();
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedVersion {
    pub artifact: Artifact,
    pub published_at: Timestamp,
    pub published_by: Actor,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseState {
    pub id: ReleaseId,
    pub author: Actor,
    pub candidate: VersionId,
    pub baseline: Option<VersionId>,
    pub rationale: String,
    pub expected_changes: Vec<String>,
    pub proposed_at: Timestamp,
    /// When the current candidate started waiting for reviews (proposal or last revision).
    pub candidate_since: Timestamp,
    /// Keys of the notices raised about this release ([`crate::event::Notice::key`]).
    pub notices: std::collections::BTreeSet<String>,
    /// The latest review of each layer for the current candidate.
    pub reviews: BTreeMap<ReviewLayer, Review>,
    pub bundle: Option<AttachedBundle>,
    pub tradeoff: Option<Tradeoff>,
    pub gate: Option<GateDecided>,
    pub plan: Option<RolloutPlan>,
    /// Salt of the sticky bucketing, set when the rollout starts.
    pub bucketing_salt: Option<String>,
    pub status: ReleaseStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: Actor,
    pub verdict: ReviewVerdict,
    pub note: Option<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachedBundle {
    pub digest: String,
    pub bundle: EvalBundle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tradeoff {
    pub bundle_digest: String,
    pub accepted_by: Actor,
    pub reason: String,
}

/// Where a release is in its lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Open for reviews, evals, gate and plan.
    Proposed,
    /// Serving its current stage; `paused` stops advancing without moving traffic.
    RollingOut {
        stage: usize,
        stage_entered_at: Timestamp,
        paused: bool,
    },
    /// Traffic routed back to the baseline; waiting for a person (resume or roll back).
    Frozen {
        stage: usize,
        stage_entered_at: Timestamp,
        reason: String,
    },
    /// The candidate became the stable version.
    Completed {
        at: Timestamp,
    },
    RolledBack {
        at: Timestamp,
        reason: String,
    },
    Withdrawn {
        reason: String,
    },
}

impl ReleaseStatus {
    pub fn name(&self) -> &'static str {
        match self {
            ReleaseStatus::Proposed => "proposed",
            ReleaseStatus::RollingOut { paused: false, .. } => "rolling_out",
            ReleaseStatus::RollingOut { paused: true, .. } => "paused",
            ReleaseStatus::Frozen { .. } => "frozen",
            ReleaseStatus::Completed { .. } => "completed",
            ReleaseStatus::RolledBack { .. } => "rolled_back",
            ReleaseStatus::Withdrawn { .. } => "withdrawn",
        }
    }
    /// How the release ended, if it did.
    pub fn ended(&self) -> Option<Ended> {
        match self {
            ReleaseStatus::Completed { .. } => Some(Ended::Completed),
            ReleaseStatus::RolledBack { .. } => Some(Ended::RolledBack),
            ReleaseStatus::Withdrawn { .. } => Some(Ended::Withdrawn),
            _ => None,
        }
    }
    /// Rolling out, paused or frozen: the release holds the prompt's one rollout slot.
    pub fn is_active_rollout(&self) -> bool {
        matches!(
            self,
            ReleaseStatus::RollingOut { .. } | ReleaseStatus::Frozen { .. }
        )
    }
    pub fn stage(&self) -> Option<usize> {
        match self {
            ReleaseStatus::RollingOut { stage, .. } | ReleaseStatus::Frozen { stage, .. } => {
                Some(*stage)
            }
            _ => None,
        }
    }
    /// When the current stage was entered (rolling out or frozen).
    pub fn stage_entered_at(&self) -> Option<Timestamp> {
        match self {
            ReleaseStatus::RollingOut {
                stage_entered_at, ..
            }
            | ReleaseStatus::Frozen {
                stage_entered_at, ..
            } => Some(*stage_entered_at),
            _ => None,
        }
    }
}

impl ReleaseState {
    /// A release as proposed at `at`: open for reviews, nothing attached yet.
    pub fn proposed(e: &ChangeProposed, at: Timestamp) -> ReleaseState {
        ReleaseState {
            id: e.release.clone(),
            author: e.author.clone(),
            candidate: e.candidate.clone(),
            baseline: e.baseline.clone(),
            rationale: e.rationale.clone(),
            expected_changes: e.expected_changes.clone(),
            proposed_at: at,
            candidate_since: at,
            notices: Default::default(),
            reviews: BTreeMap::new(),
            bundle: None,
            tradeoff: None,
            gate: None,
            plan: None,
            bucketing_salt: None,
            status: ReleaseStatus::Proposed,
        }
    }

    /// The evidence a gate decided now would be based on (`None` without a bundle).
    pub fn current_evidence(&self, policy_digest: &str) -> Option<GateEvidence> {
        let bundle = self.bundle.as_ref()?;
        Some(GateEvidence {
            candidate: self.candidate.clone(),
            bundle_digest: bundle.digest.clone(),
            tradeoff_accepted: self
                .tradeoff
                .as_ref()
                .is_some_and(|t| t.bundle_digest == bundle.digest),
            policy_digest: policy_digest.to_string(),
        })
    }

    /// The gate decision on the current evidence, if one was made.
    pub fn current_gate(&self, policy_digest: &str) -> Option<&GateDecided> {
        let evidence = self.current_evidence(policy_digest)?;
        self.gate.as_ref().filter(|g| g.evidence == evidence)
    }

    pub fn stage_name(&self, index: usize) -> Option<&str> {
        self.plan
            .as_ref()
            .and_then(|p| p.stages.get(index))
            .map(|s| s.name.as_str())
    }
}

impl PromptState {
    /// A state keeping everything ([`Detail::Full`]).
    pub fn new(name: PromptName) -> PromptState {
        PromptState {
            name,
            owner: None,
            detail: Detail::Full,
            versions: BTreeMap::new(),
            version_order: VersionIds::default(),
            stable: None,
            policy: GatePolicy::default(),
            policy_digest: json_digest(&GatePolicy::default()),
            releases: BTreeMap::new(),
            ended: EndedReleases::default(),
            regression_cases: BTreeMap::new(),
            last_completed_at_event: 0,
            windows: None,
            event_count: 0,
        }
    }

    /// A state keeping what decisions read ([`Detail::Live`]).
    pub fn live(name: PromptName) -> PromptState {
        PromptState {
            detail: Detail::Live,
            ..PromptState::new(name)
        }
    }

    /// A fresh state of `name` in this state's detail.
    pub fn fresh(&self, name: PromptName) -> PromptState {
        PromptState {
            detail: self.detail,
            ..PromptState::new(name)
        }
    }

    pub fn is_registered(&self) -> bool {
        self.owner.is_some()
    }

    /// Is `version` published?
    pub fn has_version(&self, version: &VersionId) -> bool {
        self.version_order.contains(version)
    }

    /// The highest release number proposed (0: none yet); numbers run from 1 without gaps.
    pub fn last_release_number(&self) -> u32 {
        let open = self.releases.keys().next_back().copied().unwrap_or(0);
        open.max(self.ended.last_number().unwrap_or(0))
    }

    /// A release by id: its full record when this state keeps it, else (an ended release a
    /// [`Detail::Live`] state no longer keeps) [`PromptState::ended_view`].
    pub fn release(&self, id: &ReleaseId) -> Option<Cow<'_, ReleaseState>> {
        if id.prompt() != &self.name {
            return None;
        }
        self.release_by_number(id.number())
    }

    fn release_by_number(&self, number: u32) -> Option<Cow<'_, ReleaseState>> {
        match self.releases.get(&number) {
            Some(r) => Some(Cow::Borrowed(r)),
            None => self.ended_view(number).map(Cow::Owned),
        }
    }

    /// What every state keeps of an ended release, as a record: its id, author, candidate,
    /// baseline and how and when it ended. The rest is left empty (no reviews, evidence or
    /// plan; an empty rationale and rollback or withdrawal reason; a withdrawal's time is
    /// its proposal's):
    /// decisions about an ended release read nothing else.
    pub fn ended_view(&self, number: u32) -> Option<ReleaseState> {
        let e = self.ended.get(number)?;
        let version = |at: Option<u32>| at.and_then(|i| self.version_order.get(i));
        let at = e.at.unwrap_or(e.proposed_at);
        let proposal = ChangeProposed {
            release: ReleaseId::new(self.name.clone(), number),
            author: self.ended.author(e).clone(),
            candidate: version(e.candidate)?,
            baseline: version(e.baseline),
            rationale: String::new(),
            expected_changes: Vec::new(),
        };
        Some(ReleaseState {
            status: match e.how {
                Ended::Completed => ReleaseStatus::Completed { at },
                Ended::RolledBack => ReleaseStatus::RolledBack {
                    at,
                    reason: String::new(),
                },
                Ended::Withdrawn => ReleaseStatus::Withdrawn {
                    reason: String::new(),
                },
            },
            ..ReleaseState::proposed(&proposal, e.proposed_at)
        })
    }

    /// The release holding the rollout slot (rolling out, paused or frozen), if any.
    pub fn active_rollout(&self) -> Option<&ReleaseState> {
        self.releases
            .values()
            .find(|r| r.status.is_active_rollout())
    }

    /// The most recently completed release whose candidate is still the stable version.
    pub fn last_completed_serving(&self) -> Option<Cow<'_, ReleaseState>> {
        let stable = self.version_order.position(self.stable.as_ref()?)?;
        let e = self
            .ended
            .iter()
            .rev()
            .find(|e| e.how == Ended::Completed && e.candidate == Some(stable))?;
        self.release_by_number(e.number)
    }

    /// Finds a version by full id or unique prefix (`sha256:ab12…` or `ab12…`).
    pub fn find_version(&self, reference: &str) -> Result<VersionId, VersionLookupError> {
        let hex = reference
            .strip_prefix(crate::ids::VERSION_ID_PREFIX)
            .unwrap_or(reference);
        let found = self.version_order.starting_with(hex);
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(VersionLookupError::Unknown),
            n => Err(VersionLookupError::Ambiguous(n)),
        }
    }

    /// Whether a [`Detail::Live`] state keeps `version`'s artifact: the stable one, those the
    /// releases it keeps name, and the [`RECENT`] latest published. Asked for each kept
    /// version after every folded event, so it allocates nothing.
    fn in_use(&self, version: &VersionId) -> bool {
        let recent = self
            .version_order
            .position(version)
            .is_some_and(|p| p as usize + RECENT >= self.version_order.len());
        recent
            || self.stable.as_ref() == Some(version)
            || self
                .releases
                .values()
                .any(|r| &r.candidate == version || r.baseline.as_ref() == Some(version))
    }

    /// Versions routing and the commands read whose artifact this state lacks: the stable
    /// version and those open releases name. A [`Detail::Live`] state lacks one when a
    /// version it had let go is adopted or proposed again; the reader fetches it from the
    /// family's full read ([`PromptState::keep_artifact`]).
    pub fn missing_artifacts(&self) -> Vec<VersionId> {
        let mut wanted: Vec<&VersionId> = self.stable.iter().collect();
        for r in self
            .releases
            .values()
            .filter(|r| r.status.ended().is_none())
        {
            wanted.push(&r.candidate);
            wanted.extend(r.baseline.iter());
        }
        let mut missing: Vec<VersionId> = wanted
            .into_iter()
            .filter(|v| !self.versions.contains_key(*v) && self.has_version(v))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// Keeps a published version's record taken from another state of the same prompt (a
    /// full read). Artifacts are content-addressed and no decision reads them, so this changes
    /// what the state can show, never what it decides.
    pub fn keep_artifact(&mut self, version: &VersionId, published: PublishedVersion) {
        if self.has_version(version) && published.artifact.version_id() == *version {
            self.versions.insert(version.clone(), published);
        }
    }

    /// Moves the versions and ended releases added since the last freeze into the tables
    /// copies share ([`crate::frozen`]): a reader does it when it keeps a snapshot, so that
    /// the readers resumed from it share one block of each.
    pub fn freeze(&mut self) {
        self.version_order.freeze();
        self.ended.freeze();
    }

    /// Lets go of what a [`Detail::Live`] state does not keep (nothing for a full one):
    /// ended releases beyond the [`RECENT`] highest-numbered, artifacts not in use.
    pub fn compact(&mut self) {
        if self.detail == Detail::Full {
            return;
        }
        // Run after every folded event: what there is to let go of is found without
        // allocating, and only then collected (most events let go of nothing).
        let ended = self
            .releases
            .values()
            .filter(|r| r.status.ended().is_some())
            .count();
        if ended > RECENT {
            let lowest: Vec<u32> = self
                .releases
                .iter()
                .filter(|(_, r)| r.status.ended().is_some())
                .map(|(n, _)| *n)
                .take(ended - RECENT)
                .collect();
            for n in &lowest {
                self.releases.remove(n);
            }
        }
        if self.versions.len() > RECENT && self.versions.keys().any(|v| !self.in_use(v)) {
            let drop: Vec<VersionId> = self
                .versions
                .keys()
                .filter(|v| !self.in_use(v))
                .cloned()
                .collect();
            for v in drop {
                self.versions.remove(&v);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionLookupError {
    Unknown,
    Ambiguous(usize),
}

/// Folds one recorded event into the state. Events are facts: `evolve` never refuses one.
/// An event that does not fit the state (which `decide` never produces, and which readers do
/// not admit) changes nothing but `event_count`, so a replay of any ledger terminates with a
/// state. There is no separate count of such events: readers report inadmissible events
/// before they reach `evolve` (see `verify::admit`).
pub fn evolve(state: &mut PromptState, envelope: &Envelope) {
    state.event_count += 1;
    let at = envelope.occurred_at;
    match &envelope.event {
        Event::PromptRegistered(e) => state.owner = Some(e.owner.clone()),
        Event::VersionPublished(e) => {
            if !state.has_version(&e.version) {
                state.version_order.push(&e.version);
                state.versions.insert(
                    e.version.clone(),
                    PublishedVersion {
                        artifact: e.artifact.clone(),
                        published_at: at,
                        published_by: envelope.actor.clone(),
                    },
                );
            }
        }
        Event::VersionAdopted(e) => state.stable = Some(e.version.clone()),
        Event::GatePolicySet(e) => {
            state.policy = e.policy.clone();
            state.policy_digest = json_digest(&state.policy);
        }
        Event::ChangeProposed(e) => {
            state
                .releases
                .insert(e.release.number(), ReleaseState::proposed(e, at));
        }
        Event::CandidateRevised(e) => with_release(state, &e.release, |r| {
            r.candidate = e.candidate.clone();
            r.candidate_since = at;
            r.reviews.clear();
        }),
        Event::ReviewSubmitted(e) => with_release(state, &e.release, |r| {
            r.reviews.insert(
                e.layer,
                Review {
                    reviewer: e.reviewer.clone(),
                    verdict: e.verdict,
                    note: e.note.clone(),
                    at,
                },
            );
        }),
        Event::EvalBundleAttached(e) => with_release(state, &e.release, |r| {
            r.bundle = Some(AttachedBundle {
                digest: e.bundle_digest.clone(),
                bundle: e.bundle.clone(),
            });
        }),
        Event::TradeoffAccepted(e) => with_release(state, &e.release, |r| {
            r.tradeoff = Some(Tradeoff {
                bundle_digest: e.bundle_digest.clone(),
                accepted_by: e.accepted_by.clone(),
                reason: e.reason.clone(),
            });
        }),
        Event::GateDecided(e) => with_release(state, &e.release, |r| r.gate = Some(e.clone())),
        Event::RolloutPlanned(e) => {
            with_release(state, &e.release, |r| r.plan = Some(e.plan.clone()))
        }
        Event::RolloutStarted(e) => with_release(state, &e.release, |r| {
            r.bucketing_salt = Some(e.bucketing_salt.clone());
            r.status = ReleaseStatus::RollingOut {
                stage: 0,
                stage_entered_at: at,
                paused: false,
            };
        }),
        Event::StageAdvanced(e) => with_release(state, &e.release, |r| {
            let Some(next) = r.plan.as_ref().and_then(|p| p.stage_index(&e.to_stage)) else {
                return;
            };
            if let ReleaseStatus::RollingOut { paused, .. } = r.status {
                r.status = ReleaseStatus::RollingOut {
                    stage: next,
                    stage_entered_at: at,
                    paused,
                };
            }
        }),
        Event::RolloutPaused(e) => with_release(state, &e.release, |r| set_paused(r, true)),
        Event::RolloutResumed(e) => with_release(state, &e.release, |r| match r.status {
            ReleaseStatus::RollingOut { .. } => set_paused(r, false),
            // Resuming a frozen rollout starts its stage's bake time again.
            ReleaseStatus::Frozen { stage, .. } => {
                r.status = ReleaseStatus::RollingOut {
                    stage,
                    stage_entered_at: at,
                    paused: false,
                };
            }
            _ => {}
        }),
        Event::RolloutFrozen(e) => with_release(state, &e.release, |r| {
            if let ReleaseStatus::RollingOut {
                stage,
                stage_entered_at,
                ..
            } = r.status
            {
                r.status = ReleaseStatus::Frozen {
                    stage,
                    stage_entered_at,
                    reason: e.reason.clone(),
                };
            }
        }),
        Event::RolledBack(e) => {
            with_release(state, &e.release, |r| {
                r.status = ReleaseStatus::RolledBack {
                    at,
                    reason: e.reason.clone(),
                };
            });
            record_end(state, &e.release, Ended::RolledBack, Some(at));
            state.stable = Some(e.to_version.clone());
        }
        Event::ReleaseCompleted(e) => {
            state.last_completed_at_event = state.event_count;
            with_release(state, &e.release, |r| {
                r.status = ReleaseStatus::Completed { at }
            });
            record_end(state, &e.release, Ended::Completed, Some(at));
            state.stable = Some(e.version.clone());
        }
        Event::RegressionCaseCollected(e) => {
            let collected_at_event = state.event_count;
            state
                .regression_cases
                .entry(e.case_id.clone())
                .or_insert_with(|| RegressionCase {
                    case_id: e.case_id.clone(),
                    fingerprint: e.fingerprint.clone(),
                    tag: e.tag,
                    example: e.example.clone(),
                    version: e.version.clone(),
                    release: e.release.clone(),
                    source: e.source,
                    first_seen: at,
                    last_seen: at,
                    count: e.count,
                    through_sequence: e.through_sequence,
                    collected_at_event,
                    closed: None,
                });
        }
        Event::RegressionCaseRecurred(e) => {
            if let Some(c) = state.regression_cases.get_mut(&e.case_id) {
                c.count += e.additional;
                c.last_seen = at;
                c.through_sequence = c.through_sequence.max(e.through_sequence);
            }
        }
        Event::RegressionCaseClosed(e) => {
            if let Some(c) = state.regression_cases.get_mut(&e.case_id) {
                c.closed = Some(e.reason.clone());
            }
        }
        Event::ReleaseWindowsSet(e) => {
            if e.prompt == state.name {
                state.windows = e.windows.clone();
            }
        }
        Event::NoticeRaised(e) => with_release(state, &e.release, |r| {
            r.notices.insert(e.key.clone());
        }),
        // Fleet-wide: not part of any prompt's family.
        Event::DigestRecorded(_)
        | Event::FleetWindowsSet(_)
        | Event::NotificationsSet(_)
        | Event::IdentityEnrolled(_)
        | Event::IdentityKeyRotated(_)
        | Event::IdentityRolesSet(_)
        | Event::IdentityRevoked(_) => {}
        Event::ProposalWithdrawn(e) => {
            with_release(state, &e.release, |r| {
                r.status = ReleaseStatus::Withdrawn {
                    reason: e.reason.clone(),
                };
            });
            record_end(state, &e.release, Ended::Withdrawn, None);
        }
    }
    // What a live state keeps changes only when versions are published or change use, or
    // releases are proposed or end.
    if matches!(
        envelope.event,
        Event::VersionPublished(_)
            | Event::VersionAdopted(_)
            | Event::ChangeProposed(_)
            | Event::CandidateRevised(_)
            | Event::RolledBack(_)
            | Event::ReleaseCompleted(_)
            | Event::ProposalWithdrawn(_)
    ) {
        state.compact();
    }
}

/// Keeps in [`PromptState::ended`] that a release ended (whether or not the state still
/// keeps its full record).
fn record_end(state: &mut PromptState, id: &ReleaseId, how: Ended, at: Option<Timestamp>) {
    if id.prompt() != &state.name {
        return;
    }
    let number = id.number();
    let position = |v: &VersionId| state.version_order.position(v);
    let (author, proposed_at, candidate, baseline) = match state.releases.get(&number) {
        Some(r) => (
            r.author.clone(),
            r.proposed_at,
            position(&r.candidate),
            r.baseline.as_ref().and_then(position),
        ),
        None => match state.ended.get(number) {
            Some(e) => (
                state.ended.author(e).clone(),
                e.proposed_at,
                e.candidate,
                e.baseline,
            ),
            None => return,
        },
    };
    let of = Ending {
        author: &author,
        proposed_at,
        candidate,
        baseline,
    };
    state.ended.record(number, how, at, of);
}

fn set_paused(r: &mut ReleaseState, paused: bool) {
    if let ReleaseStatus::RollingOut {
        stage,
        stage_entered_at,
        ..
    } = r.status
    {
        r.status = ReleaseStatus::RollingOut {
            stage,
            stage_entered_at,
            paused,
        };
    }
}

fn with_release(state: &mut PromptState, id: &ReleaseId, f: impl FnOnce(&mut ReleaseState)) {
    if id.prompt() == &state.name {
        if let Some(r) = state.releases.get_mut(&id.number()) {
            f(r);
        }
    }
}
