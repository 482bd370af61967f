//! Time until a memory limit, from a least-squares line through a sliding
//! window of samples. Pure statistics: no kernel, no clock.
//!
//! The model is `y = a + b t + e` with `y` the memory reclaim cannot free
//! (page cache is left out by the caller: its growth alone never ends in an
//! OOM kill). Ordinary least squares gives the rate `b`, R² and the residuals.
//!
//! Memory series are not white noise around a line: a sawtooth, or steps of
//! an allocator, leave residuals that follow each other. OLS standard errors
//! assume independent residuals and would then be far too small, so the
//! sample size is corrected for the residuals' lag-1 autocorrelation `r`
//! (the AR(1) "effective sample size" of trend analysis: Santer et al. 2000,
//! JGR 105(D6); Wilks, *Statistical Methods in the Atmospheric Sciences*):
//! `n_eff = n (1 - r) / (1 + r)`, the residual variance is `SSE / (n_eff - 2)`
//! and Student's t has `n_eff - 2` degrees of freedom (at least 1).
//!
//! - **Significance**: a prediction is made only when the slope's 95%
//!   interval `b ± t(0.975, df) se(b)` excludes zero and is positive, and
//!   the line meets the limit within the horizon (slower growth, such as
//!   the kernel memory that follows a filling page cache, is reported as
//!   beyond the horizon, with its rate only).
//! - **Time to limit**: where the fitted line meets the limit `L`, from the
//!   newest sample.
//! - **Its 95% interval**: the times at which `L` lies inside the
//!   regression's 95% prediction band, `|L - ŷ(t)| ≤ t(0.975, df) s
//!   sqrt(1 + 1/n_eff + (t - t̄)²/Sxx)`: a quadratic in `t` (inverse
//!   prediction, as in Fieller's theorem). Its roots bound a finite interval
//!   exactly when the slope is significant, which is why both rules agree.
//! - **Confidence**: the probability, under the fitted model, that memory is
//!   at or above `L` at the end of the horizon: `P(Y(now + h) ≥ L)` with `Y`
//!   Student-t around the line with the prediction band's scale.
//!
//! Student's t distribution is computed here (regularized incomplete beta by
//! continued fraction, as in Numerical Recipes §6.4) rather than taken from a
//! statistics crate: three functions, tested against published quantiles.

use std::collections::VecDeque;

/// Two-sided coverage of every interval.
pub const LEVEL: f64 = 0.95;
/// Fewest samples a line is fitted through.
pub const MIN_SAMPLES: usize = 3;

/// A bounded series of `(t seconds, value)` samples over a sliding window.
#[derive(Clone, Debug)]
pub struct Series {
    window: f64,
    /// Two retained samples are at least this far apart (the newest excepted),
    /// so a series holds about `window / spacing` samples however fast they come.
    spacing: f64,
    points: VecDeque<(f64, f64)>,
}

impl Series {
    /// A series over `window` seconds keeping about `max_points` samples.
    pub fn new(window: f64, max_points: usize) -> Self {
        Self {
            window,
            spacing: window / max_points.max(2) as f64,
            points: VecDeque::new(),
        }
    }

    /// Adds a sample; older than `t - window` ones are dropped. Samples must
    /// come in time order; one older than the newest is ignored.
    pub fn push(&mut self, t: f64, y: f64) {
        if let Some(&(last, _)) = self.points.back() {
            if t < last {
                return;
            }
            let n = self.points.len();
            // Thin dense bursts: the newest replaces its too-close predecessor.
            if n >= 2 && t - self.points[n - 2].0 < self.spacing {
                self.points[n - 1] = (t, y);
                self.expire(t);
                return;
            }
        }
        self.points.push_back((t, y));
        self.expire(t);
    }

    fn expire(&mut self, now: f64) {
        while let Some(&(t, _)) = self.points.front() {
            if t >= now - self.window {
                break;
            }
            self.points.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        self.points.back().copied()
    }

    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().copied()
    }
}

/// An ordinary least-squares line, with the autocorrelation correction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub n: usize,
    /// Sample size corrected for the residuals' lag-1 autocorrelation.
    pub n_eff: f64,
    /// Lag-1 autocorrelation of the residuals, clamped to [0, 0.99].
    pub rho: f64,
    pub t_mean: f64,
    pub y_mean: f64,
    /// Σ (t - t̄)².
    pub sxx: f64,
    pub slope: f64,
    /// Residual variance, `SSE / df`.
    pub s2: f64,
    /// Degrees of freedom: `n_eff - 2`, at least 1.
    pub df: f64,
    pub r2: f64,
    /// Standard error of the slope.
    pub slope_se: f64,
}

