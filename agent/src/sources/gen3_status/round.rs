//! One round of probes: every target concurrently, and the frame they make.

use std::time::Duration;

use super::Gen3StatusSource;
use super::probe::{ProbeOutcome, probe};
use crate::model::{Frame, MetricKind};

/// One round of probes.
#[derive(Debug, Default)]
pub struct Round {
    /// The frame to emit.
    pub frame: Frame,
    /// Every probe's outcome, in target order.
    pub outcomes: Vec<ProbeOutcome>,
    /// Why the certificate expiry is missing (https only).
    pub cert_error: Option<String>,
}

impl Gen3StatusSource {
    /// Probes every target once, concurrently, each request within
    /// `timeout`, and builds the frame.
    pub async fn collect(&self, source: &str, timeout: Duration) -> Round {
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let client = self.client.clone();
            let t = t.clone();
            set.spawn(async move { (i, probe(client, t, timeout).await) });
        }
        let mut results: Vec<Option<(ProbeOutcome, Option<Vec<u8>>)>> = vec![None; self.targets.len()];
        while let Some(r) = set.join_next().await {
            match r {
                Ok((i, res)) => results[i] = Some(res),
                Err(e) => tracing::error!(source, error = %e, "gen3_status probe task failed"),
            }
        }
        let mut round = Round {
            frame: Frame::new(source),
            ..Default::default()
        };
        let f = &mut round.frame;
        let job = self.job.as_str();
        f.meta(
            "gen3_service_up",
            MetricKind::Gauge,
            "1 if the Gen3 service's health endpoint answered as a healthy service does (2xx, not an HTML page), else 0.",
            "",
        );
        f.meta(
            "gen3_probe_duration_seconds",
            MetricKind::Gauge,
            "Duration of the health probe of the Gen3 service.",
            "seconds",
        );
        f.meta(
            "gen3_probe_http_status_code",
            MetricKind::Gauge,
            "HTTP status of the health probe of the Gen3 service; 0 when there was no HTTP answer.",
            "",
        );
        f.meta(
            "gen3_service_info",
            MetricKind::Gauge,
            "Version and commit the Gen3 service reports at its version endpoint.",
            "",
        );
        let mut cert_der = None;
        for (res, t) in results.into_iter().zip(&self.targets) {
            let (o, cert) = match res {
                Some(r) => r,
                None => (
                    ProbeOutcome {
                        service: t.service.clone(),
                        up: false,
                        status: 0,
                        duration: timeout.as_secs_f64(),
                        ts_ms: csoc_common::time::now_ms(),
                        error: Some(("request", "probe task failed".into())),
                        version: None,
                        version_error: None,
                    },
                    None,
                ),
            };
            if cert_der.is_none() {
                cert_der = cert;
            }
            let l = [("job", job), ("service", o.service.as_str())];
            f.push("gen3_service_up", &l, o.ts_ms, if o.up { 1.0 } else { 0.0 });
            f.push("gen3_probe_duration_seconds", &l, o.ts_ms, o.duration);
            f.push("gen3_probe_http_status_code", &l, o.ts_ms, f64::from(o.status));
            if let Some((v, c, ts)) = &o.version {
                let mut il = vec![("job", job), ("service", o.service.as_str()), ("version", v.as_str())];
                if let Some(c) = c {
                    il.push(("commit", c.as_str()));
                }
                f.push("gen3_service_info", &il, *ts, 1.0);
            }
            round.outcomes.push(o);
        }
        if let Some(cp) = &self.cert {
            match cp.expiry(cert_der, timeout).await {
                Ok((not_after, ts)) => {
                    f.meta(
                        "gen3_tls_cert_expiry_timestamp_seconds",
                        MetricKind::Gauge,
                        "Expiry (notAfter) of the TLS certificate the commons' base URL presents.",
                        "seconds",
                    );
                    f.push(
                        "gen3_tls_cert_expiry_timestamp_seconds",
                        &[("job", job), ("host", cp.host.as_str())],
                        ts,
                        not_after as f64,
                    );
                }
                Err(e) => round.cert_error = Some(e),
            }
        }
        round
    }
}
