//! The collector's own metrics (`csoc_collector_*`), served on `/metrics`.

use std::sync::atomic::AtomicU64;

use csoc_common::labels::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

fn ls(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Ingest metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    /// Streams currently open.
    pub agents_connected: Gauge,
    /// Last message from each agent, Unix seconds.
    pub agent_last_seen: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Each agent's central config status (1 for the current one).
    pub agent_config_status: Family<Labels, Gauge>,
    /// Batches by commons and result (acked, duplicate, nacked).
    pub batches: Family<Labels, Counter>,
    /// Samples stored, by commons.
    pub samples: Family<Labels, Counter>,
    /// Refused streams, by reason.
    pub auth_failures: Family<Labels, Counter>,
}

impl IngestMetrics {
    /// Records a message from an agent now.
    pub fn seen(&self, commons: &str, agent: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.agent_last_seen
            .get_or_create(&ls(&[("commons", commons), ("agent", agent)]))
            .set(now);
    }

    /// Counts a batch outcome.
    pub fn batch(&self, commons: &str, result: &str) {
        self.batches.get_or_create(&ls(&[("commons", commons), ("result", result)])).inc();
    }

    /// Counts stored samples.
    pub fn stored(&self, commons: &str, n: u64) {
        self.samples.get_or_create(&ls(&[("commons", commons)])).inc_by(n);
    }

    /// Counts a refused stream.
    pub fn refused(&self, reason: &str) {
        self.auth_failures.get_or_create(&ls(&[("reason", reason)])).inc();
    }
}

/// HTTP metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Requests by handler and status code.
    pub requests: Family<Labels, Counter>,
    /// Request latency by handler.
    pub duration: Family<Labels, Histogram>,
    /// Requests refused by API authentication, by reason.
    pub refused: Family<Labels, Counter>,
}

impl HttpMetrics {
    /// Records one request.
    pub fn observe(&self, handler: &str, code: u16, secs: f64) {
        self.requests
            .get_or_create(&ls(&[("handler", handler), ("code", &code.to_string())]))
            .inc();
        self.duration.get_or_create(&ls(&[("handler", handler)])).observe(secs);
    }

    /// Counts a request refused by API authentication.
    pub fn refused(&self, reason: &str) {
        self.refused.get_or_create(&ls(&[("reason", reason)])).inc();
    }
}

/// All the collector's metrics (storage metrics live in `tsdb`).
#[derive(Clone)]
pub struct CollectorMetrics {
    /// Ingest.
    pub ingest: IngestMetrics,
    /// HTTP API.
    pub http: HttpMetrics,
}

impl CollectorMetrics {
    /// Creates and registers the metrics under `csoc_collector_`; `reg`
    /// should already be the `csoc_collector` sub-registry.
    pub fn new(reg: &mut Registry) -> Self {
        reg.register("build", "Collector build information", csoc_common::build::info());
        let ingest = IngestMetrics {
            agents_connected: Gauge::default(),
            agent_last_seen: Family::default(),
            agent_config_status: Family::default(),
            batches: Family::default(),
            samples: Family::default(),
            auth_failures: Family::default(),
        };
        reg.register("agents_connected", "Agent streams currently open", ingest.agents_connected.clone());
        reg.register(
            "agent_last_seen_timestamp_seconds",
            "Unix time of the last message from each agent",
            ingest.agent_last_seen.clone(),
        );
        reg.register(
            "agent_config_status",
            "Each agent's central config status (applied, rejected, pending): 1 for its current one",
            ingest.agent_config_status.clone(),
        );
        reg.register(
            "ingest_batches",
            "Agent batches by commons and result (acked, duplicate, nacked)",
            ingest.batches.clone(),
        );
        reg.register("ingest_samples", "Samples stored from agents, by commons", ingest.samples.clone());
        reg.register(
            "ingest_refused_streams",
            "Agent streams refused, by reason",
            ingest.auth_failures.clone(),
        );
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])),
            refused: Family::default(),
        };
        reg.register(
            "http_refused_requests",
            "HTTP API requests refused by API token checks, by reason (unauthorized, forbidden)",
            http.refused.clone(),
        );
        reg.register("http_requests", "HTTP requests by handler and status code", http.requests.clone());
        reg.register_with_unit(
            "http_request_duration",
            "HTTP request latency by handler",
            Unit::Seconds,
            http.duration.clone(),
        );
        CollectorMetrics { ingest, http }
    }
}