impl Fit {
    /// Least squares through `points` (time order). `None` with fewer than
    /// [`MIN_SAMPLES`] samples or when they all share one time.
    pub fn new(points: &[(f64, f64)]) -> Option<Fit> {
        let n = points.len();
        if n < MIN_SAMPLES {
            return None;
        }
        let nf = n as f64;
        let t_mean = points.iter().map(|p| p.0).sum::<f64>() / nf;
        let y_mean = points.iter().map(|p| p.1).sum::<f64>() / nf;
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for &(t, y) in points {
            let (dt, dy) = (t - t_mean, y - y_mean);
            sxx += dt * dt;
            sxy += dt * dy;
            syy += dy * dy;
        }
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let residual = |&(t, y): &(f64, f64)| y - (y_mean + slope * (t - t_mean));
        let sse: f64 = points.iter().map(|p| residual(p).powi(2)).sum();
        // Values are integers (bytes): below this, the residuals are rounding.
        let sse = if sse <= syy * 1e-18 { 0.0 } else { sse };
        let r2 = if syy > 0.0 {
            (1.0 - sse / syy).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let rho = if sse > 0.0 {
            let lagged: f64 = points
                .windows(2)
                .map(|w| residual(&w[0]) * residual(&w[1]))
                .sum();
            (lagged / sse).clamp(0.0, 0.99)
        } else {
            0.0
        };
        let n_eff = nf * (1.0 - rho) / (1.0 + rho);
        let df = (n_eff - 2.0).max(1.0);
        let s2 = sse / df;
        Some(Fit {
            n,
            n_eff,
            rho,
            t_mean,
            y_mean,
            sxx,
            slope,
            s2,
            df,
            r2,
            slope_se: (s2 / sxx).sqrt(),
        })
    }

    /// The line at time `t`.
    pub fn at(&self, t: f64) -> f64 {
        self.y_mean + self.slope * (t - self.t_mean)
    }

    /// Standard error of a new observation at `t` (the prediction band's scale).
    pub fn prediction_se(&self, t: f64) -> f64 {
        let u = t - self.t_mean;
        (self.s2 * (1.0 + 1.0 / self.n_eff + u * u / self.sxx)).sqrt()
    }
}

/// What a prediction concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Growing,
    NotGrowing,
    NoLimit,
    InsufficientData,
    AtLimit,
    /// Significant growth whose line meets the limit after the horizon.
    BeyondHorizon,
}

/// A prediction made at `now` (seconds, the series' clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub state: State,
    /// Slope in units per second and its 95% interval (0 without a fit).
    pub rate: f64,
    pub rate_low: f64,
    pub rate_high: f64,
    /// Seconds from `now` to the limit, and the 95% interval; set when Growing.
    pub time_to_limit: Option<f64>,
    pub time_to_limit_low: Option<f64>,
    pub time_to_limit_high: Option<f64>,
    pub r2: f64,
    /// P(limit reached within the horizon); set when Growing.
    pub confidence: Option<f64>,
    pub samples: usize,
    pub effective_samples: f64,
    /// Time the samples span, seconds.
    pub span: f64,
}

impl Prediction {
    fn empty(state: State, samples: usize, span: f64) -> Self {
        Self {
            state,
            rate: 0.0,
            rate_low: 0.0,
            rate_high: 0.0,
            time_to_limit: None,
            time_to_limit_low: None,
            time_to_limit_high: None,
            r2: 0.0,
            confidence: None,
            samples,
            effective_samples: samples as f64,
            span,
        }
    }
}

