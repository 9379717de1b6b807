//! Numeric helpers shared by the range functions and the aggregations:
//! compensated sums, mean, variance and quantile as Prometheus computes
//! them.

/// Kahan–Neumaier summation step, as Prometheus's `kahanSumInc`.
pub(in crate::promql) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A mean that stays exact-ish and survives overflow (Prometheus's avg).
#[derive(Default, Clone, Debug)]
pub(in crate::promql) struct Mean {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    incremental: bool,
}

impl Mean {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (s, c) = kahan_inc(v, self.sum, self.c);
            if self.count == 1.0 || !s.is_infinite() {
                self.sum = s;
                self.c = c;
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        let cur = self.mean + self.c;
        let (m, c) = kahan_inc(v / self.count - cur / self.count, self.mean, self.c);
        self.mean = m;
        self.c = c;
    }

    pub fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// Running variance (Welford with Kahan), as Prometheus's stdvar.
#[derive(Default, Clone, Debug)]
pub(in crate::promql) struct Var {
    count: f64,
    mean: f64,
    cmean: f64,
    aux: f64,
    caux: f64,
}

impl Var {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.cmean);
        let (m, c) = kahan_inc(delta / self.count, self.mean, self.cmean);
        self.mean = m;
        self.cmean = c;
        let (a, ca) = kahan_inc(delta * (v - (self.mean + self.cmean)), self.aux, self.caux);
        self.aux = a;
        self.caux = ca;
    }
    pub fn value(&self) -> f64 {
        (self.aux + self.caux) / self.count
    }
}

/// Prometheus's quantile over a set of values (sorts them).
pub(in crate::promql) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    // NaN sorts last in total_cmp for positive NaN; Prometheus's sort.Float64s puts NaN first.
    let nans: Vec<f64> = values.iter().copied().filter(|v| v.is_nan()).collect();
    if !nans.is_empty() {
        let rest: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        for (i, v) in nans.iter().chain(rest.iter()).enumerate() {
            values[i] = *v;
        }
    }
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}
