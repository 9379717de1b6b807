//! The windowing under every function over a range vector: one window per
//! series and step, found with a sliding cursor pair, and large inputs split
//! by series over the machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::promql::EvalError;
use crate::promql::eval::{Ctx, RangeData, Steps, Sv, too_many_samples};
use crate::tsdb::{Labels, LazySelection, SeriesReader};

/// The window context of one step of a function over a range vector.
pub(in crate::promql) struct Win<'a> {
    pub samples: &'a [(i64, f64)],
    /// Every sample of the series (`samples` is `all[offset..]`), for
    /// functions that keep per-series state across steps.
    pub all: &'a [(i64, f64)],
    pub range_start: i64,
    pub range_end: i64,
    pub range_secs: f64,
    /// The step's own time (ms).
    pub ts: i64,
    pub step: usize,
    /// Which series of the range data, and where the window starts in its
    /// samples.
    pub series: usize,
    pub offset: usize,
}

/// Applies a window function to every series at every step. Large inputs
/// are split by series over the machine's cores (as VictoriaMetrics does;
/// Prometheus evaluates on one): `make` gives each worker its own function,
/// so functions may keep per-series state. Series of a lazy selection are
/// read by the workers themselves, one at a time, into a buffer each.
pub(super) fn over_range<F, M>(cx: &mut Ctx<'_>, rd: &RangeData<'_>, steps: Steps, keep_name: bool, make: M) -> Result<Vec<Sv>, EvalError>
where
    M: Fn() -> F + Sync,
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let out = match &rd.lazy {
        Some(lazy) => over_lazy(cx, rd, lazy.as_ref(), steps, keep_name, &make)?,
        None => over_read(cx, rd, steps, keep_name, &make)?,
    };
    cx.account(out.iter().map(|s| s.pts.len()).sum())?;
    Ok(out)
}

/// A sample is in about range / step windows (`avg_over_time(x[10m])` at a
/// 60 s step: ten), and most functions look at every sample of a window.
fn visits_per_sample(rd: &RangeData<'_>, steps: Steps) -> usize {
    (rd.range / steps.step.max(1)).clamp(1, steps.len().max(1) as i64) as usize
}

/// How many threads for `work` (sample visits plus series × steps) over
/// `series` series.
fn threads_for(work: usize, series: usize) -> usize {
    if work >= PARALLEL_WORK && series > 1 {
        std::thread::available_parallelism().map_or(1, |p| p.get()).min(8).min(series)
    } else {
        1
    }
}

/// Runs `run(from, to)` over `0..len` split into `threads` contiguous parts
/// (the first on this thread), results in order.
fn split<R>(len: usize, threads: usize, run: R) -> Result<Vec<Sv>, EvalError>
where
    R: Fn(usize, usize) -> Result<Vec<Sv>, EvalError> + Sync,
{
    if threads <= 1 {
        return run(0, len);
    }
    let per = len.div_ceil(threads);
    let parts: Vec<Result<Vec<Sv>, EvalError>> = std::thread::scope(|sc| {
        let run = &run;
        let handles: Vec<_> = (1..threads)
            .map(|k| {
                let (from, to) = ((k * per).min(len), ((k + 1) * per).min(len));
                sc.spawn(move || run(from, to))
            })
            .collect();
        let mut parts = vec![run(0, per.min(len))];
        parts.extend(handles.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(EvalError::Execution("a query worker panicked".into())))
        }));
        parts
    });
    let mut out = Vec::with_capacity(len);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

fn timed_out() -> EvalError {
    EvalError::Timeout(crate::promql::eval::TIMED_OUT.into())
}

/// [`over_range`] over series already read.
fn over_read<F, M>(cx: &Ctx<'_>, rd: &RangeData<'_>, steps: Steps, keep_name: bool, make: &M) -> Result<Vec<Sv>, EvalError>
where
    M: Fn() -> F + Sync,
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let samples: usize = rd.series.iter().map(|s| s.samples.len()).sum();
    let work = samples.saturating_mul(visits_per_sample(rd, steps)) + rd.series.len() * steps.len();
    let deadline = cx.deadline;
    split(rd.series.len(), threads_for(work, rd.series.len()), |from, to| {
        let mut f = make();
        let mut out = Vec::with_capacity(to - from);
        for si in from..to {
            let s = &rd.series[si];
            if si % 64 == 0 && std::time::Instant::now() > deadline {
                return Err(timed_out());
            }
            let one = Series1 {
                index: si,
                labels: &s.labels,
                drop_name: s.drop_name,
                samples: &s.samples,
            };
            if let Some(sv) = window_series(rd, &one, steps, keep_name, deadline, &mut f)? {
                out.push(sv);
            }
        }
        Ok(out)
    })
}