/// Predicts when `series` reaches `limit` (`None`: no limit known), from
/// `now`, with the confidence taken over `horizon` seconds.
pub fn predict(series: &Series, now: f64, limit: Option<f64>, horizon: f64) -> Prediction {
    let points: Vec<(f64, f64)> = series.points().collect();
    let span = match (points.first(), points.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let Some(fit) = Fit::new(&points) else {
        return Prediction::empty(State::InsufficientData, points.len(), span);
    };
    let k = t_quantile(0.5 + LEVEL / 2.0, fit.df);
    let half = k * fit.slope_se;
    let mut p = Prediction {
        rate: fit.slope,
        rate_low: fit.slope - half,
        rate_high: fit.slope + half,
        r2: fit.r2,
        effective_samples: fit.n_eff,
        ..Prediction::empty(State::NotGrowing, fit.n, span)
    };
    let Some(limit) = limit else {
        p.state = State::NoLimit;
        return p;
    };
    let newest = points.last().map_or(0.0, |q| q.1);
    if newest >= limit {
        p.state = State::AtLimit;
        return p;
    }
    if p.rate_low <= 0.0 {
        return p;
    }

    // Where the line meets the limit.
    let crossing = fit.t_mean + (limit - fit.y_mean) / fit.slope;
    if crossing - now > horizon {
        p.state = State::BeyondHorizon;
        return p;
    }
    // Where the prediction band does: with u = t - t̄ and D = L - ȳ,
    // (D - b u)² = k² s² (1 + 1/n + u²/Sxx), i.e. A u² - 2 D b u + C = 0.
    let d = limit - fit.y_mean;
    let k2s2 = k * k * fit.s2;
    let a = fit.slope * fit.slope - k2s2 / fit.sxx;
    let disc = k2s2 * (d * d / fit.sxx + (1.0 + 1.0 / fit.n_eff) * a);
    let root = disc.max(0.0).sqrt();
    let (u_low, u_high) = ((d * fit.slope - root) / a, (d * fit.slope + root) / a);
    p.state = State::Growing;
    p.time_to_limit = Some((crossing - now).max(0.0));
    p.time_to_limit_low = Some((fit.t_mean + u_low - now).max(0.0));
    p.time_to_limit_high = Some((fit.t_mean + u_high - now).max(0.0));

    let end = now + horizon;
    let se = fit.prediction_se(end);
    let gap = limit - fit.at(end);
    p.confidence = Some(if se > 0.0 {
        1.0 - t_cdf(gap / se, fit.df)
    } else if gap <= 0.0 {
        1.0
    } else {
        0.0
    });
    p
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(π x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// Regularized incomplete beta function I_x(a, b).
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// CDF of Student's t with `df` (> 0, not necessarily whole) degrees of freedom.
pub fn t_cdf(x: f64, df: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.is_infinite() {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + x * x));
    if x > 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile (0 < p < 1) of Student's t with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    // The CDF is increasing: bracket, then bisect to machine precision.
    let mut hi = 1.0;
    while t_cdf(hi, df) < p && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_published_tables() {
        // Two-sided 95%: the 0.975 quantiles.
        for (df, q) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (5.0, 2.570_581_836),
            (10.0, 2.228_138_852),
            (30.0, 2.042_272_456),
            (1000.0, 1.962_339_081),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, q, 1e-6), "df {df}: {got} vs {q}");
        }
        assert!(close(t_quantile(0.995, 4.0), 4.604_094_871, 1e-6));
        assert!(close(t_quantile(0.025, 10.0), -2.228_138_852, 1e-6));
        // Fractional df sits between its neighbours.
        let q = t_quantile(0.975, 2.5);
        assert!(q < 4.302_652_730 && q > 3.182_446_305, "{q}");
    }

    #[test]
    fn t_cdf_is_symmetric_and_matches_the_cauchy_case() {
        for x in [-3.0, -0.5, 0.0, 0.7, 2.0, 10.0] {
            assert!(close(t_cdf(x, 7.0) + t_cdf(-x, 7.0), 1.0, 1e-12));
            // df = 1 is the Cauchy distribution: 1/2 + atan(x)/π.
            let cauchy = 0.5 + x.atan() / std::f64::consts::PI;
            assert!(close(t_cdf(x, 1.0), cauchy, 1e-10), "{x}");
        }
        assert_eq!(t_cdf(f64::INFINITY, 3.0), 1.0);
    }

    fn series(points: impl IntoIterator<Item = (f64, f64)>, window: f64) -> Series {
        let mut s = Series::new(window, 1000);
        for (t, y) in points {
            s.push(t, y);
        }
        s
    }

    #[test]
    fn exact_linear_growth_predicts_exactly() {
        // 10 MiB/s from 100 MiB, sampled every 100 ms for 5 s; limit 200 MiB.
        let s = series(
            (0..=50).map(|i| {
                let t = i as f64 * 0.1;
                (t, (100.0 + 10.0 * t) * MIB)
            }),
            60.0,
        );
        let p = predict(&s, 5.0, Some(200.0 * MIB), 3600.0);
        assert_eq!(p.state, State::Growing);
        assert!(close(p.rate, 10.0 * MIB, 1e-3));
        // 150 MiB at t = 5 s: 50 MiB more at 10 MiB/s.
        let ttl = p.time_to_limit.unwrap();
        assert!(close(ttl, 5.0, 1e-9), "{ttl}");
        assert!(close(p.time_to_limit_low.unwrap(), 5.0, 1e-6));
        assert!(close(p.time_to_limit_high.unwrap(), 5.0, 1e-6));
        assert!(close(p.r2, 1.0, 1e-12));
        assert_eq!(p.confidence, Some(1.0));
    }

    /// A deterministic, roughly uniform noise source (xorshift), in [-1, 1).
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 2_000_001) as f64 / 1_000_000.0 - 1.0
    }

    #[test]
    fn noisy_growth_brackets_the_true_time() {
        // 4 MiB/s plus ±8 MiB of independent noise, 2 samples/s for 30 s.
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let s = series(
            (0..60).map(|i| {
                let t = i as f64 * 0.5;
                (t, (500.0 + 4.0 * t + 8.0 * noise(&mut seed)) * MIB)
            }),
            60.0,
        );
        let now = 29.5;
        let p = predict(&s, now, Some(1024.0 * MIB), 3600.0);
        assert_eq!(p.state, State::Growing);
        // True: (1024 - 500 - 4 * 29.5) / 4 = 101.5 s.
        let (lo, ttl, hi) = (
            p.time_to_limit_low.unwrap(),
            p.time_to_limit.unwrap(),
            p.time_to_limit_high.unwrap(),
        );
        assert!(lo < ttl && ttl < hi, "{lo} {ttl} {hi}");
        assert!(lo < 101.5 && 101.5 < hi, "{lo} {ttl} {hi}");
        assert!((ttl - 101.5).abs() / 101.5 < 0.15, "{ttl}");
        assert!(p.r2 > 0.8 && p.r2 < 1.0, "{}", p.r2);
        assert!(p.rate_low < 4.0 * MIB && 4.0 * MIB < p.rate_high);
        // Reached well within the hour.
        assert!(p.confidence.unwrap() > 0.99, "{:?}", p.confidence);
        // But not within 10 s: growing, beyond that horizon.
        let short = predict(&s, now, Some(1024.0 * MIB), 10.0);
        assert_eq!(short.state, State::BeyondHorizon);
        // Within 100 s, about as likely as not (the truth is 101.5 s).
        let close_call = predict(&s, now, Some(1024.0 * MIB), 101.0);
        let c = close_call.confidence.unwrap();
        assert!((0.2..0.8).contains(&c), "{c}");
    }

    #[test]
    fn intervals_cover_the_truth_at_their_level() {
        // Many independent noisy series around one line: the slope's 95%
        // interval should contain the true slope about 95% of the time, and
        // the time interval (a prediction band, wider than the line's own
        // uncertainty) the true line's crossing at least that often.
        let mut seed = 0x1234_5678_9abc_def1;
        let (mut slope_in, mut crossing_in, mut made) = (0, 0, 0);
        let runs = 1000;
        for _ in 0..runs {
            let s = series(
                (0..40).map(|i| {
                    let t = i as f64;
                    (t, 100.0 + 2.0 * t + 10.0 * noise(&mut seed))
                }),
                100.0,
            );
            let p = predict(&s, 39.0, Some(300.0), 3600.0);
            if p.rate_low <= 2.0 && 2.0 <= p.rate_high {
                slope_in += 1;
            }
            if p.state != State::Growing {
                continue;
            }
            made += 1;
            // The true line reaches 300 at t = 100.
            let truth = 100.0 - 39.0;
            if p.time_to_limit_low.unwrap() <= truth && truth <= p.time_to_limit_high.unwrap() {
                crossing_in += 1;
            }
        }
        assert!(made > 990, "{made}");
        let slope_rate = slope_in as f64 / runs as f64;
        assert!(
            (0.93..=0.97).contains(&slope_rate),
            "slope coverage {slope_rate}"
        );
        let crossing_rate = crossing_in as f64 / made as f64;
        assert!(crossing_rate >= 0.95, "crossing coverage {crossing_rate}");
    }

    #[test]
    fn slow_growth_is_beyond_the_horizon() {
        // 6 KB/s with a little noise, 200 MiB below the limit: 10 hours away.
        let mut seed = 7;
        let s = series(
            (0..50).map(|i| {
                let t = i as f64 * 0.1;
                (t, MIB + 6000.0 * t + 100.0 * noise(&mut seed))
            }),
            10.0,
        );
        let p = predict(&s, 4.9, Some(200.0 * MIB), 3600.0);
        assert_eq!(p.state, State::BeyondHorizon, "{p:?}");
        assert!(p.rate_low > 0.0);
        assert_eq!(p.time_to_limit, None);
        // The same series with a horizon of a day is a prediction.
        let day = predict(&s, 4.9, Some(200.0 * MIB), 86_400.0);
        assert_eq!(day.state, State::Growing);
        assert!(
            (day.time_to_limit.unwrap() - 34_950.0).abs() < 1000.0,
            "{day:?}"
        );
    }

    #[test]
    fn a_plateau_is_not_growing() {
        // Growth, then a plateau longer than the window: only the plateau is fitted.
        let s = series(
            (0..=100).map(|i| {
                let t = i as f64 * 0.1;
                let y = if t < 3.0 { 10.0 * t } else { 30.0 };
                (t, y * MIB)
            }),
            5.0,
        );
        let p = predict(&s, 10.0, Some(100.0 * MIB), 3600.0);
        assert_eq!(p.state, State::NotGrowing);
        assert_eq!(p.time_to_limit, None);
        assert_eq!(p.confidence, None);
        assert!(close(p.rate, 0.0, 1e-6));
    }

    #[test]
    fn a_plateau_with_page_level_jitter_is_not_growing() {
        let mut seed = 42;
        let s = series(
            (0..50).map(|i| {
                (
                    i as f64 * 0.2,
                    64.0 * MIB + 4096.0 * noise(&mut seed).round(),
                )
            }),
            10.0,
        );
        let p = predict(&s, 9.8, Some(128.0 * MIB), 3600.0);
        assert_eq!(p.state, State::NotGrowing, "{p:?}");
    }

    #[test]
    fn a_sawtooth_is_not_a_trend() {
        // Allocate 64 MiB over 0.8 s, free it, every second; sampled at
        // 20 Hz over a 1.9 s window (a period and most of another), at
        // every phase. Plain OLS, blind to the residuals following each
        // other, calls some phases significant growth; the corrected fit
        // calls none.
        let mut plain_growing = 0;
        for phase in 0..20 {
            let start = phase as f64 * 0.05;
            let s = series(
                (0..38).map(|i| {
                    let t = start + i as f64 * 0.05;
                    let into = t.fract();
                    let y = if into < 0.8 { 80.0 * into } else { 0.0 };
                    (t, (10.0 + y) * MIB)
                }),
                1.9,
            );
            let now = start + 37.0 * 0.05;
            let p = predict(&s, now, Some(256.0 * MIB), 3600.0);
            assert_eq!(p.state, State::NotGrowing, "phase {phase}: {p:?}");
            assert!(p.r2 < 0.5, "phase {phase}: {p:?}");
            let points: Vec<_> = s.points().collect();
            let f = Fit::new(&points).unwrap();
            let df = f.n as f64 - 2.0;
            let plain_se = (f.s2 * f.df / df / f.sxx).sqrt();
            if f.slope - t_quantile(0.975, df) * plain_se > 0.0 {
                plain_growing += 1;
            }
        }
        assert!(plain_growing > 0, "the case does not need the correction");
    }

    #[test]
    fn states_without_a_prediction() {
        let s = series([(0.0, 1.0), (1.0, 2.0)], 60.0);
        assert_eq!(
            predict(&s, 1.0, Some(10.0), 60.0).state,
            State::InsufficientData
        );
        let s = series((0..10).map(|i| (i as f64, i as f64 * 5.0)), 60.0);
        let p = predict(&s, 9.0, None, 60.0);
        assert_eq!(p.state, State::NoLimit);
        assert!(close(p.rate, 5.0, 1e-9));
        assert_eq!(predict(&s, 9.0, Some(45.0), 60.0).state, State::AtLimit);
        let down = series((0..10).map(|i| (i as f64, 100.0 - i as f64)), 60.0);
        assert_eq!(
            predict(&down, 9.0, Some(200.0), 60.0).state,
            State::NotGrowing
        );
    }

    #[test]
    fn series_expire_and_thin() {
        let mut s = Series::new(10.0, 10);
        for i in 0..1000 {
            s.push(i as f64 * 0.01, i as f64);
        }
        // 0..9.99 s at 1 kHz, kept about every second.
        assert!(s.len() <= 12, "{}", s.len());
        assert_eq!(s.last(), Some((9.99, 999.0)));
        s.push(25.0, 1.0);
        assert_eq!(s.len(), 1);
        s.push(24.0, 2.0);
        assert_eq!(s.len(), 1, "out of order samples are ignored");
    }
}
