//! Random numbers and retry backoff, for reconnecting agents, notification
//! retries and remote-write queues.

use std::time::Duration;

/// A random u64 from the operating system's generator.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Fall back to the clock: only used for jitter, tokens of the
        // in-process agent and spool epochs, where uniqueness per machine is
        // enough.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64 ^ (std::process::id() as u64) << 32;
    }
    u64::from_le_bytes(b)
}

/// Exponential backoff with jitter: `base * 2^attempt`, capped at `max`, then
/// a random factor in [0.5, 1.0] so that a fleet of agents does not reconnect
/// in lock-step after a collector restart.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(max);
    let frac = 0.5 + (random_u64() % 1000) as f64 / 2000.0;
    capped.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            let b0 = backoff(0, base, max);
            assert!(b0 >= Duration::from_millis(500) && b0 <= base);
            let b3 = backoff(3, base, max);
            assert!(b3 >= Duration::from_secs(4) && b3 <= Duration::from_secs(8));
            assert!(backoff(30, base, max) <= max);
        }
    }
}
