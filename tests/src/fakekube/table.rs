//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`) when it
//! prints a human table. The columns are those of the real printers for
//! pods (NAME READY STATUS RESTARTS AGE) and nodes (NAME STATUS ROLES AGE
//! VERSION), NAME AGE for the other types. Rows carry the object's
//! metadata (`PartialObjectMetadata`), as with the default
//! `includeObject=Metadata`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use super::resources::ResourceType;
use super::state::parse_rfc3339;

/// Whether the client asked for a Table first.
pub(crate) fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.split(';').any(|p| p.trim() == "as=Table"))
}

/// kubectl's short human duration (`45s`, `3m12s`, `5h`, `2d3h`).
pub(crate) fn human_age(created: &Value) -> String {
    let Some(t) = created.as_str().and_then(|c| parse_rfc3339(c).ok()) else {
        return "<unknown>".into();
    };
    let s = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..172_800 => format!("{}h", s / 3600),
        _ if s < 8 * 86_400 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn column(name: &str, kind: &str, format: &str, priority: u32) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": name, "priority": priority})
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = o["spec"]["containers"].as_array().map(Vec::len).unwrap_or(0);
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
    let mut reason = o["status"]["reason"]
        .as_str()
        .or_else(|| o["status"]["phase"].as_str())
        .unwrap_or("Unknown")
        .to_string();
    for c in &statuses {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            reason = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            reason = r.to_string();
        }
    }
    if !o["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    vec![
        o["metadata"]["name"].clone(),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(human_age(&o["metadata"]["creationTimestamp"])),
        json!(o["status"]["podIP"].as_str().unwrap_or("<none>")),
        json!(o["spec"]["nodeName"].as_str().unwrap_or("<none>")),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
        .unwrap_or("Unknown");
    let roles: Vec<&str> = o["metadata"]["labels"]
        .as_object()
        .map(|l| l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
        .unwrap_or_default();
    vec![
        o["metadata"]["name"].clone(),
        json!(ready),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        json!(human_age(&o["metadata"]["creationTimestamp"])),
        json!(o["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("")),
    ]
}

/// A Table of `objs` (`rv` and `continue` in its list metadata).
pub(crate) fn table(r: &ResourceType, objs: &[Arc<Value>], rv: Option<u64>, cont: Option<Value>) -> Value {
    let (columns, cells): (Vec<Value>, fn(&Value) -> Vec<Value>) = match r.kind {
        "Pod" => (
            vec![
                column("Name", "string", "name", 0),
                column("Ready", "string", "", 0),
                column("Status", "string", "", 0),
                column("Restarts", "string", "", 0),
                column("Age", "string", "", 0),
                column("IP", "string", "", 1),
                column("Node", "string", "", 1),
            ],
            pod_cells,
        ),
        "Node" => (
            vec![
                column("Name", "string", "name", 0),
                column("Status", "string", "", 0),
                column("Roles", "string", "", 0),
                column("Age", "string", "", 0),
                column("Version", "string", "", 0),
            ],
            node_cells,
        ),
        _ => (
            vec![column("Name", "string", "name", 0), column("Created At", "date", "", 0)],
            |o| vec![o["metadata"]["name"].clone(), o["metadata"]["creationTimestamp"].clone()],
        ),
    };
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            json!({
                "cells": cells(o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    if let Some(c) = cont {
        meta["continue"] = c;
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
