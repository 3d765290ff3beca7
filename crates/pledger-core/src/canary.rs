//! The canary's judgement: is the candidate worse than the plan's guardrails allow, compared
//! with the concurrent control (the baseline arm)?
//!
//! Pure and stateless: [`judge`] is a function of the declared [`Guardrails`], the two arms'
//! aggregated [`ArmStats`] and a [`JudgeConfig`]. The monitor calls it after every batch of
//! outcomes, thousands of times per canary, so every test is *sequential*: it stays valid
//! however often it is looked at.
//!
//! # Method
//!
//! Every declared bound (`max_rate`, `max_increase`, `max_value` of every guardrail) is a
//! one-sided null hypothesis "the candidate is within this bound", reduced to
//! `H0: θ <= 0` for a difference `θ` estimated by `x` with variance `V` (normal approximation):
//!
//! | bound | `x` | `V` |
//! | --- | --- | --- |
//! | rate `max_rate = r` | `p̂_cand − r` | `p̃_c(1−p̃_c)/n_c` |
//! | rate `max_increase = d` (absolute points) | `p̂_cand − p̂_ctrl − d` | `p̃_c(1−p̃_c)/n_c + p̃_k(1−p̃_k)/n_k` |
//! | latency p95 `max_increase = m` | `q̂ − 0.05`, `q̂` = candidate share above `(1+m)·p95_ctrl` | `q̃(1−q̃)/n_c + 0.05·0.95/n_k` |
//! | latency p95 `max_value = M` | `q̂ − 0.05`, `q̂` = candidate share above `M` | `q̃(1−q̃)/n_c` |
//! | tokens `max_increase = m` (relative) | `mean_c − (1+m)·mean_k` | `s²_c/n_c + (1+m)²·s²_k/n_k` |
//! | tokens `max_value = M` | `mean_c − M` | `s²_c/n_c` |
//!
//! `p̃ = (k+1)/(n+2)` are pseudo-counted rates, used only in variances, so a rate of 0 (or 1)
//! never gives a zero variance. The latency p95 bound becomes a proportion test: "the
//! candidate's p95 is at most `T`" is the same statement as "at most 5% of candidate requests
//! take longer than `T`". For a relative bound `T = (1+m)·p95_ctrl` is itself estimated; the
//! `0.05·0.95/n_k` term is the delta-method variance that estimate adds (exact at the boundary
//! of the null, where the candidate's latency is the control's scaled by `1+m`). Token
//! variances have a floor of `0.25` tokens² (a quarter of the integer granularity).
//!
//! Each reduction is tested with a one-sided mixture sequential probability ratio test
//! (mSPRT; Johari, Pekelis, Walsh, "Always valid inference", 2017; Robbins 1970): the
//! likelihood ratio of "`θ = δ`" against "`θ = 0`", mixed over a half-normal prior
//! `δ ~ N(0, τ²)` restricted to `δ >= 0`:
//!
//! ```text
//! Λ = 2 · sqrt(V / (V + τ²)) · exp(x²τ² / (2V(V + τ²))) · Φ(xτ / sqrt(V(V + τ²)))
//! ```
//!
//! For every `θ <= 0` each mixed component is a non-negative supermartingale, so by Ville's
//! inequality `P(Λ ever reaches 1/α) <= α` over the *whole* null, at any number of looks.
//! The judgement reports `ln Λ` as [`GuardrailJudgement::statistic`] and breaches a bound
//! when it reaches [`GuardrailJudgement::threshold`] `= ln(K/α)`, `K` being the number of
//! declared bounds (Bonferroni): a canary whose candidate is within all its bounds is frozen
//! at most with probability `α` over its whole life, not per look and not per guardrail.
//!
//! `τ` is given in standard deviations of one observation pair (see
//! [`JudgeConfig::mixture_tau`]), so one value fits rates, latency shares and token means.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::outcome::Outcome;
use crate::plan::{GuardrailLimit, Guardrails, QuantityLimit};

// ---------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------

/// Lower edge of the first logarithmic bucket (ms). Bucket 0 holds `[0, 0.1)`.
pub const HISTOGRAM_MIN_MS: f64 = 0.1;
/// Upper edge of the last logarithmic bucket is at least this (ms): ten minutes.
pub const HISTOGRAM_MAX_MS: f64 = 600_000.0;
/// Each bucket's upper edge is its lower edge times this: 2% relative resolution.
pub const HISTOGRAM_GROWTH: f64 = 1.02;
/// Number of logarithmic buckets, `1..=HISTOGRAM_LOG_BUCKETS`; the bucket after them holds
/// everything from about ten minutes up.
pub const HISTOGRAM_LOG_BUCKETS: u32 = 789;

