//! The reference limiters the flow benchmark compares Drove's with (docs/FLOW.md §3): a fixed
//! limit, and ports of Netflix's `VegasLimit` and `Gradient2Limit`. The server runs none of them
//! (it runs `drove_core::adaptive::P50Gradient`); they are here because they fail known cases
//! the benchmark shows.

use drove_core::adaptive::{Algorithm, Outcome, Sample};

/// A fixed limit: the baseline every adaptive algorithm is compared with.
#[derive(Clone, Debug)]
pub struct StaticLimit {
    pub limit: i64,
}

impl Algorithm for StaticLimit {
    fn on_sample(&mut self, _sample: &Sample) {}
    fn limit(&self) -> i64 {
        self.limit.max(1)
    }
    fn name(&self) -> &'static str {
        "static"
    }
}

/// Netflix's integer log10 with a floor of 1 (`Log10RootFunction`): 1 below 100, 2 below 1000.
fn log10_floor1(limit: f64) -> f64 {
    let i = limit.max(0.0) as i64;
    if i < 1_000 { ((i.max(1) as f64).log10() as i64).max(1) as f64 } else { (i as f64).sqrt().floor() }
}

/// Settings of the [`Vegas`] port; the defaults are Netflix's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VegasConfig {
    pub initial: i64,
    pub max: i64,
    pub smoothing: f64,
    pub probe_multiplier: f64,
}

impl Default for VegasConfig {
    fn default() -> Self {
        VegasConfig { initial: 20, max: 1_000, smoothing: 1.0, probe_multiplier: 30.0 }
    }
}

/// Port of Netflix `VegasLimit` (per sample, as `SimpleLimiter` feeds it): queue estimate
/// `ceil(L (1 - rtt_noload / rtt))` with alpha/beta/threshold of 3, 6 and 1 × log10(L);
/// `rtt_noload` is the smallest sample, reset to the current sample every
/// `30 × L × U(0.5, 1)` samples. A reference baseline: the smallest sample pins the
/// no-load estimate low, so the limit settles where it does regardless of the downstream.
#[derive(Clone, Debug)]
pub struct Vegas {
    cfg: VegasConfig,
    limit: f64,
    rtt_noload_us: i64,
    probe_count: u64,
    probe_jitter: Option<f64>,
}

impl Vegas {
    pub fn new(cfg: VegasConfig) -> Self {
        Vegas { limit: cfg.initial.max(1) as f64, cfg, rtt_noload_us: 0, probe_count: 0, probe_jitter: None }
    }
}

impl Algorithm for Vegas {
    fn on_sample(&mut self, s: &Sample) {
        let did_drop = match s.outcome {
            Outcome::Ignore => return,
            Outcome::Success => false,
            Outcome::Overload => true,
        };
        let rtt = s.rtt_us.max(1);
        let jitter = *self.probe_jitter.get_or_insert(0.5 + 0.5 * s.rand);
        self.probe_count += 1;
        if jitter * self.cfg.probe_multiplier * self.limit <= self.probe_count as f64 {
            self.probe_jitter = Some(0.5 + 0.5 * s.rand);
            self.probe_count = 0;
            self.rtt_noload_us = rtt;
            return;
        }
        if self.rtt_noload_us == 0 || rtt < self.rtt_noload_us {
            self.rtt_noload_us = rtt;
            return;
        }
        let queue = (self.limit * (1.0 - self.rtt_noload_us as f64 / rtt as f64)).ceil();
        let log = log10_floor1(self.limit);
        let new = if did_drop {
            self.limit - log
        } else if ((s.inflight * 2) as f64) < self.limit {
            // App-limited: no change.
            return;
        } else {
            let (alpha, beta, threshold) = (3.0 * log, 6.0 * log, log);
            if queue <= threshold {
                self.limit + beta
            } else if queue < alpha {
                self.limit + log
            } else if queue > beta {
                self.limit - log
            } else {
                return;
            }
        };
        let new = new.clamp(1.0, self.cfg.max as f64);
        self.limit = (1.0 - self.cfg.smoothing) * self.limit + self.cfg.smoothing * new;
    }

    fn limit(&self) -> i64 {
        (self.limit as i64).max(1)
    }

    fn estimate(&self) -> f64 {
        self.limit
    }

    fn name(&self) -> &'static str {
        "vegas"
    }
}

/// Settings of the [`Gradient2`] port; the defaults are Netflix's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gradient2Config {
    pub initial: i64,
    pub min: i64,
    pub max: i64,
    pub smoothing: f64,
    pub queue_size: f64,
    pub rtt_tolerance: f64,
    pub long_window: u32,
}

impl Default for Gradient2Config {
    fn default() -> Self {
        Gradient2Config {
            initial: 20,
            min: 20,
            max: 200,
            smoothing: 0.2,
            queue_size: 4.0,
            rtt_tolerance: 1.5,
            long_window: 600,
        }
    }
}

