//! JSON Schemas of every wire format, generated from the Rust types. `schemas/` in the
//! repository holds their output; a test fails when it is stale.

use schemars::Schema;

use crate::artifact::Artifact;
use crate::bundle::EvalBundle;
use crate::event::{payload_schemas, WireEnvelope};
use crate::gate::GatePolicy;
use crate::plan::RolloutPlan;
use crate::routing::RoutingTable;

/// Every schema file, as `(relative path under schemas/, pretty JSON text)`.
pub fn all_schema_files() -> Vec<(String, String)> {
    let mut files = vec![
        (
            "artifact.schema.json".to_string(),
            render(schemars::schema_for!(Artifact)),
        ),
        (
            "eval-bundle.schema.json".to_string(),
            render(schemars::schema_for!(EvalBundle)),
        ),
        (
            "rollout-plan.schema.json".to_string(),
            render(schemars::schema_for!(RolloutPlan)),
        ),
        (
            "gate-policy.schema.json".to_string(),
            render(schemars::schema_for!(GatePolicy)),
        ),
        (
            "routing-table.schema.json".to_string(),
            render(schemars::schema_for!(RoutingTable)),
        ),
        (
            "envelope.schema.json".to_string(),
            render(schemars::schema_for!(WireEnvelope)),
        ),
        (
            "outcome.schema.json".to_string(),
            render(schemars::schema_for!(crate::outcome::Outcome)),
        ),
        (
            "release-windows.schema.json".to_string(),
            render(schemars::schema_for!(crate::window::ReleaseWindows)),
        ),
        (
            "evidence-export.schema.json".to_string(),
            render(schemars::schema_for!(crate::audit::Export)),
        ),
    ];
    for (kind, payload) in payload_schemas() {
        files.push((
            format!("events/{kind}.schema.json"),
            render(event_schema(kind, payload)),
        ));
    }
    files
}

/// The envelope schema with `kind` fixed to one kind and `payload` replaced by its schema.
fn event_schema(kind: &str, payload: Schema) -> Schema {
    let mut envelope = schemars::schema_for!(WireEnvelope<()>);
    let mut payload = payload.to_value();
    let obj = envelope.as_object_mut().expect("object schema");
    // Hoist the payload's definitions next to the envelope's.
    if let Some(defs) = payload.as_object_mut().and_then(|p| p.remove("$defs")) {
        let target = obj.entry("$defs").or_insert_with(|| serde_json::json!({}));
        if let (Some(target), Some(defs)) = (target.as_object_mut(), defs.as_object()) {
            for (k, v) in defs {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(p) = payload.as_object_mut() {
        p.remove("$schema");
    }
    obj.insert("title".into(), serde_json::json!(kind));
    let props = obj
        .get_mut("properties")
        .and_then(|p| p.as_object_mut())
        .expect("properties");
    props.insert("kind".into(), serde_json::json!({ "const": kind }));
    props.insert("payload".into(), payload);
    envelope
}

fn render(schema: Schema) -> String {
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}