const OVERFLOW_BUCKET: u32 = HISTOGRAM_LOG_BUCKETS + 1;

/// A latency distribution in fixed logarithmic buckets, stored sparsely.
///
/// Bucket `0` is `[0, 0.1)` ms; bucket `i` in `1..=789` is `[0.1·1.02^(i−1), 0.1·1.02^i)` ms;
/// bucket `790` is everything from `0.1·1.02^789` (≈ 606 s) up. The layout is part of the
/// format: histograms from any process merge by adding counts. Within a bucket, values are
/// taken as spread log-uniformly (linearly in bucket 0), which makes [`Self::quantile`] and
/// [`Self::fraction_above`] exact inverses of each other and accurate to the bucket width (2%).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyHistogram {
    /// Bucket index to the number of samples in it; empty buckets are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<u32, u64>,
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        LatencyHistogram::default()
    }

    /// The bucket a latency falls in. Negative or NaN latencies go to bucket 0.
    pub fn bucket_of(ms: f64) -> u32 {
        if ms.is_nan() || ms < HISTOGRAM_MIN_MS {
            return 0;
        }
        let i = ((ms / HISTOGRAM_MIN_MS).ln() / HISTOGRAM_GROWTH.ln()).floor();
        if i >= f64::from(HISTOGRAM_LOG_BUCKETS) {
            OVERFLOW_BUCKET
        } else {
            i as u32 + 1
        }
    }

    /// `[lower, upper)` edges of a bucket in ms; the overflow bucket's upper edge is infinite.
    pub fn bucket_bounds(bucket: u32) -> (f64, f64) {
        match bucket {
            0 => (0.0, HISTOGRAM_MIN_MS),
            b if b <= HISTOGRAM_LOG_BUCKETS => (
                HISTOGRAM_MIN_MS * HISTOGRAM_GROWTH.powi(b as i32 - 1),
                HISTOGRAM_MIN_MS * HISTOGRAM_GROWTH.powi(b as i32),
            ),
            _ => (
                HISTOGRAM_MIN_MS * HISTOGRAM_GROWTH.powi(HISTOGRAM_LOG_BUCKETS as i32),
                f64::INFINITY,
            ),
        }
    }

    pub fn record(&mut self, ms: f64) {
        self.record_n(ms, 1);
    }

    /// Records `n` samples of the same latency.
    pub fn record_n(&mut self, ms: f64, n: u64) {
        if n > 0 {
            *self.buckets.entry(Self::bucket_of(ms)).or_insert(0) += n;
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_insert(0) += n;
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `q`-quantile (`q` clamped to `[0, 1]`): the latency below which a share `q` of the
    /// samples lies. `None` when empty. Within 2% of the exact nearest-rank quantile.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let target = q * n as f64;
        let mut before = 0.0;
        let mut last = None;
        for (&b, &count) in &self.buckets {
            let count = count as f64;
            last = Some(b);
            if count > 0.0 && before + count >= target {
                let f = ((target - before) / count).clamp(0.0, 1.0);
                return Some(Self::value_at(b, f));
            }
            before += count;
        }
        last.map(|b| Self::value_at(b, 1.0))
    }

    /// Share of the samples above `ms`, 0 to 1 (0 when empty).
    pub fn fraction_above(&self, ms: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let mut above = 0.0;
        for (&b, &count) in &self.buckets {
            above += count as f64 * Self::share_above(b, ms);
        }
        (above / n as f64).clamp(0.0, 1.0)
    }

    /// The value a share `f` of the way through bucket `b`.
    fn value_at(b: u32, f: f64) -> f64 {
        let (lower, upper) = Self::bucket_bounds(b);
        match b {
            0 => lower + f * (upper - lower),
            b if b <= HISTOGRAM_LOG_BUCKETS => lower * HISTOGRAM_GROWTH.powf(f),
            _ => lower,
        }
    }

    /// Share of bucket `b`'s samples above `ms`.
    fn share_above(b: u32, ms: f64) -> f64 {
        let (lower, upper) = Self::bucket_bounds(b);
        if ms.is_nan() || ms < lower {
            return 1.0;
        }
        if ms >= upper || b == OVERFLOW_BUCKET {
            return 0.0;
        }
        if b == 0 {
            (upper - ms) / (upper - lower)
        } else {
            ((upper / ms).ln() / HISTOGRAM_GROWTH.ln()).clamp(0.0, 1.0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arm statistics
// ---------------------------------------------------------------------------------------------

/// The fields of one outcome the judgement uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Observation {
    pub fallback: bool,
    pub escalated: bool,
    pub manually_corrected: bool,
    pub refusal: bool,
    pub latency_ms: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

impl From<&Outcome> for Observation {
    fn from(o: &Outcome) -> Observation {
        Observation {
            fallback: o.fallback,
            escalated: o.escalated,
            manually_corrected: o.manually_corrected,
            refusal: o.refusal,
            latency_ms: o.latency_ms,
            tokens_in: o.tokens_in,
            tokens_out: o.tokens_out,
        }
    }
}

/// Aggregated outcomes of one arm (candidate or control). Merges by adding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArmStats {
    pub samples: u64,
    pub fallback: u64,
    pub escalated: u64,
    pub manually_corrected: u64,
    pub refusal: u64,
    /// Sum of `tokens_in + tokens_out`.
    pub tokens_sum: u64,
    /// Sum of `(tokens_in + tokens_out)²`.
    pub tokens_sq_sum: f64,
    pub latency: LatencyHistogram,
}

impl ArmStats {
    pub fn new() -> ArmStats {
        ArmStats::default()
    }

    pub fn record(&mut self, outcome: &Outcome) {
        self.observe(&Observation::from(outcome));
    }

    pub fn observe(&mut self, o: &Observation) {
        self.samples += 1;
        self.fallback += u64::from(o.fallback);
        self.escalated += u64::from(o.escalated);
        self.manually_corrected += u64::from(o.manually_corrected);
        self.refusal += u64::from(o.refusal);
        let tokens = o.tokens_in.saturating_add(o.tokens_out);
        self.tokens_sum = self.tokens_sum.saturating_add(tokens);
        self.tokens_sq_sum += (tokens as f64) * (tokens as f64);
        self.latency.record(o.latency_ms);
    }

    pub fn merge(&mut self, other: &ArmStats) {
        self.samples += other.samples;
        self.fallback += other.fallback;
        self.escalated += other.escalated;
        self.manually_corrected += other.manually_corrected;
        self.refusal += other.refusal;
        self.tokens_sum = self.tokens_sum.saturating_add(other.tokens_sum);
        self.tokens_sq_sum += other.tokens_sq_sum;
        self.latency.merge(&other.latency);
    }

    /// Events of a rate guardrail by its name (`fallback_rate`, `escalation_rate`,
    /// `manual_correction_rate`, `refusal_rate`).
    pub fn events(&self, rate: &str) -> Option<u64> {
        match rate {
            "fallback_rate" => Some(self.fallback),
            "escalation_rate" => Some(self.escalated),
            "manual_correction_rate" => Some(self.manually_corrected),
            "refusal_rate" => Some(self.refusal),
            _ => None,
        }
    }

    /// `events / samples`, 0 without samples.
    pub fn rate_of(&self, events: u64) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            events as f64 / self.samples as f64
        }
    }

    pub fn mean_tokens(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.tokens_sum as f64 / self.samples as f64)
    }

    /// Sample variance of tokens per request (0 with fewer than two samples).
    pub fn tokens_variance(&self) -> f64 {
        if self.samples < 2 {
            return 0.0;
        }
        let n = self.samples as f64;
        let mean = self.tokens_sum as f64 / n;
        ((self.tokens_sq_sum - n * mean * mean) / (n - 1.0)).max(0.0)
    }

    pub fn summary(&self) -> ArmSummary {
        ArmSummary {
            samples: self.samples,
            fallback_rate: self.rate_of(self.fallback),
            escalation_rate: self.rate_of(self.escalated),
            manual_correction_rate: self.rate_of(self.manually_corrected),
            refusal_rate: self.rate_of(self.refusal),
            latency_p95_ms: self.latency.quantile(0.95),
            mean_tokens: self.mean_tokens(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and judgement types
// ---------------------------------------------------------------------------------------------

/// How the canary judges. Every field has its default in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Probability that a canary whose candidate is within all its bounds is ever frozen,
    /// over all the looks of its whole life (split evenly over the declared bounds) [0.01].
    pub alpha: f64,
    /// Samples each arm needs before the judgement says anything but `holding` [100].
    pub min_samples_per_arm: u64,
    /// Standard deviation `τ` of the mSPRT's normal mixture prior over the size of a
    /// violation, in standard deviations of one observation pair (candidate and control)
    /// [0.1].
    ///
    /// The test needs `n·τ²`-ish information before it can cross `ln(1/α)`: it pays
    /// `½·ln(1 + nτ²)` for not knowing the effect size, and is most powerful for standardised
    /// effects near `τ` at the sample sizes where `nτ²` is around `2·ln(1/α)` to `4·ln(1/α)`.
    /// The regressions a canary exists to catch are small: two points on a 2% rate is
    /// 0.08 sd, a 10% latency shift moves about 0.1 sd of the "above p95" indicator. With
    /// `τ = 0.1` and `α = 0.01` the test is tuned to such effects at 1,000 to 3,000 samples
    /// per arm, the sizes of canary stages; a larger `τ` detects gross regressions a little
    /// sooner and small ones much later, a smaller one the reverse (Johari et al. 2017, §4).
    pub mixture_tau: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            alpha: 0.01,
            min_samples_per_arm: 100,
            mixture_tau: 0.1,
        }
    }
}

impl JudgeConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(FieldError::new(
                "alpha",
                format!("{} is outside (0, 1)", self.alpha),
            ));
        }
        if !(self.mixture_tau > 0.0 && self.mixture_tau.is_finite()) {
            return Err(FieldError::new(
                "mixture_tau",
                format!("{} must be a finite number > 0", self.mixture_tau),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Too little data to say anything: neither pass nor breach.
    Holding,
    /// Enough data, and no guardrail is breached.
    Healthy,
    /// At least one guardrail is breached.
    Breached,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holding => "holding",
            Verdict::Healthy => "healthy",
            Verdict::Breached => "breached",
        }
    }
}

