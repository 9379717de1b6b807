//! Sources: each gathers one kind of data and sends [`Frame`]s into the
//! pipeline. One module per source, each with its own documented config.
//!
//! Every source runs as one task (`Source::run`) until the shutdown token is
//! cancelled, and reports what it did through [`SourceMetrics`] (samples
//! produced and errors, labelled by source), which the agent's `/metrics`
//! exposes as `csoc_agent_source_samples_total` and
//! `csoc_agent_source_errors_total`.

// Backends of the Gen3 services (issue 21): elasticsearch, postgres.
pub mod elasticsearch;
pub mod postgres;
pub mod vanished;

pub mod gen3_http;
pub mod gen3_status;
pub mod gen3_usage;
pub mod host;
pub mod kubernetes;
pub mod pod_logs;
pub mod revproxy_log;
pub mod scrape;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::SourceMetrics;
use crate::model::Frame;

/// A boxed future, as returned by [`Source::run`].
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running source of samples.
pub trait Source: Send + 'static {
    /// Runs until `cx.shutdown` is cancelled, sending frames to `cx.out`.
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture;
}

/// What the agent hands each source.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name (used in logs and metric labels).
    pub name: String,
    /// Cancelled when the agent shuts down.
    pub shutdown: CancellationToken,
    /// Where frames go.
    pub out: mpsc::Sender<Frame>,
    /// Collection interval (for periodic sources).
    pub interval: Duration,
    /// Counters every source must update.
    pub metrics: SourceMetrics,
}

impl SourceContext {
    /// A context for tests: returns the receiving end of the pipeline too.
    pub fn for_test(name: &str, interval: Duration) -> (Self, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(16);
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = crate::metrics::AgentMetrics::new(&mut reg);
        (
            SourceContext {
                name: name.to_string(),
                shutdown: CancellationToken::new(),
                out: tx,
                interval,
                metrics: metrics.source,
            },
            rx,
        )
    }

    /// Records a successful collection and forwards the frame. Returns false
    /// when the pipeline is gone (the agent is stopping).
    pub async fn emit(&self, frame: Frame) -> bool {
        self.metrics.record_samples(&self.name, frame.samples.len() as u64);
        self.out.send(frame).await.is_ok()
    }

    /// Records a failed collection.
    pub fn error(&self, kind: &str) {
        self.metrics.record_error(&self.name, kind);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Compliance check shared by the sources' tests (after Vector's
    //! `run_and_assert_source_compliance`): a source must emit samples and
    //! count them.
    use super::*;

    /// Runs `source` until it has emitted one frame, then checks that the
    /// sample counter moved by exactly the frame's size.
    pub async fn run_and_assert_source_compliance(source: Box<dyn Source>, name: &str) -> Frame {
        let (cx, mut rx) = SourceContext::for_test(name, Duration::from_millis(50));
        let metrics = cx.metrics.clone();
        let shutdown = cx.shutdown.clone();
        let task = tokio::spawn(source.run(cx));
        let frame = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("source emitted nothing within 10s")
            .expect("source closed the pipeline");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("source did not stop on shutdown")
            .expect("source task panicked");
        assert!(!frame.samples.is_empty(), "source {name} emitted an empty frame");
        // Everything emitted before the shutdown was counted.
        let mut total = frame.samples.len() as u64;
        while let Ok(f) = rx.try_recv() {
            total += f.samples.len() as u64;
        }
        assert_eq!(metrics.samples_for(name), total, "samples counter of {name}");
        frame
    }
}
