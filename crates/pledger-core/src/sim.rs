//! Seeded traffic simulation, pure: the randomness comes from [`SimRng`], a xoshiro256**
//! generator seeded through splitmix64, never from the OS. The same seed gives the same
//! requests and outcomes on every machine.
//!
//! Two uses:
//! - [`Simulator`] draws requests (a sticky unit key and its segment's attributes) and, for the
//!   arm the router chose, an outcome, from a [`SimSpec`] a CLI can read from TOML.
//! - [`aa_false_freeze_rate`] and [`samples_to_detect`] measure the quality of the canary's
//!   judgement ([`crate::canary::judge`]) against the Flagger-style fixed-threshold baseline
//!   ([`crate::canary::fixed_threshold_check`]) on the very same simulated traffic.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canary::{fixed_threshold_check, judge, ArmStats, JudgeConfig, Observation, Verdict};
use crate::error::FieldError;
use crate::ids::{PromptName, ReleaseId, VersionId};
use crate::outcome::Outcome;
use crate::plan::Guardrails;
use crate::routing::Arm;

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One step of splitmix64 (Steele, Lea, Flood 2014): advances `state` and returns the next
/// output. Used to seed [`SimRng`] and to hash unit indices.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN_GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman, Vigna 2018), seeded from a `u64` through splitmix64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        let mut state = seed;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        // splitmix64 outputs four zeros for no seed, but keep xoshiro's rule explicit.
        if s == [0; 4] {
            return SimRng { s: [1, 2, 3, 4] };
        }
        SimRng { s }
    }

    /// An independent generator for sub-stream `stream` of `seed` (e.g. one per simulated
    /// canary), so that runs do not depend on each other's draws.
    pub fn stream(seed: u64, stream: u64) -> SimRng {
        let mut state = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        SimRng::new(splitmix64(&mut state))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`0` when `n == 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// `true` with probability `p` (clamped to `[0, 1]`).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// A standard normal draw (Box–Muller, one of the pair).
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A lognormal draw with the given median and standard deviation of its logarithm.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.standard_normal()).exp()
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation spec
// ---------------------------------------------------------------------------------------------

/// A rate an arm has and a regression can change; serialised as the guardrail's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RateMetric {
    #[serde(rename = "fallback_rate")]
    Fallback,
    #[serde(rename = "escalation_rate")]
    Escalation,
    #[serde(rename = "manual_correction_rate")]
    ManualCorrection,
    #[serde(rename = "refusal_rate")]
    Refusal,
}

impl RateMetric {
    pub const ALL: [RateMetric; 4] = [
        RateMetric::Fallback,
        RateMetric::Escalation,
        RateMetric::ManualCorrection,
        RateMetric::Refusal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RateMetric::Fallback => "fallback_rate",
            RateMetric::Escalation => "escalation_rate",
            RateMetric::ManualCorrection => "manual_correction_rate",
            RateMetric::Refusal => "refusal_rate",
        }
    }

    pub fn of(self, profile: &ArmProfile) -> f64 {
        match self {
            RateMetric::Fallback => profile.fallback_rate,
            RateMetric::Escalation => profile.escalation_rate,
            RateMetric::ManualCorrection => profile.manual_correction_rate,
            RateMetric::Refusal => profile.refusal_rate,
        }
    }

    pub fn set(self, profile: &mut ArmProfile, rate: f64) {
        match self {
            RateMetric::Fallback => profile.fallback_rate = rate,
            RateMetric::Escalation => profile.escalation_rate = rate,
            RateMetric::ManualCorrection => profile.manual_correction_rate = rate,
            RateMetric::Refusal => profile.refusal_rate = rate,
        }
    }
}

/// How one arm behaves. Every field has its default in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ArmProfile {
    /// [0.01]
    pub fallback_rate: f64,
    /// [0.02]
    pub escalation_rate: f64,
    /// [0.01]
    pub manual_correction_rate: f64,
    /// [0.005]
    pub refusal_rate: f64,
    /// Median latency, lognormal [800 ms].
    pub latency_median_ms: f64,
    /// Standard deviation of ln(latency) [0.5]: p95 ≈ median · 2.27.
    pub latency_sigma: f64,
    /// Mean prompt tokens, lognormal [400].
    pub tokens_in_mean: f64,
    /// Mean completion tokens, lognormal [150].
    pub tokens_out_mean: f64,
    /// Standard deviation of ln(tokens) [0.3].
    pub tokens_sigma: f64,
}

impl Default for ArmProfile {
    fn default() -> Self {
        ArmProfile {
            fallback_rate: 0.01,
            escalation_rate: 0.02,
            manual_correction_rate: 0.01,
            refusal_rate: 0.005,
            latency_median_ms: 800.0,
            latency_sigma: 0.5,
            tokens_in_mean: 400.0,
            tokens_out_mean: 150.0,
            tokens_sigma: 0.3,
        }
    }
}

impl ArmProfile {
    /// A profile with every rate 0 except `metric` at `rate` (latency and tokens at their
    /// defaults).
    pub fn only(metric: RateMetric, rate: f64) -> ArmProfile {
        let mut p = ArmProfile {
            fallback_rate: 0.0,
            escalation_rate: 0.0,
            manual_correction_rate: 0.0,
            refusal_rate: 0.0,
            ..ArmProfile::default()
        };
        metric.set(&mut p, rate);
        p
    }

    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        for m in RateMetric::ALL {
            let v = m.of(self);
            if !(0.0..=1.0).contains(&v) {
                return Err(FieldError::new(
                    format!("{field}.{}", m.name()),
                    format!("{v} is not a rate between 0 and 1"),
                ));
            }
        }
        for (name, v, positive) in [
            ("latency_median_ms", self.latency_median_ms, true),
            ("latency_sigma", self.latency_sigma, false),
            ("tokens_in_mean", self.tokens_in_mean, false),
            ("tokens_out_mean", self.tokens_out_mean, false),
            ("tokens_sigma", self.tokens_sigma, false),
        ] {
            if !(v.is_finite() && (v > 0.0 || (!positive && v == 0.0))) {
                let rule = if positive { "> 0" } else { ">= 0" };
                return Err(FieldError::new(
                    format!("{field}.{name}"),
                    format!("{v} must be a finite number {rule}"),
                ));
            }
        }
        Ok(())
    }

    /// Draws one outcome of this arm.
    pub fn draw(&self, rng: &mut SimRng) -> Observation {
        self.draw_parts(rng, Parts::ALL)
    }

    /// Draws the parts asked for (the others are left at 0/false). Draw order is fixed, so a
    /// given seed and `parts` always give the same outcomes.
    fn draw_parts(&self, rng: &mut SimRng, parts: Parts) -> Observation {
        let mut o = Observation::default();
        if parts.fallback {
            o.fallback = rng.bernoulli(self.fallback_rate);
        }
        if parts.escalation {
            o.escalated = rng.bernoulli(self.escalation_rate);
        }
        if parts.manual_correction {
            o.manually_corrected = rng.bernoulli(self.manual_correction_rate);
        }
        if parts.refusal {
            o.refusal = rng.bernoulli(self.refusal_rate);
        }
        if parts.latency {
            o.latency_ms = rng.lognormal(self.latency_median_ms, self.latency_sigma);
        }
        if parts.tokens {
            // A lognormal with mean `m` has median `m·exp(−σ²/2)`.
            let shift = (-0.5 * self.tokens_sigma * self.tokens_sigma).exp();
            o.tokens_in = rng
                .lognormal(self.tokens_in_mean * shift, self.tokens_sigma)
                .round() as u64;
            o.tokens_out = rng
                .lognormal(self.tokens_out_mean * shift, self.tokens_sigma)
                .round() as u64;
        }
        o
    }
}

/// Which outcome fields to draw.
#[derive(Clone, Copy, Debug)]
struct Parts {
    fallback: bool,
    escalation: bool,
    manual_correction: bool,
    refusal: bool,
    latency: bool,
    tokens: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        fallback: true,
        escalation: true,
        manual_correction: true,
        refusal: true,
        latency: true,
        tokens: true,
    };

    /// Only what the guardrails look at (the simulation of thousands of canaries draws
    /// nothing it does not judge).
    fn for_guardrails(g: &Guardrails) -> Parts {
        Parts {
            fallback: g.fallback_rate.is_some(),
            escalation: g.escalation_rate.is_some(),
            manual_correction: g.manual_correction_rate.is_some(),
            refusal: false,
            latency: g.latency_p95_ms.is_some(),
            tokens: g.tokens_per_request.is_some(),
        }
    }
}

/// A share of the traffic with its request attributes. A unit key belongs to one segment for
/// the whole simulation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// Relative weight (> 0); weights need not sum to 1.
    pub weight: f64,
}

/// A regression of the candidate that starts mid-way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectedRegression {
    /// Candidate requests served before the regression starts [0: from the first].
    #[serde(default)]
    pub after_samples: u64,
    pub metric: RateMetric,
    /// The candidate's rate of `metric` from then on.
    pub candidate_rate: f64,
}

/// A simulated service's traffic, e.g. from TOML:
///
/// ```toml
/// seed = 7
/// requests_per_second = 40
/// units = 5000
/// [baseline]
/// escalation_rate = 0.02
/// [candidate]            # optional: the same as baseline when absent
/// escalation_rate = 0.02
/// latency_median_ms = 900
/// [[segments]]
/// attrs = { tier = "internal" }
/// weight = 1
/// [[segments]]
/// attrs = { tier = "public", geo = "eu" }
/// weight = 9
/// [regression]
/// after_samples = 2000
/// metric = "escalation_rate"
/// candidate_rate = 0.04
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimSpec {
    pub seed: u64,
    /// Total requests per second (both arms); sets the requests' offsets in time [20].
    #[serde(default = "default_rps")]
    pub requests_per_second: f64,
    /// Distinct unit keys, `user-0` to `user-<units-1>` [10000].
    #[serde(default = "default_units")]
    pub units: u64,
    #[serde(default)]
    pub baseline: ArmProfile,
    /// The candidate; absent means identical to the baseline (an A/A simulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<ArmProfile>,
    /// Traffic segments; none means one segment without attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<InjectedRegression>,
}

fn default_rps() -> f64 {
    20.0
}

fn default_units() -> u64 {
    10_000
}

impl SimSpec {
    /// A spec with default profiles, one segment and no regression.
    pub fn new(seed: u64) -> SimSpec {
        SimSpec {
            seed,
            requests_per_second: default_rps(),
            units: default_units(),
            baseline: ArmProfile::default(),
            candidate: None,
            segments: Vec::new(),
            regression: None,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(FieldError::new(
                "requests_per_second",
                format!("{} must be a finite number > 0", self.requests_per_second),
            ));
        }
        if self.units == 0 {
            return Err(FieldError::new("units", "must be at least 1"));
        }
        self.baseline.validate("baseline")?;
        if let Some(c) = &self.candidate {
            c.validate("candidate")?;
        }
        for (i, s) in self.segments.iter().enumerate() {
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(FieldError::new(
                    format!("segments[{i}].weight"),
                    format!("{} must be a finite number > 0", s.weight),
                ));
            }
        }
        if let Some(r) = &self.regression {
            if !(0.0..=1.0).contains(&r.candidate_rate) {
                return Err(FieldError::new(
                    "regression.candidate_rate",
                    format!("{} is not a rate between 0 and 1", r.candidate_rate),
                ));
            }
        }
        Ok(())
    }
}