/// Which bound of a guardrail a [`GuardrailJudgement`] tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Absolute ceiling on a rate.
    MaxRate,
    /// Ceiling on the increase over the control (absolute points for rates, relative for
    /// latency and tokens).
    MaxIncrease,
    /// Absolute ceiling on a quantity (ms, tokens).
    MaxValue,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::MaxRate => "max_rate",
            Bound::MaxIncrease => "max_increase",
            Bound::MaxValue => "max_value",
        }
    }
}

/// One arm at the time of a judgement. Rates are 0 without samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArmSummary {
    pub samples: u64,
    pub fallback_rate: f64,
    pub escalation_rate: f64,
    pub manual_correction_rate: f64,
    pub refusal_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_tokens: Option<f64>,
}

/// `numerator / denominator` of one arm for one guardrail: events and samples for rates,
/// requests above the latency threshold (from the histogram, so possibly fractional) and
/// samples for latency, the token sum and samples for tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Count {
    pub numerator: f64,
    pub denominator: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuardrailCounts {
    pub candidate: Count,
    pub control: Count,
}

/// The test of one bound of one guardrail: the evidence behind a freeze.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuardrailJudgement {
    /// `fallback_rate`, `escalation_rate`, `manual_correction_rate`, `latency_p95_ms` or
    /// `tokens_per_request`.
    pub guardrail: String,
    pub bound: Bound,
    /// The declared bound: a rate, absolute points, a relative increase, ms or tokens.
    pub limit: f64,
    /// The candidate's rate, p95 (ms) or mean tokens (0 when it cannot be computed).
    pub candidate_value: f64,
    /// The control's rate, p95 (ms) or mean tokens (0 when it cannot be computed).
    pub control_value: f64,
    /// The tested difference `x` (positive: over the bound; see the module documentation):
    /// a difference of rates, of latency shares (`share above threshold − 0.05`) or of token
    /// means.
    pub excess: f64,
    /// Standard error of `excess`, `sqrt(V)`.
    pub std_error: f64,
    /// For latency: the threshold (ms) whose exceedance share is tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_threshold_ms: Option<f64>,
    /// The variance of the mSPRT's mixture prior over the excess (`τ²·σ²`), with which
    /// [`GuardrailJudgement::breach_excess`] finds the excess that would breach. Absent (0)
    /// in judgements recorded before it was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mixture_variance: f64,
    /// Natural log of the mSPRT's mixture likelihood ratio `ln Λ`.
    pub statistic: f64,
    /// Natural log of the level the likelihood ratio must reach to breach: `ln(K/α)`.
    pub threshold: f64,
    /// `statistic >= threshold` and both arms had enough samples.
    pub breached: bool,
    pub counts: GuardrailCounts,
    /// The comparison in words, e.g. `escalation_rate 4.1% vs control 2.0% (+2.1 points,
    /// limit +1.0 points)`.
    pub words: String,
}

