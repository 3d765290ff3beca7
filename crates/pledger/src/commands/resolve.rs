//! `pledger resolve`.

use std::collections::BTreeMap;

use pledger_core::routing::{resolve, routing_table_for, Arm};
use pledger_core::PromptName;
use serde_json::json;

use crate::app::{registered, App, Report};
use crate::failure::Failure;

/// `--attr K=V`, repeated.
pub(crate) fn parse_attributes(attrs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut attributes = BTreeMap::new();
    for a in attrs {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| Failure::usage(format!("--attr `{a}` is not of the form KEY=VALUE")))?;
        attributes.insert(k.trim().to_string(), v.to_string());
    }
    Ok(attributes)
}

impl App {
    pub(crate) async fn resolve(
        &self,
        prompt: &str,
        unit: Option<&str>,
        attrs: &[String],
    ) -> Result<Report, Failure> {
        let prompt = PromptName::parse(prompt)?;
        let attributes = parse_attributes(attrs)?;
        let conn = self.connect().await?;
        let table = match conn.routing.get(&prompt).await? {
            Some((table, _)) => table,
            None => {
                let family = registered(conn.ledger.load(&prompt).await?)?;
                routing_table_for(&family.state, family.last_sequence)
            }
        };
        let resolution = resolve(&table, unit, &attributes);
        let text = match (&resolution.version, resolution.arm, &resolution.release) {
            (Some(v), Some(Arm::Candidate), Some(r)) => format!("{v} (candidate, release {r})"),
            (Some(v), Some(Arm::Baseline), Some(r)) => format!("{v} (baseline, release {r})"),
            (Some(v), _, _) => format!("{v} (stable)"),
            (None, _, _) => format!("`{prompt}` has no stable version yet: nothing to serve"),
        };
        Ok(Report::ok(
            text,
            json!({ "version": resolution.version, "release": resolution.release, "arm": resolution.arm }),
        ))
    }
}
