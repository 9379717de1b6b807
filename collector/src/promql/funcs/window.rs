//! The windowing under every function over a range vector: one window per
//! series and step, found with a sliding cursor pair, and large inputs split
//! by series over the machine's cores.

use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Ms, RangeData, Steps, Sv};

/// The window context of one step of a function over a range vector.
pub(in crate::promql) struct Win<'a> {
    pub samples: &'a [(i64, f64)],
    pub range_start: i64,
    pub range_end: i64,
    pub range_secs: f64,
    /// The step's own time (ms).
    pub ts: i64,
    pub step: usize,
    /// Which series of the range data, and where the window starts in its
    /// samples (for functions that keep per-series state across steps).
    pub series: usize,
    pub offset: usize,
}

/// Applies a window function to every series at every step. Large inputs
/// are split by series over the machine's cores (as VictoriaMetrics does;
/// Prometheus evaluates on one): `make` gives each worker its own function,
/// so functions may keep per-series state.
pub(super) fn over_range<F, M>(cx: &mut Ctx<'_>, rd: &RangeData, steps: Steps, keep_name: bool, make: M) -> Result<Vec<Sv>, EvalError>
where
    M: Fn() -> F + Sync,
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let n = steps.len();
    // Most functions look at every sample of every window, and a sample is
    // in about range / step windows (`avg_over_time(x[10m])` at a 60 s step:
    // ten), so the work is counted in sample visits: a query over few
    // series but long windows is split too.
    let samples: usize = rd.series.iter().map(|s| s.samples.len()).sum();
    let per_sample = (rd.range / steps.step.max(1)).clamp(1, n.max(1) as i64) as usize;
    let work = samples.saturating_mul(per_sample) + rd.series.len() * n;
    let threads = if work >= PARALLEL_WORK && rd.series.len() > 1 {
        std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(8)
            .min(rd.series.len())
    } else {
        1
    };
    let deadline = cx.deadline;
    let run = |from: usize, to: usize| -> Result<Vec<Sv>, EvalError> {
        let mut f = make();
        let mut out = Vec::with_capacity(to - from);
        for si in from..to {
            let s = &rd.series[si];
            if si % 64 == 0 && std::time::Instant::now() > deadline {
                return Err(EvalError::Timeout(crate::promql::eval::TIMED_OUT.into()));
            }
            if let Some(sv) = window_series(rd, si, s, steps, keep_name, deadline, &mut f)? {
                out.push(sv);
            }
        }
        Ok(out)
    };
    let out: Vec<Sv> = if threads <= 1 {
        run(0, rd.series.len())?
    } else {
        let per = rd.series.len().div_ceil(threads);
        let parts: Vec<Result<Vec<Sv>, EvalError>> = std::thread::scope(|sc| {
            let run = &run;
            let handles: Vec<_> = (0..threads)
                .map(|k| {
                    let (from, to) = (k * per, ((k + 1) * per).min(rd.series.len()));
                    sc.spawn(move || run(from, to))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(EvalError::Execution("a query worker panicked".into())))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(rd.series.len());
        for p in parts {
            out.extend(p?);
        }
        out
    };
    cx.account(out.iter().map(|s| s.pts.len()).sum())?;
    Ok(out)
}

/// Work (sample visits plus series × steps) from which `over_range` uses
/// every core.
const PARALLEL_WORK: usize = 400_000;

/// One series of [`over_range`].
fn window_series<F>(
    rd: &RangeData,
    si: usize,
    s: &Ms,
    steps: Steps,
    keep_name: bool,
    deadline: std::time::Instant,
    f: &mut F,
) -> Result<Option<Sv>, EvalError>
where
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let n = steps.len();
    let mut pts = Vec::with_capacity(n.min(s.samples.len() + 1));
    // A sliding window: the steps' window ends only move forward (with
    // `@` they stay put), so two cursors find each window in O(1).
    let samples = &s.samples;
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut prev_te = i64::MIN;
    for i in 0..n {
        if i % 65_536 == 65_535 && std::time::Instant::now() > deadline {
            return Err(EvalError::Timeout(crate::promql::eval::TIMED_OUT.into()));
        }
        let te = rd.te[i];
        if te < prev_te {
            lo = 0;
            hi = 0;
        }
        prev_te = te;
        while hi < samples.len() && samples[hi].0 <= te {
            hi += 1;
        }
        while lo < hi && samples[lo].0 <= te - rd.range {
            lo += 1;
        }
        let w = &samples[lo..hi];
        if w.is_empty() {
            continue;
        }
        let win = Win {
            samples: w,
            range_start: te - rd.range,
            range_end: te,
            range_secs: rd.range as f64 / 1000.0,
            ts: steps.ts(i),
            step: i,
            series: si,
            offset: lo,
        };
        if let Some(v) = f(&win)? {
            pts.push((i as u32, v));
        }
    }
    Ok((!pts.is_empty()).then(|| Sv {
        labels: s.labels.clone(),
        drop_name: s.drop_name || !keep_name,
        pts,
    }))
}
