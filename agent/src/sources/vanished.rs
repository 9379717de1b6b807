//! Staleness markers for the periodic backend sources (`elasticsearch`,
//! `postgres`): a series sent in one round and absent from the next (an
//! index gone red, a database unreachable) gets Prometheus's staleness
//! marker, so it ends at once at the collector instead of lingering for the
//! lookback window.

use std::collections::HashSet;

use crate::model::{Frame, Labels, Sample};

/// The series of a source's last frame.
#[derive(Debug, Default)]
pub struct Vanished {
    last: HashSet<Labels>,
}

impl Vanished {
    /// Adds a staleness marker at `ts` to `frame` for each series of the
    /// previous frame that `frame` lacks, and remembers `frame`'s series.
    pub fn mark(&mut self, frame: &mut Frame, ts: i64) {
        let now: HashSet<Labels> = frame.samples.iter().map(|s| s.labels.clone()).collect();
        let mut gone: Vec<&Labels> = self.last.difference(&now).collect();
        gone.sort();
        for l in gone {
            frame.samples.push(Sample {
                labels: l.clone(),
                timestamp_ms: ts,
                value: f64::from_bits(csoc_proto::STALE_NAN_BITS),
            });
        }
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_series_gets_one_marker() {
        let mut v = Vanished::default();
        let mut f = Frame::new("t");
        f.push("a", &[("x", "1")], 1, 1.0);
        f.push("b", &[], 1, 2.0);
        v.mark(&mut f, 1);
        assert_eq!(f.samples.len(), 2);
        let mut f = Frame::new("t");
        f.push("b", &[], 2, 2.0);
        v.mark(&mut f, 2);
        assert_eq!(f.samples.len(), 2);
        let marker = &f.samples[1];
        assert_eq!(marker.labels[0], ("__name__".to_string(), "a".to_string()));
        assert_eq!(marker.value.to_bits(), csoc_proto::STALE_NAN_BITS);
        let mut f = Frame::new("t");
        f.push("b", &[], 3, 2.0);
        v.mark(&mut f, 3);
        assert_eq!(f.samples.len(), 1, "marked once");
    }
}