/// [`over_range`] over a lazy selection: each worker reads its series with
/// its own reader into one buffer, which stays in the CPU's caches while
/// the windows slide over it. The samples read are counted against the
/// query's sample limit as they are read.
fn over_lazy<F, M>(
    cx: &Ctx<'_>,
    rd: &RangeData<'_>,
    lazy: &dyn LazySelection,
    steps: Steps,
    keep_name: bool,
    make: &M,
) -> Result<Vec<Sv>, EvalError>
where
    M: Fn() -> F + Sync,
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let labels = lazy.labels();
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = cx.deadline;
    let (max, budget) = (cx.max_samples, cx.max_samples.saturating_sub(cx.samples));
    let read = AtomicUsize::new(0);
    // The first series, read here, stands for the others' size.
    let mut first_reader = lazy.reader()?;
    let mut first = Vec::new();
    first_reader.read(0, &mut first)?;
    let work = (first.len().saturating_mul(visits_per_sample(rd, steps)) + steps.len()).saturating_mul(labels.len());
    let first_state = std::sync::Mutex::new(Some((first_reader, first)));
    split(labels.len(), threads_for(work, labels.len()), |from, to| {
        let taken = if from == 0 {
            first_state.lock().unwrap_or_else(|p| p.into_inner()).take()
        } else {
            None
        };
        let (mut reader, mut buf, mut have_first): (Box<dyn SeriesReader + '_>, Vec<(i64, f64)>, bool) = match taken {
            Some((r, b)) => (r, b, true),
            None => (lazy.reader()?, Vec::new(), false),
        };
        let mut f = make();
        let mut out = Vec::with_capacity(to - from);
        for (si, series_labels) in labels.iter().enumerate().take(to).skip(from) {
            if si % 64 == 0 && std::time::Instant::now() > deadline {
                return Err(timed_out());
            }
            if have_first {
                have_first = false;
            } else {
                reader.read(si, &mut buf)?;
            }
            if read.fetch_add(buf.len(), Ordering::Relaxed) + buf.len() > budget {
                return Err(too_many_samples(max));
            }
            let one = Series1 {
                index: si,
                labels: series_labels,
                drop_name: false,
                samples: &buf,
            };
            if let Some(sv) = window_series(rd, &one, steps, keep_name, deadline, &mut f)? {
                out.push(sv);
            }
        }
        Ok(out)
    })
}

/// Work (sample visits plus series × steps) from which `over_range` uses
/// every core.
const PARALLEL_WORK: usize = 400_000;

/// One series for [`window_series`].
struct Series1<'s> {
    index: usize,
    labels: &'s Arc<Labels>,
    drop_name: bool,
    samples: &'s [(i64, f64)],
}

/// One series of [`over_range`].
fn window_series<F>(
    rd: &RangeData<'_>,
    s: &Series1<'_>,
    steps: Steps,
    keep_name: bool,
    deadline: std::time::Instant,
    f: &mut F,
) -> Result<Option<Sv>, EvalError>
where
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let n = steps.len();
    let samples = s.samples;
    if samples.is_empty() {
        return Ok(None);
    }
    let mut pts = Vec::with_capacity(n.min(samples.len() + 1));
    // A sliding window: the steps' window ends only move forward (with
    // `@` they stay put), so two cursors find each window in O(1).
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut prev_te = i64::MIN;
    for i in 0..n {
        if i % 65_536 == 65_535 && std::time::Instant::now() > deadline {
            return Err(timed_out());
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
            all: samples,
            range_start: te - rd.range,
            range_end: te,
            range_secs: rd.range as f64 / 1000.0,
            ts: steps.ts(i),
            step: i,
            series: s.index,
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