/// One simulated request, before routing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SimRequest {
    /// 0, 1, 2, ... in order of arrival.
    pub index: u64,
    /// Milliseconds since the start of the simulation (`index / requests_per_second`).
    pub at_ms: u64,
    /// The sticky unit key, `user-<n>`.
    pub unit: String,
    /// The unit's segment's attributes.
    pub attrs: BTreeMap<String, String>,
}

impl SimRequest {
    /// The outcome event a service would publish for this request.
    pub fn outcome(
        &self,
        observation: &Observation,
        prompt: PromptName,
        version: VersionId,
        release: Option<ReleaseId>,
        arm: Option<Arm>,
    ) -> Outcome {
        Outcome {
            prompt,
            version,
            release,
            arm,
            stage_visit: None,
            unit: Some(self.unit.clone()),
            attrs: self.attrs.clone(),
            request_id: format!("req-{}", self.index),
            fallback: observation.fallback,
            escalated: observation.escalated,
            manually_corrected: observation.manually_corrected,
            refusal: observation.refusal,
            latency_ms: observation.latency_ms,
            tokens_in: observation.tokens_in,
            tokens_out: observation.tokens_out,
            cost_usd: None,
            feedback: None,
        }
    }
}

/// Draws requests and outcomes from a [`SimSpec`].
#[derive(Clone, Debug)]
pub struct Simulator {
    spec: SimSpec,
    rng: SimRng,
    requests: u64,
    baseline_served: u64,
    candidate_served: u64,
    /// Cumulative segment weights, normalised to end at 1.
    cumulative: Vec<f64>,
}