/// The canary's verdict with all its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One sentence for people, starting with the verdict.
    pub words: String,
    pub candidate: ArmSummary,
    pub control: ArmSummary,
    /// One entry per declared bound, in the order of [`crate::plan::GUARDRAIL_NAMES`].
    pub guardrails: Vec<GuardrailJudgement>,
    /// The configuration the judgement used.
    pub config: JudgeConfig,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl GuardrailJudgement {
    /// The excess at which this test would breach with the information it has (its standard
    /// error): the smallest `x` with `ln Λ(x) >= threshold`. `excess − breach_excess()` is the
    /// lower edge of the test's interval: it is at or above 0 exactly when the guardrail is
    /// breached, which is what the release page draws. `None` when the judgement does not say
    /// (no samples, or recorded before the mixture variance was kept).
    pub fn breach_excess(&self) -> Option<f64> {
        let v = self.std_error * self.std_error;
        if !(self.mixture_variance > 0.0 && v > 0.0 && self.threshold.is_finite()) {
            return None;
        }
        excess_to_reach(self.threshold, v, self.mixture_variance)
    }
}

/// The smallest `x >= 0` with `ln Λ(x, v, tau_sq) >= level` ([`log_mixture_likelihood_ratio`]
/// is increasing in `x`), to a relative precision of about 1e-9; `None` when no finite `x`
/// reaches it.
pub fn excess_to_reach(level: f64, v: f64, tau_sq: f64) -> Option<f64> {
    let at = |x: f64| log_mixture_likelihood_ratio(x, v, tau_sq);
    if at(0.0) >= level {
        return Some(0.0);
    }
    let mut hi = v.sqrt().max(1e-12);
    let mut doublings = 0;
    while at(hi) < level {
        hi *= 2.0;
        doublings += 1;
        if doublings > 200 || !hi.is_finite() {
            return None;
        }
    }
    let mut lo = 0.0;
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if at(mid) >= level {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

impl Judgement {
    pub fn breached(&self) -> impl Iterator<Item = &GuardrailJudgement> {
        self.guardrails.iter().filter(|g| g.breached)
    }
}

// ---------------------------------------------------------------------------------------------
// The judgement
// ---------------------------------------------------------------------------------------------

/// The one-sided mSPRT statistic `ln Λ` for an estimate `x` of `θ` (`H0: θ <= 0`) with
/// variance `v` and a half-normal mixture prior of variance `tau_sq` over `θ >= 0` (see the
/// module documentation). Increasing in `x`; `ln Λ < 0` whenever `x <= 0`.
pub fn log_mixture_likelihood_ratio(x: f64, v: f64, tau_sq: f64) -> f64 {
    let v = v.max(1e-300);
    if tau_sq.is_nan() || tau_sq <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let s = v + tau_sq;
    let shrink = 0.5 * (v / s).ln();
    let quad = x * x * tau_sq / (2.0 * v * s);
    let z = x * (tau_sq / (v * s)).sqrt();
    std::f64::consts::LN_2 + shrink + quad + ln_normal_cdf(z)
}

/// `ln Φ(z)`, accurate in both tails (relative error of Φ below 1.2e-7).
fn ln_normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    if x >= 0.0 {
        // Φ(z) = erfc(x)/2, computed in logs so that the far tail does not underflow.
        (0.5f64).ln() + ln_erfc_nonnegative(x)
    } else {
        (-0.5 * ln_erfc_nonnegative(-x).exp()).ln_1p()
    }
}

/// `ln erfc(x)` for `x >= 0` (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
fn ln_erfc_nonnegative(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() + poly
}

/// Judges the candidate against the control under the declared guardrails.
///
/// `Holding` while either arm has fewer than `config.min_samples_per_arm` samples (the bounds
/// are still computed, as evidence, but none is marked breached); otherwise `Breached` when any
/// bound's mSPRT statistic reaches its threshold, else `Healthy`. Never panics; an invalid
/// `config` is used with its `alpha` and `mixture_tau` clamped to sane values.
pub fn judge(
    guardrails: &Guardrails,
    candidate: &ArmStats,
    control: &ArmStats,
    config: &JudgeConfig,
) -> Judgement {
    let alpha = if config.alpha > 0.0 && config.alpha < 1.0 {
        config.alpha
    } else {
        0.01
    };
    let tau = if config.mixture_tau > 0.0 && config.mixture_tau.is_finite() {
        config.mixture_tau
    } else {
        0.1
    };
    let bounds = declared_bounds(guardrails);
    let threshold = (bounds.len().max(1) as f64 / alpha).ln();
    let enough = candidate.samples >= config.min_samples_per_arm.max(1)
        && control.samples >= config.min_samples_per_arm.max(1);

    let mut judgements: Vec<GuardrailJudgement> = bounds
        .iter()
        .map(|b| b.test(candidate, control, tau * tau, threshold))
        .collect();
    if !enough {
        for g in &mut judgements {
            g.breached = false;
        }
    }

    let (verdict, words) = if !enough {
        (Verdict::Holding, holding_words(candidate, control, config))
    } else if judgements.iter().any(|g| g.breached) {
        let parts: Vec<&str> = judgements
            .iter()
            .filter(|g| g.breached)
            .map(|g| g.words.as_str())
            .collect();
        (Verdict::Breached, format!("breached: {}", parts.join("; ")))
    } else if judgements.is_empty() {
        (
            Verdict::Healthy,
            format!(
                "healthy: no guardrails declared ({} candidate and {} control samples)",
                candidate.samples, control.samples
            ),
        )
    } else {
        (
            Verdict::Healthy,
            format!(
                "healthy: no guardrail breached after {} candidate and {} control samples",
                candidate.samples, control.samples
            ),
        )
    };

    Judgement {
        verdict,
        words,
        candidate: candidate.summary(),
        control: control.summary(),
        guardrails: judgements,
        config: config.clone(),
    }
}

fn holding_words(candidate: &ArmStats, control: &ArmStats, config: &JudgeConfig) -> String {
    let min = config.min_samples_per_arm.max(1);
    if candidate.samples == 0 && control.samples == 0 {
        return format!("holding: no outcomes yet ({min} per arm needed)");
    }
    format!(
        "holding: {} of {min} candidate samples and {} of {min} control samples",
        candidate.samples, control.samples
    )
}

/// Whether the canary may leave its stage as far as the data go (bake time is checked
/// elsewhere).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    pub ready: bool,
    pub verdict: Verdict,
    /// The stage's `min_samples`.
    pub min_samples: u64,
    pub candidate_samples: u64,
    pub control_samples: u64,
    /// One sentence: `ready: ...` or `not ready: ...`.
    pub words: String,
}

