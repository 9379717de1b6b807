//! The pipeline: takes the sources' frames, stamps the agent's labels
//! (external labels, a default `instance`) and turns each frame into
//! self-contained spool batches.

use std::collections::HashMap;

use csoc_proto::v1::{Label, MetricMetadata, MetricType, SeriesDef, WriteBatch};

use crate::model::{Frame, MetricKind, has_label, set_label};

/// Largest number of samples in one batch; larger frames are split.
pub const MAX_BATCH_SAMPLES: usize = 10_000;

/// Label stamping and batch encoding.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Added to every series that does not already have the label (as
    /// Prometheus's external labels).
    pub external_labels: Vec<(String, String)>,
    /// Default `instance` label (the agent's name) when a source set none.
    pub instance: String,
    /// Applied to every sample after stamping (`relabel_configs`).
    pub relabel: Vec<csoc_common::relabel::RelabelConfig>,
}

impl Pipeline {
    /// The pipeline of an agent named `agent_name` with `cfg`'s external
    /// labels.
    pub fn new(cfg: &crate::config::AgentConfig, agent_name: &str) -> Self {
        Pipeline {
            external_labels: cfg.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            instance: agent_name.to_string(),
            relabel: cfg.relabel_configs.clone(),
        }
    }

    /// Stamps the external labels and the default `instance` on every
    /// sample of `frame` (labels a sample already has are kept), then applies
    /// `relabel_configs`, dropping the samples they drop or leave without a
    /// metric name.
    pub fn stamp(&self, frame: &mut Frame) {
        frame.samples.retain_mut(|s| {
            for (k, v) in &self.external_labels {
                if !has_label(&s.labels, k) {
                    set_label(&mut s.labels, k, v);
                }
            }
            if !has_label(&s.labels, "instance") {
                set_label(&mut s.labels, "instance", &self.instance);
            }
            self.relabel.is_empty() || (csoc_common::relabel::relabel(&mut s.labels, &self.relabel) && has_label(&s.labels, "__name__"))
        });
    }

    /// Stamps labels and encodes `frame` into batches of at most
    /// [`MAX_BATCH_SAMPLES`] samples (without seq: the spool assigns it).
    pub fn encode(&self, mut frame: Frame) -> Vec<WriteBatch> {
        self.stamp(&mut frame);
        let metadata: Vec<MetricMetadata> = frame
            .metadata
            .iter()
            .map(|m| MetricMetadata {
                metric_family_name: m.name.clone(),
                r#type: match m.kind {
                    MetricKind::Counter => MetricType::Counter,
                    MetricKind::Gauge => MetricType::Gauge,
                    MetricKind::Histogram => MetricType::Histogram,
                    MetricKind::GaugeHistogram => MetricType::GaugeHistogram,
                    MetricKind::Summary => MetricType::Summary,
                    MetricKind::Info => MetricType::Info,
                    MetricKind::StateSet => MetricType::Stateset,
                    MetricKind::Unknown => MetricType::Unknown,
                } as i32,
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect();
        let mut out = Vec::new();
        let mut hasher = csoc_common::labels::LabelsHasher::default();
        let mut samples = frame.samples.into_iter().peekable();
        let mut i = 0usize;
        while samples.peek().is_some() {
            let mut b = WriteBatch {
                metadata: if i == 0 { metadata.clone() } else { Vec::new() },
                ..Default::default()
            };
            i += 1;
            // Label-set hash -> refs with that hash (almost always one). The
            // labels move into the batch's series definitions, not copied.
            let mut refs: HashMap<u64, Vec<u64>> = HashMap::new();
            for s in samples.by_ref().take(MAX_BATCH_SAMPLES) {
                let h = hasher.labels(&s.labels);
                let same = |r: &u64| {
                    let def = &b.new_series[*r as usize].labels;
                    def.len() == s.labels.len() && def.iter().zip(&s.labels).all(|(l, (n, v))| l.name == *n && l.value == *v)
                };
                let r = match refs.get(&h).and_then(|rs| rs.iter().find(|r| same(r))) {
                    Some(r) => *r,
                    None => {
                        let r = b.new_series.len() as u64;
                        refs.entry(h).or_default().push(r);
                        b.new_series.push(SeriesDef {
                            r#ref: r,
                            labels: s.labels.into_iter().map(|(name, value)| Label { name, value }).collect(),
                        });
                        r
                    }
                };
                b.refs.push(r);
                b.timestamps_ms.push(s.timestamp_ms);
                b.values.push(s.value);
            }
            out.push(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_labels_without_overriding_and_dedups_refs() {
        let p = Pipeline {
            external_labels: vec![("environment".into(), "prod".into()), ("job".into(), "ignored".into())],
            instance: "host-1".into(),
            relabel: Vec::new(),
        };
        let mut f = Frame::new("t");
        f.meta("m_total", MetricKind::Counter, "help", "");
        f.push("m_total", &[("job", "node")], 1, 1.0);
        f.push("m_total", &[("job", "node")], 2, 2.0);
        f.push("m_total", &[("job", "node"), ("instance", "x")], 2, 3.0);
        let b = p.encode(f);
        assert_eq!(b.len(), 1);
        let b = &b[0];
        assert_eq!(b.new_series.len(), 2);
        assert_eq!(b.refs, vec![0, 0, 1]);
        let l0: Vec<(&str, &str)> = b.new_series[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(
            l0,
            [
                ("__name__", "m_total"),
                ("environment", "prod"),
                ("instance", "host-1"),
                ("job", "node")
            ]
        );
        assert!(b.new_series[1].labels.iter().any(|l| l.name == "instance" && l.value == "x"));
        assert_eq!(b.metadata[0].r#type, MetricType::Counter as i32);
    }

    #[test]
    fn relabel_configs_rewrite_and_drop_samples() {
        let cfg: crate::config::AgentConfig = crate::config::AgentConfig::from_yaml(
            "relabel_configs:\n  - {source_labels: [__name__], regex: 'go_.*', action: drop}\n  - {source_labels: [instance], target_label: node, regex: '(.*):\\d+', replacement: $1}\n  - {regex: job, action: labeldrop}\n",
            std::path::Path::new("a.yml"),
        )
        .expect("valid config");
        let p = Pipeline::new(&cfg, "host-1");
        let mut f = Frame::new("t");
        f.push("go_goroutines", &[("job", "x")], 1, 1.0);
        f.push("up", &[("job", "x"), ("instance", "10.0.0.1:9100")], 1, 1.0);
        p.stamp(&mut f);
        assert_eq!(f.samples.len(), 1, "go_* dropped");
        let l: Vec<(&str, &str)> = f.samples[0].labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(l, [("__name__", "up"), ("instance", "10.0.0.1:9100"), ("node", "10.0.0.1")]);
    }

    #[test]
    fn large_frames_are_split() {
        let p = Pipeline {
            external_labels: vec![],
            instance: "i".into(),
            relabel: Vec::new(),
        };
        let mut f = Frame::new("t");
        for i in 0..(MAX_BATCH_SAMPLES + 5) {
            f.push("m", &[("i", &i.to_string())], 1, 1.0);
        }
        let b = p.encode(f);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].refs.len(), 5);
        assert_eq!(b[1].new_series.len(), 5, "each batch is self-contained");
    }
}