impl Simulator {
    pub fn new(spec: SimSpec) -> Result<Simulator, FieldError> {
        spec.validate()?;
        let total: f64 = spec.segments.iter().map(|s| s.weight).sum();
        let mut acc = 0.0;
        let cumulative = spec
            .segments
            .iter()
            .map(|s| {
                acc += s.weight / total;
                acc
            })
            .collect();
        Ok(Simulator {
            rng: SimRng::new(spec.seed),
            spec,
            requests: 0,
            baseline_served: 0,
            candidate_served: 0,
            cumulative,
        })
    }

    pub fn spec(&self) -> &SimSpec {
        &self.spec
    }

    /// The next request: a unit drawn uniformly from the pool, with its segment's attributes.
    pub fn next_request(&mut self) -> SimRequest {
        let index = self.requests;
        self.requests += 1;
        let n = self.rng.below(self.spec.units);
        let attrs = self
            .segment_of(n)
            .map(|s| s.attrs.clone())
            .unwrap_or_default();
        SimRequest {
            index,
            at_ms: (index as f64 * 1000.0 / self.spec.requests_per_second) as u64,
            unit: format!("user-{n}"),
            attrs,
        }
    }

    /// The segment of unit `n`: a hash of the seed and `n`, so a unit never changes segment.
    pub fn segment_of(&self, n: u64) -> Option<&Segment> {
        if self.spec.segments.is_empty() {
            return None;
        }
        let mut state = self.spec.seed ^ n.wrapping_mul(GOLDEN_GAMMA);
        let u = (splitmix64(&mut state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let i = self
            .cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.spec.segments.len() - 1);
        self.spec.segments.get(i)
    }

    /// The profile `arm` serves with right now (the candidate's includes the injected
    /// regression once it has started).
    pub fn profile(&self, arm: Arm) -> ArmProfile {
        match arm {
            Arm::Baseline => self.spec.baseline.clone(),
            Arm::Candidate => {
                let mut p = self
                    .spec
                    .candidate
                    .clone()
                    .unwrap_or_else(|| self.spec.baseline.clone());
                if let Some(r) = &self.spec.regression {
                    if self.candidate_served >= r.after_samples {
                        r.metric.set(&mut p, r.candidate_rate);
                    }
                }
                p
            }
        }
    }

    /// Draws the outcome of a request the router sent to `arm`.
    pub fn outcome(&mut self, arm: Arm) -> Observation {
        let profile = self.profile(arm);
        match arm {
            Arm::Baseline => self.baseline_served += 1,
            Arm::Candidate => self.candidate_served += 1,
        }
        profile.draw(&mut self.rng)
    }

    /// Requests drawn so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Outcomes drawn so far for `arm`.
    pub fn served(&self, arm: Arm) -> u64 {
        match arm {
            Arm::Baseline => self.baseline_served,
            Arm::Candidate => self.candidate_served,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Judgement quality
// ---------------------------------------------------------------------------------------------

/// Samples per arm in one 60-second interval of the fixed-threshold baseline, at
/// `requests_per_second` per arm (at least 1).
pub fn interval_samples_per_arm(requests_per_second: f64) -> u64 {
    ((requests_per_second * 60.0).round() as u64).max(1)
}

/// A/A canaries: both arms draw from the same profile. Every field has its default in
/// brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AaSetup {
    /// [1000]
    pub canaries: usize,
    /// Samples each arm gets over a canary's life [5000].
    pub samples_per_arm: u64,
    /// The sequential judgement looks after every this many samples per arm [50].
    pub check_every: u64,
    /// Requests per second PER ARM; the fixed-threshold baseline checks one 60-second
    /// interval (`60 × this` samples per arm) at a time [2: a 5% stage of 40 req/s].
    pub requests_per_second: f64,
    pub profile: ArmProfile,
    /// [1]
    pub seed: u64,
}

impl Default for AaSetup {
    fn default() -> Self {
        AaSetup {
            canaries: 1000,
            samples_per_arm: 5000,
            check_every: 50,
            requests_per_second: 2.0,
            profile: ArmProfile::default(),
            seed: 1,
        }
    }
}

/// How many canaries froze.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FreezeReport {
    pub canaries: usize,
    pub frozen: usize,
    /// `frozen / canaries`.
    pub rate: f64,
    /// Looks (judgements or interval checks) per canary.
    pub checks_per_canary: u64,
}

/// The sequential judgement and the fixed-threshold baseline on the same A/A traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AaReport {
    pub sequential: FreezeReport,
    pub fixed_threshold: FreezeReport,
    /// Samples per arm in one interval of the baseline.
    pub interval_samples_per_arm: u64,
}

/// Simulates `setup.canaries` A/A canaries (identical arms), judged continuously every
/// `check_every` samples per arm with [`judge`] and, on the same draws, every 60-second
/// interval with [`fixed_threshold_check`]. A canary false-freezes under a method when any of
/// its looks is a breach. Deterministic in `setup.seed`.
pub fn aa_false_freeze_rate(
    setup: &AaSetup,
    guardrails: &Guardrails,
    config: &JudgeConfig,
) -> AaReport {
    let parts = Parts::for_guardrails(guardrails);
    let check_every = setup.check_every.max(1);
    let interval = interval_samples_per_arm(setup.requests_per_second);
    let (mut seq_frozen, mut fixed_frozen) = (0, 0);
    for canary in 0..setup.canaries {
        let mut rng = SimRng::stream(setup.seed, canary as u64);
        let (mut cand, mut ctrl) = (ArmStats::new(), ArmStats::new());
        let (mut win_cand, mut win_ctrl) = (ArmStats::new(), ArmStats::new());
        let (mut seq, mut fixed) = (false, false);
        for i in 1..=setup.samples_per_arm {
            let oc = setup.profile.draw_parts(&mut rng, parts);
            let ok = setup.profile.draw_parts(&mut rng, parts);
            observe(&mut cand, &oc, parts);
            observe(&mut ctrl, &ok, parts);
            if !fixed {
                observe(&mut win_cand, &oc, parts);
                observe(&mut win_ctrl, &ok, parts);
            }
            let last = i == setup.samples_per_arm;
            if !seq
                && (i % check_every == 0 || last)
                && judge(guardrails, &cand, &ctrl, config).verdict == Verdict::Breached
            {
                seq = true;
            }
            if !fixed && (i % interval == 0 || last) {
                fixed = fixed_threshold_check(guardrails, &win_cand, &win_ctrl);
                win_cand = ArmStats::new();
                win_ctrl = ArmStats::new();
            }
            if seq && fixed {
                break;
            }
        }
        seq_frozen += usize::from(seq);
        fixed_frozen += usize::from(fixed);
    }
    let report = |frozen: usize, per: u64| FreezeReport {
        canaries: setup.canaries,
        frozen,
        rate: if setup.canaries == 0 {
            0.0
        } else {
            frozen as f64 / setup.canaries as f64
        },
        checks_per_canary: setup.samples_per_arm.div_ceil(per),
    };
    AaReport {
        sequential: report(seq_frozen, check_every),
        fixed_threshold: report(fixed_frozen, interval),
        interval_samples_per_arm: interval,
    }
}

/// Canaries whose candidate regressed on one rate from the first request. Every field has its
/// default in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionSetup {
    /// [201]
    pub runs: usize,
    /// [escalation_rate]
    pub metric: RateMetric,
    /// The control's rate [0.02].
    pub base_rate: f64,
    /// The candidate's rate [0.04].
    pub bad_rate: f64,
    /// [50]
    pub check_every: u64,
    /// A run that has not detected by then counts as a miss [20000].
    pub max_samples_per_arm: u64,
    /// Requests per second PER ARM, for the baseline's 60-second intervals [2].
    pub requests_per_second: f64,
    /// [1]
    pub seed: u64,
}