/// Ready when both arms have at least the stage's `min_samples` and the judgement is
/// `Healthy` (which itself needs the judge's `min_samples_per_arm`).
pub fn stage_ready(
    judgement: &Judgement,
    min_samples: u64,
    candidate: &ArmStats,
    control: &ArmStats,
) -> Readiness {
    let (c, k) = (candidate.samples, control.samples);
    let enough = enough_samples(min_samples, c, k);
    let healthy = judgement.verdict == Verdict::Healthy;
    let words = if !healthy {
        format!("not ready: {}", judgement.words)
    } else if !enough {
        format!(
            "not ready: {c} of {min_samples} candidate samples and {k} of {min_samples} control samples"
        )
    } else {
        format!(
            "ready: {c} candidate and {k} control samples (stage needs {min_samples}), no guardrail breached"
        )
    };
    Readiness {
        ready: healthy && enough,
        verdict: judgement.verdict,
        min_samples,
        candidate_samples: c,
        control_samples: k,
        words,
    }
}

/// Whether both arms have the samples a stage needs (`min_samples` per arm). The decider's
/// check of an advance and the canary monitor's readiness both use this one definition.
pub fn enough_samples(min_samples: u64, candidate_samples: u64, control_samples: u64) -> bool {
    candidate_samples.min(control_samples) >= min_samples
}

