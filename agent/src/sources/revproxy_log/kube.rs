//! Kubernetes mode (`sources.revproxy_log.kubernetes` or
//! `--revproxy-log-pods SELECTOR`): revproxy's access log read through
//! `pods/log` of every pod the selector matches, with the follower of
//! [`crate::sources::pod_logs`]: new pods picked up from the pod watch,
//! deleted ones drained, every replica counted into the same counters, and
//! exact resume from the per-stream cursors saved with the counters in the
//! source's state file (`pods`). The API server strips the CRI framing, so
//! lines are nginx's own (the `json` format).

use k8s_openapi::api::core::v1::Pod;

use super::parse;
use super::stats::{Counters, Limits};
use crate::sources::pod_logs::LogSink;

/// Counts revproxy's lines into [`Counters`].
pub struct RevproxySink {
    /// The counters.
    pub counters: Counters,
    limits: Limits,
    container: Option<String>,
    scratch: Vec<u8>,
}

impl RevproxySink {
    /// A sink over `counters`; `container` restricts the followed container.
    pub fn new(counters: Counters, limits: Limits, container: Option<String>) -> Self {
        RevproxySink {
            counters,
            limits,
            container,
            scratch: Vec::new(),
        }
    }
}

impl LogSink for RevproxySink {
    type Route = ();

    fn routes(&mut self, pod: &Pod) -> Vec<(String, ())> {
        pod.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter(|c| self.container.as_deref().is_none_or(|w| w == c.name))
            .map(|c| (c.name.clone(), ()))
            .collect()
    }

    fn line(&mut self, _route: &(), content: &[u8], too_long: bool) {
        if too_long {
            self.counters.line("too_long");
            return;
        }
        let mut tmp = std::mem::take(&mut self.scratch);
        match parse::parse_line(content, &mut tmp) {
            Ok(r) => {
                self.counters.record(&r, self.limits);
                self.counters.line("ok");
            }
            Err(parse::Bad::Malformed) => self.counters.line("malformed"),
        }
        tmp.clear();
        self.scratch = tmp;
    }
}