/// Port of Netflix `Gradient2Limit` (per sample): long RTT = exponential average over 600
/// samples (plain average over the first 10), gradient = `clamp(1.5 × long / rtt, 0.5, 1)`,
/// `new = L × gradient + 4`, smoothed 0.2 toward it; the long average decays ×0.95 when it is
/// more than twice the sample. A reference baseline: under sustained overload the long average
/// absorbs the loaded latency and the limit drifts up.
#[derive(Clone, Debug)]
pub struct Gradient2 {
    cfg: Gradient2Config,
    limit: f64,
    long_rtt: f64,
    long_count: u32,
    long_sum: f64,
}

const GRADIENT2_WARMUP: u32 = 10;

impl Gradient2 {
    pub fn new(cfg: Gradient2Config) -> Self {
        Gradient2 { limit: cfg.initial.max(1) as f64, cfg, long_rtt: 0.0, long_count: 0, long_sum: 0.0 }
    }
}

impl Algorithm for Gradient2 {
    fn on_sample(&mut self, s: &Sample) {
        if s.outcome == Outcome::Ignore {
            return;
        }
        // Netflix passes dropped calls with their run time and Gradient2 ignores the drop flag.
        let short = s.rtt_us.max(1) as f64;
        if self.long_count < GRADIENT2_WARMUP {
            self.long_count += 1;
            self.long_sum += short;
            self.long_rtt = self.long_sum / self.long_count as f64;
        } else {
            let factor = 2.0 / (self.cfg.long_window as f64 + 1.0);
            self.long_rtt = self.long_rtt * (1.0 - factor) + short * factor;
        }
        let long = self.long_rtt;
        if long / short > 2.0 {
            self.long_rtt *= 0.95;
        }
        if (s.inflight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = (self.cfg.rtt_tolerance * long / short).clamp(0.5, 1.0);
        let new = self.limit * gradient + self.cfg.queue_size;
        let new = self.limit * (1.0 - self.cfg.smoothing) + new * self.cfg.smoothing;
        self.limit = new.clamp(self.cfg.min.max(1) as f64, self.cfg.max as f64);
    }

    fn limit(&self) -> i64 {
        (self.limit as i64).max(1)
    }

    fn estimate(&self) -> f64 {
        self.limit
    }

    fn name(&self) -> &'static str {
        "gradient2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `alg` `n` samples, one every `every_us`, each with `rtt(i)` and in-flight `inflight`.
    fn feed(
        alg: &mut dyn Algorithm,
        t0: i64,
        n: usize,
        every_us: i64,
        inflight: i64,
        mut rtt: impl FnMut(usize) -> i64,
    ) -> i64 {
        let mut now = t0;
        for i in 0..n {
            now += every_us;
            let s = Sample { now_us: now, rtt_us: rtt(i), inflight, outcome: Outcome::Success, rand: 0.5 };
            alg.on_sample(&s);
        }
        now
    }

    #[test]
    fn static_limit_is_fixed_and_at_least_one() {
        let mut s = StaticLimit { limit: 0 };
        feed(&mut s, 0, 10, 1_000, 5, |_| 10_000);
        assert_eq!(s.limit(), 1);
        assert_eq!(StaticLimit { limit: 7 }.limit(), 7);
    }

    #[test]
    fn vegas_grows_without_queueing_and_shrinks_with_it() {
        let mut v = Vegas::new(VegasConfig::default());
        // First sample sets rtt_noload; equal samples → queue 0 ≤ threshold → +beta (6).
        feed(&mut v, 0, 5, 1_000, 20, |_| 10_000);
        assert!(v.limit() > 20, "{}", v.limit());
        let before = v.estimate();
        // Latency doubled: queue = ceil(L/2) > beta → −1 per sample.
        feed(&mut v, 10_000, 5, 1_000, 100, |_| 20_000);
        assert!((v.estimate() - (before - 5.0)).abs() < 1e-9, "{} {}", before, v.estimate());
        // App-limited: no change.
        let e = v.estimate();
        feed(&mut v, 20_000, 5, 1_000, 1, |_| 10_000);
        assert_eq!(v.estimate(), e);
    }

    #[test]
    fn gradient2_respects_its_floor_and_drifts_up_under_steady_overload() {
        let mut g = Gradient2::new(Gradient2Config::default());
        // Latency constant at any level: gradient 1 → +4 × 0.2 per sample up to max 200.
        feed(&mut g, 0, 2_000, 1_000, 1_000, |_| 50_000);
        assert_eq!(g.limit(), 200);
        // A sudden 10× slowdown: cuts toward the floor of 20, never below.
        let t = feed(&mut g, 2_000_000, 100, 1_000, 1_000, |_| 500_000);
        assert!((20..60).contains(&g.limit()), "{}", g.limit());
        // But the latency stays 10× and the long average absorbs it: the limit drifts back to
        // the ceiling (the failure docs/FLOW.md §3.4 describes).
        feed(&mut g, t, 3_000, 1_000, 1_000, |_| 500_000);
        assert_eq!(g.limit(), 200);
    }
}