/// How long a stage entered at `entered` has baked at `now` (never negative), and whether that
/// is its `min_bake`. The decider's check of an advance and the canary monitor both use this.
pub fn bake_progress(
    stage: &crate::plan::Stage,
    entered: crate::Timestamp,
    now: crate::Timestamp,
) -> (u64, bool) {
    let baked = now.millis_since(entered).max(0) as u64;
    (baked, baked >= stage.min_bake.millis())
}

/// A Flagger-style fixed-threshold check of ONE interval's outcomes (e.g. the last 60 s),
/// without statistics: `true` (a failed check) when the candidate's observed value is over any
/// declared bound in this window. Needs at least one candidate sample (and one control sample
/// for `max_increase` bounds); otherwise that bound is not checked. Used only as the
/// comparison baseline of the benchmark.
pub fn fixed_threshold_check(
    guardrails: &Guardrails,
    interval_candidate: &ArmStats,
    interval_control: &ArmStats,
) -> bool {
    let (c, k) = (interval_candidate, interval_control);
    if c.samples == 0 {
        return false;
    }
    let has_control = k.samples > 0;
    for (name, limit) in guardrails.named() {
        let pc = c.rate_of(c.events(name).unwrap_or(0));
        let pk = k.rate_of(k.events(name).unwrap_or(0));
        if limit.max_rate.is_some_and(|r| pc > r) {
            return true;
        }
        if has_control && limit.max_increase.is_some_and(|d| pc - pk > d) {
            return true;
        }
    }
    if let Some(q) = &guardrails.latency_p95_ms {
        let pc = c.latency.quantile(0.95).unwrap_or(0.0);
        if q.max_value.is_some_and(|m| pc > m) {
            return true;
        }
        if let (true, Some(m), Some(pk)) = (has_control, q.max_increase, k.latency.quantile(0.95)) {
            if pc > pk * (1.0 + m) {
                return true;
            }
        }
    }
    if let Some(q) = &guardrails.tokens_per_request {
        let mc = c.mean_tokens().unwrap_or(0.0);
        if q.max_value.is_some_and(|m| mc > m) {
            return true;
        }
        if let (true, Some(m), Some(mk)) = (has_control, q.max_increase, k.mean_tokens()) {
            if mc > mk * (1.0 + m) {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Declared {
    Rate {
        name: &'static str,
        bound: Bound,
        limit: f64,
    },
    Latency {
        bound: Bound,
        limit: f64,
    },
    Tokens {
        bound: Bound,
        limit: f64,
    },
}

fn declared_bounds(g: &Guardrails) -> Vec<Declared> {
    let mut out = Vec::new();
    for (
        name,
        GuardrailLimit {
            max_rate,
            max_increase,
        },
    ) in g.named()
    {
        if let Some(limit) = max_rate {
            out.push(Declared::Rate {
                name,
                bound: Bound::MaxRate,
                limit: *limit,
            });
        }
        if let Some(limit) = max_increase {
            out.push(Declared::Rate {
                name,
                bound: Bound::MaxIncrease,
                limit: *limit,
            });
        }
    }
    for (
        name,
        QuantityLimit {
            max_value,
            max_increase,
        },
    ) in g.quantities()
    {
        for (bound, limit) in [
            (Bound::MaxValue, max_value),
            (Bound::MaxIncrease, max_increase),
        ] {
            if let Some(limit) = limit {
                let limit = *limit;
                out.push(if name == "latency_p95_ms" {
                    Declared::Latency { bound, limit }
                } else {
                    Declared::Tokens { bound, limit }
                });
            }
        }
    }
    out
}

/// Share of requests a p95 leaves above it.
const P95_TAIL: f64 = 0.05;
/// Floor of a token variance (tokens²).
const TOKEN_VARIANCE_FLOOR: f64 = 0.25;

/// `(k + 1) / (n + 2)`: a rate that is never 0 or 1, for variances.
fn smoothed(k: f64, n: u64) -> f64 {
    (k + 1.0) / (n as f64 + 2.0)
}

fn bernoulli_var(p: f64) -> f64 {
    p * (1.0 - p)
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

impl Declared {
    fn test(&self, c: &ArmStats, k: &ArmStats, tau_sq: f64, threshold: f64) -> GuardrailJudgement {
        let nc = c.samples.max(1) as f64;
        let nk = k.samples.max(1) as f64;
        // (excess x, variance V, per-pair variance σ², ...)
        let (guardrail, bound, limit) = match *self {
            Declared::Rate { name, bound, limit } => (name, bound, limit),
            Declared::Latency { bound, limit } => ("latency_p95_ms", bound, limit),
            Declared::Tokens { bound, limit } => ("tokens_per_request", bound, limit),
        };
        let mut latency_threshold_ms = None;
        let (x, v, sigma_sq, candidate_value, control_value, counts, words) = match *self {
            Declared::Rate { name, bound, limit } => {
                let kc = c.events(name).unwrap_or(0) as f64;
                let kk = k.events(name).unwrap_or(0) as f64;
                let (pc, pk) = (c.rate_of(kc as u64), k.rate_of(kk as u64));
                let vc = bernoulli_var(smoothed(kc, c.samples));
                let vk = bernoulli_var(smoothed(kk, k.samples));
                let counts = GuardrailCounts {
                    candidate: Count {
                        numerator: kc,
                        denominator: c.samples,
                    },
                    control: Count {
                        numerator: kk,
                        denominator: k.samples,
                    },
                };
                if bound == Bound::MaxRate {
                    let words = format!("{name} {} (limit {})", pct(pc), pct(limit));
                    (pc - limit, vc / nc, vc, pc, pk, counts, words)
                } else {
                    let words = format!(
                        "{name} {} vs control {} ({} points, limit +{} points)",
                        pct(pc),
                        pct(pk),
                        signed_points(pc - pk),
                        points(limit)
                    );
                    (
                        pc - pk - limit,
                        vc / nc + vk / nk,
                        vc + vk,
                        pc,
                        pk,
                        counts,
                        words,
                    )
                }
            }
            Declared::Latency { bound, limit } => {
                let p95c = c.latency.quantile(0.95);
                let p95k = k.latency.quantile(0.95);
                let threshold_ms = match bound {
                    Bound::MaxIncrease => p95k.map(|p| p * (1.0 + limit)),
                    _ => Some(limit),
                };
                latency_threshold_ms = threshold_ms;
                let (qc, qk) = match threshold_ms {
                    Some(t) => (c.latency.fraction_above(t), k.latency.fraction_above(t)),
                    None => (0.0, 0.0),
                };
                let vc = bernoulli_var(smoothed(qc * c.samples as f64, c.samples));
                let counts = GuardrailCounts {
                    candidate: Count {
                        numerator: qc * c.samples as f64,
                        denominator: c.samples,
                    },
                    control: Count {
                        numerator: qk * k.samples as f64,
                        denominator: k.samples,
                    },
                };
                let (pc, pk) = (p95c.unwrap_or(0.0), p95k.unwrap_or(0.0));
                let above = threshold_ms
                    .map(|t| format!("{} of candidate requests above {}", pct(qc), ms(t)))
                    .unwrap_or_else(|| "no candidate latencies".to_string());
                if threshold_ms.is_none() || c.samples == 0 {
                    let words = format!("latency_p95_ms: not enough latencies ({above})");
                    (0.0, 1.0, 1.0, pc, pk, counts, words)
                } else if bound == Bound::MaxValue {
                    let words = format!("latency_p95_ms {} (limit {}; {above})", ms(pc), ms(limit));
                    (qc - P95_TAIL, vc / nc, vc, pc, pk, counts, words)
                } else {
                    let tail_var = bernoulli_var(P95_TAIL);
                    let words = format!(
                        "latency_p95_ms {} vs control {} ({}, limit +{}; {above})",
                        ms(pc),
                        ms(pk),
                        signed_relative(pc, pk),
                        pct(limit)
                    );
                    (
                        qc - P95_TAIL,
                        vc / nc + tail_var / nk,
                        vc + tail_var,
                        pc,
                        pk,
                        counts,
                        words,
                    )
                }
            }
            Declared::Tokens { bound, limit } => {
                let mc = c.mean_tokens().unwrap_or(0.0);
                let mk = k.mean_tokens().unwrap_or(0.0);
                let vc = c.tokens_variance().max(TOKEN_VARIANCE_FLOOR);
                let vk = k.tokens_variance().max(TOKEN_VARIANCE_FLOOR);
                let counts = GuardrailCounts {
                    candidate: Count {
                        numerator: c.tokens_sum as f64,
                        denominator: c.samples,
                    },
                    control: Count {
                        numerator: k.tokens_sum as f64,
                        denominator: k.samples,
                    },
                };
                if bound == Bound::MaxValue {
                    let words = format!(
                        "tokens_per_request {} (limit {})",
                        tokens(mc),
                        tokens(limit)
                    );
                    (mc - limit, vc / nc, vc, mc, mk, counts, words)
                } else {
                    let f = 1.0 + limit;
                    let words = format!(
                        "tokens_per_request {} vs control {} ({}, limit +{})",
                        tokens(mc),
                        tokens(mk),
                        signed_relative(mc, mk),
                        pct(limit)
                    );
                    (
                        mc - f * mk,
                        vc / nc + f * f * vk / nk,
                        vc + f * f * vk,
                        mc,
                        mk,
                        counts,
                        words,
                    )
                }
            }
        };
        let statistic = finite(log_mixture_likelihood_ratio(x, v, tau_sq * sigma_sq));
        GuardrailJudgement {
            guardrail: guardrail.to_string(),
            bound,
            limit,
            candidate_value: finite(candidate_value),
            control_value: finite(control_value),
            excess: finite(x),
            std_error: finite(v.sqrt()),
            latency_threshold_ms: latency_threshold_ms.map(finite),
            mixture_variance: finite(tau_sq * sigma_sq),
            statistic,
            threshold,
            breached: statistic >= threshold,
            counts,
            words,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Words
// ---------------------------------------------------------------------------------------------

/// A rate as a percentage: one decimal from 1% up, two below.
fn pct(rate: f64) -> String {
    let p = rate * 100.0;
    if p.abs() >= 1.0 || p == 0.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

fn points(diff: f64) -> String {
    format!("{:.1}", diff * 100.0)
}

fn signed_points(diff: f64) -> String {
    format!("{:+.1}", diff * 100.0)
}

/// `+24.0%` for `a` relative to `b`.
fn signed_relative(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:+.1}%", (a / b - 1.0) * 100.0)
    } else {
        "n/a".to_string()
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn tokens(v: f64) -> String {
    format!("{v:.1}")
}
