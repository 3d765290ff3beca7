//! A service using pledger-client: it resolves a prompt for N simulated requests, "calls a
//! model" with the resolved artifact, and reports each request's outcome.
//!
//! ```sh
//! pledger up &                       # a local ledger, with a prompt registered and adopted
//! cargo run -p pledger-client --example service -- support-triage --requests 2000
//! ```
//!
//! Options: `--requests N` (default 1000), `--nats URL` (else `PLEDGER_NATS_URL`, else
//! `nats://127.0.0.1:4222`).

use std::collections::BTreeMap;
use std::time::Duration;

use pledger_client::{
    Arm, Artifact, OutcomeReporter, ReporterOptions, RequestContext, Resolution, Resolver,
    ResolverOptions,
};

struct Args {
    prompt: String,
    requests: usize,
    nats: String,
}

fn args() -> Result<Args, String> {
    let usage = "usage: service PROMPT [--requests N] [--nats URL]";
    let mut prompt = None;
    let mut requests = 1000;
    let mut nats =
        std::env::var("PLEDGER_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => {
                requests = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--requests takes a number")?
            }
            "--nats" => nats = it.next().ok_or("--nats takes a URL")?,
            _ if prompt.is_none() && !arg.starts_with('-') => prompt = Some(arg),
            _ => return Err(usage.into()),
        }
    }
    Ok(Args {
        prompt: prompt.ok_or(usage)?,
        requests,
        nats,
    })
}

/// Stands in for the model call: what a real service would send `artifact.instructions` and
/// `artifact.model` to, measured.
struct Reply {
    latency_ms: f64,
    tokens_in: u64,
    tokens_out: u64,
    fell_back: bool,
}

fn pretend_to_call_the_model(artifact: &Artifact, question: &str, i: usize) -> Reply {
    let tokens_in = ((artifact.instructions.len() + question.len()) / 4) as u64;
    let tokens_out = artifact.model.max_output_tokens.unwrap_or(300).min(120) as u64;
    Reply {
        latency_ms: 250.0 + (i % 17) as f64 * 11.0,
        tokens_in,
        tokens_out,
        fell_back: i % 29 == 0,
    }
}

/// How a resolution is shown in the summary: the arm and the version's short id.
fn label(resolution: &Resolution) -> String {
    let version = resolution.version().map_or("-", |v| v.short());
    match (resolution.arm(), resolution.release()) {
        (Some(Arm::Candidate), Some(release)) => format!("candidate {version} ({release})"),
        (Some(Arm::Baseline), Some(release)) => format!("baseline  {version} ({release})"),
        _ => format!("stable    {version}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;

    // One connection for both; it reconnects by itself if the server goes away.
    let client = pledger_client::connect(&args.nats).await?;
    let resolver = Resolver::start(client.clone(), ResolverOptions::default()).await?;
    let reporter = OutcomeReporter::start(client, ReporterOptions::default());

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut nothing_to_serve = 0;
    for i in 0..args.requests {
        // What the service knows about the request.
        let user = format!("user-{}", i % 500);
        let user_kind = if i % 10 == 0 { "internal" } else { "external" };
        let geo = if i % 3 == 0 { "eu" } else { "us" };
        let attrs = [("user_kind", user_kind), ("geo", geo)];

        // 1. Resolve (local, no network).
        let ctx = RequestContext::new().unit(&user).attrs(&attrs);
        let resolution = resolver.resolve(&args.prompt, &ctx);
        let (Some(artifact), Some(mut outcome)) = (
            resolution.artifact(),
            resolution.outcome(format!("req-{i}")),
        ) else {
            // Unknown prompt, no stable version yet: the service's own fallback.
            nothing_to_serve += 1;
            continue;
        };

        // 2. Serve with the resolved artifact.
        let reply = pretend_to_call_the_model(artifact, "Where is my refund?", i);

        // 3. Report how it went (never blocks; the arm, version and release are filled in).
        outcome.unit = Some(user.clone());
        outcome.attrs = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        outcome.latency_ms = reply.latency_ms;
        outcome.tokens_in = reply.tokens_in;
        outcome.tokens_out = reply.tokens_out;
        outcome.fallback = reply.fell_back;
        reporter.report(outcome);
        *served.entry(label(&resolution)).or_default() += 1;
    }

    reporter.flush().await?;
    println!("served {} requests for `{}`:", args.requests, args.prompt);
    for (arm, count) in &served {
        println!("  {count:>6}  {arm}");
    }
    if nothing_to_serve > 0 {
        println!("  {nothing_to_serve:>6}  nothing to serve (unknown prompt or no stable version)");
    }
    println!("reporter: {:?}", reporter.stats());
    let staleness = resolver.staleness();
    println!(
        "routing: connected={} confirmed {:?} ago",
        staleness.connected,
        Duration::from_millis(staleness.since_confirmed.as_millis() as u64)
    );
    reporter.shutdown().await;
    Ok(())
}
