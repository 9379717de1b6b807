//! The agent's own metrics (`csoc_agent_*`), served on its `/metrics`.
//! One struct per component, registered into a registry passed in (no
//! globals), so tests build their own.

use csoc_common::labels::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Counters every source updates.
#[derive(Clone, Default)]
pub struct SourceMetrics {
    samples: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
}

impl SourceMetrics {
    /// Counts `n` samples produced by `source`.
    pub fn record_samples(&self, source: &str, n: u64) {
        self.samples.get_or_create(&vec![("source".into(), source.into())]).inc_by(n);
    }

    /// Counts one failed collection of `source`.
    pub fn record_error(&self, source: &str, kind: &str) {
        self.errors
            .get_or_create(&vec![("source".into(), source.into()), ("kind".into(), kind.into())])
            .inc();
    }

    /// Samples counted so far for `source`.
    pub fn samples_for(&self, source: &str) -> u64 {
        self.samples.get_or_create(&vec![("source".into(), source.into())]).get()
    }
}

/// Metrics of the shipper and the spool.
#[derive(Clone)]
pub struct ShipperMetrics {
    /// Batches written to the collector's stream.
    pub batches_sent: Counter,
    /// Batches the collector acknowledged as durably stored.
    pub batches_acked: Counter,
    /// Samples in acknowledged batches.
    pub samples_acked: Counter,
    /// Batches the collector rejected, by code.
    pub batches_nacked: Family<Labels, Counter>,
    /// Connection attempts.
    pub connect_attempts: Counter,
    /// Failed connection attempts or broken streams, by reason.
    pub connect_failures: Family<Labels, Counter>,
    /// 1 while a stream to the collector is up.
    pub connected: Gauge,
    /// Batches waiting in the spool (not yet acknowledged).
    pub spool_batches: Gauge,
    /// Bytes of the spool on disk.
    pub spool_bytes: Gauge,
    /// The spool's size limit (`spool_max_bytes`).
    pub spool_max_bytes: Gauge,
    /// Batches dropped because the spool was full (oldest first).
    pub spool_dropped_batches: Counter,
    /// Samples in batches dropped because the spool was full.
    pub spool_dropped_samples: Counter,
    /// Samples written to the spool (everything collected, for delivery).
    pub spooled_samples: Counter,
    /// Time from sending a batch to its Ack.
    pub ack_latency: Histogram,
}

impl ShipperMetrics {
    /// Counts one rejected batch.
    pub fn nacked(&self, code: &str) {
        self.batches_nacked.get_or_create(&vec![("code".into(), code.into())]).inc();
    }

    /// Counts one failed connection, by reason.
    pub fn connect_failed(&self, reason: &str) {
        self.connect_failures.get_or_create(&vec![("reason".into(), reason.into())]).inc();
    }
}

/// Central config and reloads (cfgpush).
#[derive(Clone, Default)]
pub struct ConfigMetrics {
    /// The central config version running (0: none, the local file alone).
    pub version: Gauge,
    /// 1 when the last push or reload applied, 0 when it was rejected.
    pub last_reload_successful: Gauge,
}

/// All the agent's metrics.
#[derive(Clone)]
pub struct AgentMetrics {
    /// Per-source counters.
    pub source: SourceMetrics,
    /// Shipper and spool.
    pub shipper: ShipperMetrics,
    /// Central config and reloads.
    pub config: ConfigMetrics,
}

impl AgentMetrics {
    /// Creates the metrics and registers them in `reg` under `csoc_agent_`.
    pub fn new(reg: &mut Registry) -> Self {
        let reg = reg.sub_registry_with_prefix("csoc_agent");
        reg.register("build", "Agent build information", csoc_common::build::info());
        let source = SourceMetrics::default();
        reg.register("source_samples", "Samples produced by each source", source.samples.clone());
        reg.register("source_errors", "Failed collections of each source, by kind", source.errors.clone());
        let shipper = ShipperMetrics {
            batches_sent: Counter::default(),
            batches_acked: Counter::default(),
            samples_acked: Counter::default(),
            batches_nacked: Family::default(),
            connect_attempts: Counter::default(),
            connect_failures: Family::default(),
            connected: Gauge::default(),
            spool_batches: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_max_bytes: Gauge::default(),
            spool_dropped_batches: Counter::default(),
            spool_dropped_samples: Counter::default(),
            spooled_samples: Counter::default(),
            ack_latency: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        };
        reg.register(
            "batches_sent",
            "Batches written to the collector stream",
            shipper.batches_sent.clone(),
        );
        reg.register(
            "batches_acked",
            "Batches acknowledged by the collector as durably stored",
            shipper.batches_acked.clone(),
        );
        reg.register(
            "samples_acked",
            "Samples in batches acknowledged by the collector",
            shipper.samples_acked.clone(),
        );
        reg.register(
            "batches_nacked",
            "Batches rejected by the collector, by code",
            shipper.batches_nacked.clone(),
        );
        reg.register(
            "connect_attempts",
            "Attempts to open a stream to the collector",
            shipper.connect_attempts.clone(),
        );
        reg.register(
            "connect_failures",
            "Failed or broken collector streams, by reason",
            shipper.connect_failures.clone(),
        );
        reg.register(
            "connected",
            "1 while a stream to the collector is established",
            shipper.connected.clone(),
        );
        reg.register(
            "spool_batches",
            "Batches in the spool waiting for an acknowledgement",
            shipper.spool_batches.clone(),
        );
        reg.register_with_unit(
            "spool_size",
            "Size of the spool on disk",
            prometheus_client::registry::Unit::Bytes,
            shipper.spool_bytes.clone(),
        );
        reg.register_with_unit(
            "spool_max_size",
            "The spool's size limit (spool_max_bytes): beyond it the oldest batches are dropped",
            prometheus_client::registry::Unit::Bytes,
            shipper.spool_max_bytes.clone(),
        );
        reg.register(
            "spool_dropped_batches",
            "Batches dropped, oldest first, because the spool was full",
            shipper.spool_dropped_batches.clone(),
        );
        reg.register(
            "spool_dropped_samples",
            "Samples in batches dropped because the spool was full",
            shipper.spool_dropped_samples.clone(),
        );
        reg.register(
            "spooled_samples",
            "Samples written to the spool for delivery (every sample collected)",
            shipper.spooled_samples.clone(),
        );
        reg.register_with_unit(
            "ack_latency",
            "Time from sending a batch to the collector's acknowledgement",
            prometheus_client::registry::Unit::Seconds,
            shipper.ack_latency.clone(),
        );
        // --- central config (cfgpush) ---
        let config = ConfigMetrics::default();
        reg.register(
            "config_version",
            "Version of the central config the agent runs (0: none, the local file alone)",
            config.version.clone(),
        );
        reg.register(
            "config_last_reload_successful",
            "1 if the last central config push or local reload was applied, 0 if it was rejected",
            config.last_reload_successful.clone(),
        );
        AgentMetrics { source, shipper, config }
    }
}