impl Default for DetectionSetup {
    fn default() -> Self {
        DetectionSetup {
            runs: 201,
            metric: RateMetric::Escalation,
            base_rate: 0.02,
            bad_rate: 0.04,
            check_every: 50,
            max_samples_per_arm: 20_000,
            requests_per_second: 2.0,
            seed: 1,
        }
    }
}

/// Samples per arm at the first breach of each run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DetectionReport {
    pub runs: usize,
    /// Samples per arm at detection, one per detected run, ascending.
    pub detected: Vec<u64>,
    /// Runs not detected within `cap` samples per arm.
    pub missed: usize,
    pub cap: u64,
    /// Median over ALL runs, a miss counting as later than any detection; `None` when at
    /// least half the runs missed.
    pub median: Option<f64>,
}

impl DetectionReport {
    fn new(runs: usize, mut detected: Vec<u64>, cap: u64) -> DetectionReport {
        detected.sort_unstable();
        let missed = runs - detected.len();
        let mut all = detected.clone();
        all.resize(runs, u64::MAX);
        let median = median(&all).filter(|m| *m < u64::MAX as f64 / 2.0);
        DetectionReport {
            runs,
            detected,
            missed,
            cap,
            median,
        }
    }
}

/// The sequential judgement and the fixed-threshold baseline on the same regressed traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DetectionComparison {
    pub sequential: DetectionReport,
    pub fixed_threshold: DetectionReport,
    pub interval_samples_per_arm: u64,
}

