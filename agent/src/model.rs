//! The agent's in-memory data model: samples grouped into frames, as sources
//! produce them and the pipeline passes them on.

pub use csoc_common::labels::{Labels, Metadata, MetricKind, has_label, set_label, sort_labels};

/// One sample of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sorted label set including `__name__`.
    pub labels: Labels,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value (a staleness marker is the special NaN of `csoc_proto`).
    pub value: f64,
}

/// What one collection of one source produced.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// Name of the source that produced the frame.
    pub source: String,
    /// The samples.
    pub samples: Vec<Sample>,
    /// Metadata of the families in `samples`.
    pub metadata: Vec<Metadata>,
}

impl Frame {
    /// An empty frame for `source`.
    pub fn new(source: &str) -> Self {
        Frame {
            source: source.to_string(),
            ..Default::default()
        }
    }

    /// Declares a family's metadata.
    pub fn meta(&mut self, name: &str, kind: MetricKind, help: &str, unit: &str) {
        self.metadata.push(Metadata {
            name: name.to_string(),
            kind,
            help: help.to_string(),
            unit: unit.to_string(),
        });
    }

    /// Adds a sample; `labels` need not be sorted and must not include
    /// `__name__`.
    pub fn push(&mut self, name: &str, labels: &[(&str, &str)], ts: i64, value: f64) {
        let mut l: Labels = Vec::with_capacity(labels.len() + 1);
        l.push(("__name__".to_string(), name.to_string()));
        for (k, v) in labels {
            l.push(((*k).to_string(), (*v).to_string()));
        }
        sort_labels(&mut l);
        self.samples.push(Sample {
            labels: l,
            timestamp_ms: ts,
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_sorts_labels_and_set_label_keeps_order() {
        let mut f = Frame::new("t");
        f.push("m", &[("z", "1"), ("a", "2")], 1, 1.0);
        let l = &mut f.samples[0].labels;
        assert_eq!(l[0].0, "__name__");
        assert_eq!(l[1].0, "a");
        assert_eq!(l[2].0, "z");
        set_label(l, "job", "node");
        set_label(l, "a", "3");
        let names: Vec<_> = l.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "job", "z"]);
        assert_eq!(l[1].1, "3");
        assert!(has_label(l, "job"));
        assert!(!has_label(l, "instance"));
    }
}
