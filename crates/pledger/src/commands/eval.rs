//! `pledger eval from-promptfoo` and `release attach-eval --promptfoo`: eval bundles built from
//! a promptfoo run ([`pledger_core::promptfoo`]).

use std::path::Path;

use pledger_core::bundle::EvalBundle;
use pledger_core::promptfoo::{convert, Converted, PromptfooOptions};
use pledger_core::{ReleaseId, VersionId};
use serde_json::json;

use crate::app::{known_release, read_input, registered, App, Report};
use crate::cli::{EvalCommand, PromptfooMapping};
use crate::failure::Failure;

/// Reads and converts the results file at `path` (before anything connects: a bad file is
/// refused without contacting the ledger).
pub(crate) fn read_promptfoo(
    path: &Path,
    mapping: &PromptfooMapping,
) -> Result<Converted, Failure> {
    let (Some(baseline_label), Some(candidate_label)) = (&mapping.baseline, &mapping.candidate)
    else {
        return Err(Failure::usage(
            "--baseline and --candidate name the two prompt labels of the promptfoo run",
        ));
    };
    let text = read_input(path)?;
    let options = PromptfooOptions {
        segment_by: mapping.segment_by.clone(),
        hard_negative_by: mapping.hard_negative_by.clone(),
        ..PromptfooOptions::new(baseline_label, candidate_label)
    };
    convert(&text, &options)
        .map_err(|e| Failure::usage(format!("{}: {}: {}", path.display(), e.field, e.message)))
}

/// The bundle for `candidate` against `baseline` from a converted run (read from `path`).
pub(crate) fn promptfoo_bundle(
    path: &Path,
    mapping: &PromptfooMapping,
    converted: &Converted,
    candidate: VersionId,
    baseline: VersionId,
) -> Result<EvalBundle, Failure> {
    let bundle = EvalBundle {
        candidate,
        baseline,
        suite: mapping
            .suite
            .clone()
            .or_else(|| converted.description.clone())
            .unwrap_or_else(|| "promptfoo".to_string()),
        segments: converted.segments.clone(),
        hard_negatives: converted.hard_negatives.clone(),
        regressions: converted.regressions.clone(),
        latency_ms: converted.latency_ms.clone(),
        tokens_per_request: converted.tokens_per_request.clone(),
        cost_per_request_usd: converted.cost_per_request_usd.clone(),
        expected_changes: Vec::new(),
        covers_regressions: Vec::new(),
    };
    bundle.validate().map_err(|e| {
        Failure::usage(format!(
            "{}: the bundle built from it is not valid: {}: {}",
            path.display(),
            e.field,
            e.message
        ))
    })?;
    Ok(bundle)
}

/// What a conversion left out or cut, in words.
pub(crate) fn conversion_note(c: &Converted) -> String {
    let mut notes = vec![format!(
        "{} tests from a format {} results file",
        c.tests, c.version
    )];
    if c.left_out != (0, 0) {
        notes.push(format!(
            "{} cached and {} errored rows left out of latency, tokens and cost",
            c.left_out.0, c.left_out.1
        ));
    }
    if c.regressions_total > c.regressions.len() {
        notes.push(format!(
            "{} regressions, the first {} listed",
            c.regressions_total,
            c.regressions.len()
        ));
    }
    notes.join("; ")
}

impl App {
    pub(crate) async fn eval(&self, command: EvalCommand) -> Result<Report, Failure> {
        match command {
            EvalCommand::FromPromptfoo {
                results,
                mapping,
                release,
                candidate_version,
                baseline_version,
                out,
            } => {
                let converted = read_promptfoo(&results, &mapping)?;
                let (candidate, baseline) = match (release, candidate_version, baseline_version) {
                    (Some(release), _, _) => {
                        let release = ReleaseId::parse(&release)?;
                        let conn = self.connect().await?;
                        let family = registered(conn.ledger.load(release.prompt()).await?)?;
                        let r = known_release(&family.state, &release)?;
                        let baseline = r.baseline.clone().ok_or_else(|| {
                            Failure::usage(format!(
                                "{release} has no baseline version (its prompt had no stable version when it was proposed)"
                            ))
                        })?;
                        (r.candidate.clone(), baseline)
                    }
                    (None, Some(c), Some(b)) => (VersionId::parse(&c)?, VersionId::parse(&b)?),
                    _ => {
                        return Err(Failure::usage(
                            "which versions is the bundle for? pass --release <RELEASE> (read from the ledger), or --candidate-version and --baseline-version",
                        ))
                    }
                };
                let bundle = promptfoo_bundle(&results, &mapping, &converted, candidate, baseline)?;
                let text = serde_json::to_string_pretty(&bundle).expect("a bundle serializes");
                let note = conversion_note(&converted);
                match out {
                    Some(path) => {
                        std::fs::write(&path, format!("{text}\n")).map_err(|e| {
                            Failure::other(format!("{}: cannot write: {e}", path.display()))
                        })?;
                        Ok(Report::ok(
                            format!(
                                "eval bundle `{}` written to {} ({note})",
                                bundle.suite,
                                path.display()
                            ),
                            json!({ "out": path, "bundle": bundle, "note": note }),
                        ))
                    }
                    None => Ok(Report::ok(text, json!({ "bundle": bundle, "note": note }))),
                }
            }
        }
    }
}
