//! One round of polls: every endpoint concurrently, and the frame they make.

use super::Gen3UsageSource;
use super::config::ENDPOINTS;
use crate::model::{Frame, MetricKind};

/// One failed endpoint of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointError {
    /// The endpoint (a name of [`ENDPOINTS`]).
    pub endpoint: &'static str,
    /// The error kind.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
}

/// One round of polls.
#[derive(Debug, Default)]
pub struct UsageRound {
    /// The frame to emit.
    pub frame: Frame,
    /// The endpoints that failed.
    pub errors: Vec<EndpointError>,
}

impl Gen3UsageSource {
    /// Polls every endpoint once, concurrently, and builds the frame.
    pub async fn collect(&self, source: &str) -> UsageRound {
        let (a, b, c, d, e, f) = tokio::join!(
            self.indexd_stats(),
            self.drs(),
            self.datasets(),
            self.discovery(),
            self.aggregate_commons(),
            self.hatchery()
        );
        let mut round = UsageRound {
            frame: Frame::new(source),
            errors: Vec::new(),
        };
        for (name, res) in ENDPOINTS.iter().zip([a, b, c, d, e, f]) {
            match res {
                None => {}
                Some(Err((kind, message))) => round.errors.push(EndpointError {
                    endpoint: name,
                    kind,
                    message,
                }),
                Some(Ok((values, ts))) => {
                    for (metric, labels, v) in values {
                        if !round.frame.metadata.iter().any(|m| m.name == metric) {
                            let (help, unit) = help(metric);
                            round.frame.meta(metric, MetricKind::Gauge, help, unit);
                        }
                        let mut l: Vec<(&str, &str)> = vec![("job", self.job.as_str())];
                        l.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                        round.frame.push(metric, &l, ts, v);
                    }
                }
            }
        }
        round
    }
}

/// HELP text and unit of each metric.
fn help(metric: &str) -> (&'static str, &'static str) {
    match metric {
        "gen3_indexd_files" => ("Files indexed by indexd (fileCount of /_stats).", ""),
        "gen3_indexd_size_bytes" => ("Total size of the files indexed by indexd (totalFileSize of /_stats).", "bytes"),
        "gen3_drs_objects" => ("DRS objects (drs.objectCount of the DRS service-info).", ""),
        "gen3_drs_size_bytes" => (
            "Total size of the DRS objects (drs.totalObjectSize of the DRS service-info).",
            "bytes",
        ),
        "gen3_peregrine_projects" => ("Projects in peregrine's public datasets counts.", ""),
        "gen3_peregrine_records" => (
            "Records of one node type in one project, from peregrine's public datasets counts.",
            "",
        ),
        "gen3_discovery_studies" => ("Studies in the metadata service's discovery metadata.", ""),
        "gen3_mds_aggregate_commons" => ("Commons aggregated by the metadata service (aggregate MDS).", ""),
        "gen3_hatchery_workspaces" => ("Running workspaces (hatchery /allCosts total_pods).", ""),
        "gen3_hatchery_workspace_cost_dollars" => (
            "Cost accrued so far by the workspaces running now (hatchery /allCosts total_cost: CPU and memory requests times hatchery's configured prices times each pod's time since creation); falls when a workspace stops, so a gauge, not a counter.",
            "dollars",
        ),
        _ => ("", ""),
    }
}
