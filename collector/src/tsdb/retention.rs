//! Retention policy as plain functions: what is too old, and how much is
//! over the size limit. The writer applies them, deleting whole chunks.

use std::time::Duration;

/// Retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep chunks whose newest sample is younger than this.
    pub age: Duration,
    /// Keep the database under this many bytes (0: no limit).
    pub size_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            age: Duration::from_secs(15 * 86_400),
            size_bytes: 0,
        }
    }
}

/// Chunks ending before the returned time (ms) are beyond the age limit.
pub fn age_cutoff(now_ms: i64, age: Duration) -> i64 {
    now_ms.saturating_sub(age.as_millis().min(i64::MAX as u128) as i64)
}

/// Bytes over the size limit (0 when within it or unlimited).
pub fn size_excess(used_bytes: u64, limit: u64) -> u64 {
    if limit == 0 { 0 } else { used_bytes.saturating_sub(limit) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs() {
        assert_eq!(age_cutoff(100_000, Duration::from_secs(30)), 70_000);
        assert_eq!(age_cutoff(0, Duration::from_secs(u64::MAX)), -i64::MAX, "saturates");
        assert_eq!(size_excess(150, 100), 50);
        assert_eq!(size_excess(50, 100), 0);
        assert_eq!(size_excess(u64::MAX, 0), 0, "0 means no limit");
    }
}