/// Simulates `setup.runs` canaries whose candidate has `bad_rate` of `metric` against the
/// control's `base_rate` (other rates 0), and measures the samples per arm at the first
/// `Breached` judgement (looking every `check_every`) and at the first failed 60-second
/// interval of the baseline. Deterministic in `setup.seed`.
pub fn samples_to_detect(
    setup: &DetectionSetup,
    guardrails: &Guardrails,
    config: &JudgeConfig,
) -> DetectionComparison {
    let parts = Parts::for_guardrails(guardrails);
    let check_every = setup.check_every.max(1);
    let interval = interval_samples_per_arm(setup.requests_per_second);
    let bad = ArmProfile::only(setup.metric, setup.bad_rate);
    let base = ArmProfile::only(setup.metric, setup.base_rate);
    let (mut seq_found, mut fixed_found) = (Vec::new(), Vec::new());
    for run in 0..setup.runs {
        let mut rng = SimRng::stream(setup.seed, run as u64);
        let (mut cand, mut ctrl) = (ArmStats::new(), ArmStats::new());
        let (mut win_cand, mut win_ctrl) = (ArmStats::new(), ArmStats::new());
        let (mut seq, mut fixed) = (None, None);
        for i in 1..=setup.max_samples_per_arm {
            let oc = bad.draw_parts(&mut rng, parts);
            let ok = base.draw_parts(&mut rng, parts);
            observe(&mut cand, &oc, parts);
            observe(&mut ctrl, &ok, parts);
            if fixed.is_none() {
                observe(&mut win_cand, &oc, parts);
                observe(&mut win_ctrl, &ok, parts);
            }
            let last = i == setup.max_samples_per_arm;
            if seq.is_none()
                && (i % check_every == 0 || last)
                && judge(guardrails, &cand, &ctrl, config).verdict == Verdict::Breached
            {
                seq = Some(i);
            }
            if fixed.is_none() && (i % interval == 0 || last) {
                if fixed_threshold_check(guardrails, &win_cand, &win_ctrl) {
                    fixed = Some(i);
                }
                win_cand = ArmStats::new();
                win_ctrl = ArmStats::new();
            }
            if seq.is_some() && fixed.is_some() {
                break;
            }
        }
        seq_found.extend(seq);
        fixed_found.extend(fixed);
    }
    DetectionComparison {
        sequential: DetectionReport::new(setup.runs, seq_found, setup.max_samples_per_arm),
        fixed_threshold: DetectionReport::new(setup.runs, fixed_found, setup.max_samples_per_arm),
        interval_samples_per_arm: interval,
    }
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[u64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    })
}

/// [`ArmStats::observe`] restricted to the drawn parts (no histogram work without latency).
fn observe(stats: &mut ArmStats, o: &Observation, parts: Parts) {
    if parts.latency && parts.tokens {
        stats.observe(o);
        return;
    }
    stats.samples += 1;
    stats.fallback += u64::from(o.fallback);
    stats.escalated += u64::from(o.escalated);
    stats.manually_corrected += u64::from(o.manually_corrected);
    stats.refusal += u64::from(o.refusal);
    if parts.tokens {
        let t = o.tokens_in + o.tokens_out;
        stats.tokens_sum += t;
        stats.tokens_sq_sum += (t as f64) * (t as f64);
    }
    if parts.latency {
        stats.latency.record(o.latency_ms);
    }
}
