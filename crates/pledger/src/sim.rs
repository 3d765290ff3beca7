//! `pledger sim`: simulated outcome traffic, routed through the prompt's routing table exactly
//! as a service with the SDK would route it, published in batches on `pledger.outcomes.<prompt>`.

use std::collections::BTreeMap;

use pledger_core::outcome::{outcome_subject, Outcome};
use pledger_core::routing::{resolve, Arm};
use pledger_core::sim::{InjectedRegression, RateMetric, Segment, SimSpec, Simulator};
use pledger_core::{FileFormat, PromptName};
use pledger_infra::{Ledger, RoutingStore};
use serde_json::json;

use crate::app::Report;
use crate::cli::SimArgs;
use crate::failure::{Exit, Failure};

pub fn spec_from_args(args: &SimArgs) -> Result<SimSpec, Failure> {
    let mut spec = match &args.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", path.display())))?;
            pledger_core::error::parse_file::<SimSpec>(
                "sim spec",
                &text,
                FileFormat::from_path(&path.to_string_lossy()),
                64 * 1024,
            )
            .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None => SimSpec::new(1),
    };
    if let Some(seed) = args.seed {
        spec.seed = seed;
    }
    if let Some(after) = args.regression_after {
        let metric = RateMetric::ALL
            .into_iter()
            .find(|m| m.name() == args.regression_metric)
            .ok_or_else(|| Failure::usage(format!("--regression-metric `{}` is not one of fallback_rate, escalation_rate, manual_correction_rate, refusal_rate", args.regression_metric)))?;
        spec.regression = Some(InjectedRegression {
            after_samples: after,
            metric,
            candidate_rate: args.regression_rate,
        });
    }
    if !args.segments.is_empty() {
        spec.segments = args
            .segments
            .iter()
            .map(|s| parse_segment(s))
            .collect::<Result<_, _>>()?;
    }
    spec.validate()
        .map_err(|e| Failure::usage(format!("sim spec: {e}")))?;
    Ok(spec)
}

fn parse_segment(raw: &str) -> Result<Segment, Failure> {
    let bad = || {
        Failure::usage(format!(
            "--segment `{raw}` is not `K=V,K=V:WEIGHT` (e.g. `user_kind=internal:1`)"
        ))
    };
    let (attrs, weight) = raw.rsplit_once(':').ok_or_else(bad)?;
    let weight: f64 = weight.parse().map_err(|_| bad())?;
    let mut map = BTreeMap::new();
    for pair in attrs.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(bad)?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(Segment { attrs: map, weight })
}

/// Simulates `requests` requests and publishes their outcomes. Routing is re-read for every
/// batch, so a freeze or rollback during the run moves the rest of the traffic at once.
pub async fn run(url: &str, args: &SimArgs) -> Result<Report, Failure> {
    let prompt = PromptName::parse(&args.prompt)?;
    let spec = spec_from_args(args)?;
    if args.batch == 0 {
        return Err(Failure::usage("--batch must be at least 1"));
    }
    let client = pledger_infra::connect(url).await?;
    Ledger::check_server_version(&client)?;
    // A service's view: the routing bucket and the outcome subjects, no stream set-up.
    let js = async_nats::jetstream::new(client);
    let routing = RoutingStore::open(&js).await?;
    let mut sim = Simulator::new(spec).map_err(|e| Failure::usage(format!("sim spec: {e}")))?;
    let subject = outcome_subject(&prompt);
    let (mut candidate, mut baseline, mut stable, mut messages) = (0u64, 0u64, 0u64, 0u64);
    let mut acks = Vec::new();
    let mut left = args.requests;
    while left > 0 {
        let Some((table, _)) = routing.get(&prompt).await? else {
            return Err(Failure::other(format!(
                "prompt `{prompt}` has no routing table yet (adopt a stable version first)"
            )));
        };
        let n = left.min(args.batch as u64);
        left -= n;
        let mut batch: Vec<Outcome> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let request = sim.next_request();
            let resolution = resolve(&table, Some(&request.unit), &request.attrs);
            let Some(version) = resolution.version.clone() else {
                return Err(Failure::other(format!(
                    "prompt `{prompt}` has no stable version to serve"
                )));
            };
            let observation = sim.outcome(resolution.arm.unwrap_or(Arm::Baseline));
            match resolution.arm {
                Some(Arm::Candidate) => candidate += 1,
                Some(Arm::Baseline) => baseline += 1,
                None => stable += 1,
            }
            let mut outcome = request.outcome(
                &observation,
                prompt.clone(),
                version,
                resolution.release.clone(),
                resolution.arm,
            );
            outcome.stage_visit = resolution.stage_visit.clone();
            batch.push(outcome);
        }
        let payload = serde_json::to_vec(&batch).expect("outcomes serialize");
        let ack = js
            .publish(subject.clone(), payload.into())
            .await
            .map_err(|e| Failure::other(format!("publishing outcomes: {e}")))?;
        acks.push(ack);
        messages += 1;
        // Keep a bounded number of acks in flight.
        if acks.len() >= 256 {
            for ack in acks.drain(..) {
                ack.await
                    .map_err(|e| Failure::other(format!("outcome not stored: {e}")))?;
            }
        }
    }
    for ack in acks {
        ack.await
            .map_err(|e| Failure::other(format!("outcome not stored: {e}")))?;
    }
    let published = candidate + baseline + stable;
    Ok(Report {
        text: format!(
            "published {published} outcomes in {messages} messages on {subject}: {candidate} candidate, {baseline} baseline, {stable} outside a rollout"
        ),
        json: json!({ "prompt": prompt, "published": published, "messages": messages, "candidate": candidate, "baseline": baseline, "outside_rollout": stable }),
        exit: Exit::Success,
    })
}
