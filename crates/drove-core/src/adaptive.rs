//! Adaptive concurrency and rate limits: how many calls a downstream gets at once, and how fast,
//! learned from the run times and outcomes of the calls that finished.
//!
//! Little's law says a downstream with `c` slots and service time `S` absorbs `c` calls without
//! queueing; every call beyond that only waits (≈ `S / c` more latency each). A limiter's job is
//! to find that bandwidth-delay product without being told `c`, follow it when it changes, and
//! back off when the downstream says it is overloaded.
//!
//! [`P50Gradient`] is Drove's limiter (docs/FLOW.md §3): a gradient on the windowed
//! p50 of run time against a baseline that expires and is re-measured by briefly halving the
//! limit (BBR's PROBE_RTT), `sqrt(L)` headroom, no growth while under-used, `x0.9` on explicit
//! overload. The benchmark's reference baselines (a fixed limit and ports of Netflix's Vegas and
//! Gradient2, kept because they fail known cases) live in `drove-flow`, which runs them; the
//! server runs only this one.
//! Rates learned from a provider's 429s are in [`crate::learned`] (what the server runs).
//!
//! Everything is pure: times are microseconds passed in (`now_us`, `rtt_us`, `sent_us`; µs
//! because run times of a few milliseconds must compare exactly enough), randomness is a number
//! in `[0, 1)` passed in with each sample.

/// What a finished call says about the downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call ran (whatever its own result): its run time is a latency sample.
    Success,
    /// Explicit overload: throttled (429), unavailable (503) or timed out.
    Overload,
    /// Says nothing about the downstream (cancelled, lost lease): not a sample.
    Ignore,
}

/// One finished call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When the call finished (µs, any epoch, never decreasing between samples).
    pub now_us: i64,
    /// How long it ran (µs).
    pub rtt_us: i64,
    /// Calls in flight when this one started, itself included.
    pub inflight: i64,
    pub outcome: Outcome,
    /// A uniform random number in `[0, 1)`, used by algorithms that jitter their schedule.
    pub rand: f64,
}

/// A concurrency limit algorithm: fed every finished call, it says how many may run at once.
pub trait Algorithm {
    fn on_sample(&mut self, sample: &Sample);
    /// Calls allowed in flight now (at least 1).
    fn limit(&self) -> i64;
    /// The unrounded estimate, for traces.
    fn estimate(&self) -> f64 {
        self.limit() as f64
    }
    /// Calls allowed in flight before offline work must wait (at most `limit`).
    fn offline_limit(&self) -> i64 {
        self.limit()
    }
    fn name(&self) -> &'static str;
}

/// How long after the last online run a pool's offline work stays held at the offline limit;
/// a pool with no online work for longer lets offline work use the whole limit (holding it
/// below the limit protects nobody then, and the capacity estimate can err low).
pub const OFFLINE_HOLD_US: i64 = 10_000_000;

/// Settings of [`P50Gradient`]. The defaults are the one parameter set the benchmark runs every
/// cell with; only `min`, `max` (the queue's bounds) and `initial` are meant to be changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct P50GradientConfig {
    pub min: i64,
    pub max: i64,
    /// Where the limit starts. Low by default: the first window's p50 becomes the baseline, and
    /// a baseline measured while queueing lets the limit sit far too high, coming down only
    /// probe by probe (each probe measures at half the limit).
    pub initial: i64,
    /// A window lasts at least this long and at least twice the baseline...
    pub window_min_us: i64,
    /// ...and holds at least this many samples, so its p50 is not one lucky call.
    pub window_min_samples: usize,
    /// Latency accepted above the baseline before the limit shrinks (1.25 = 25 %).
    pub tolerance: f64,
    /// The baseline is re-measured this long after it was last lowered...
    pub baseline_ttl_us: i64,
    /// ...and the first one, measured in one window at a low limit, this soon.
    pub first_baseline_ttl_us: i64,
    /// ...stretched by up to this fraction at random, so a fleet does not probe in step.
    pub baseline_ttl_jitter: f64,
    /// Windows spent at each halved limit while probing (the first drains, the last measures).
    pub probe_windows: u32,
    /// A probe whose p50 is still above this multiple of the old baseline halves again...
    pub probe_rehalve_ratio: f64,
    /// ...up to this many halvings in all.
    pub probe_max_halvings: u32,
    /// Factor applied on explicit overload.
    pub backoff: f64,
    /// Weight of each window in the moving average of the downstream's capacity (the offline
    /// limit).
    pub capacity_weight: f64,
    /// Slow start: until the first window whose p50 rises past the tolerance (or an overload),
    /// the limit doubles each window that used it, so a fresh scope reaches its downstream's
    /// capacity in a few windows instead of growing by `sqrt(L)` from `initial`.
    pub slow_start: bool,
    /// The clock's tick in the run times fed (µs): run times below it read as 0, and a
    /// baseline of 0 must not read as infinitely fast.
    pub resolution_us: i64,
}

impl Default for P50GradientConfig {
    fn default() -> Self {
        P50GradientConfig {
            min: 1,
            max: 1_000,
            initial: 1,
            window_min_us: 100_000,
            window_min_samples: 20,
            tolerance: 1.25,
            baseline_ttl_us: 10_000_000,
            first_baseline_ttl_us: 1_000_000,
            baseline_ttl_jitter: 0.2,
            probe_windows: 2,
            probe_rehalve_ratio: 1.5,
            probe_max_halvings: 3,
            backoff: 0.9,
            capacity_weight: 0.3,
            slow_start: true,
            resolution_us: 1,
        }
    }
}

impl P50GradientConfig {
    /// The defaults within a queue's bounds (`adaptive: {min, max}`), starting at `min`.
    pub fn bounded(min: i64, max: i64) -> Self {
        let min = min.max(1);
        P50GradientConfig { min, max: max.max(min), initial: min, ..Default::default() }
    }
}

#[derive(Clone, Debug, Default)]
struct Window {
    start_us: Option<i64>,
    rtts: Vec<i64>,
    sum_rtt_us: f64,
    count: usize,
    max_inflight: i64,
    overload: bool,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    /// The limit to go back to when the probe ends.
    restore: f64,
    windows_left: u32,
    halvings: u32,
    /// The baseline that expired: a probe p50 far above it means the halved limit still queues.
    reference_us: f64,
}

/// Drove's adaptive concurrency limit (docs/FLOW.md §3): Envoy's gradient on the windowed p50,
/// BBR's expiring baseline with a drain probe, Netflix's app-limited guard, and a multiplicative
/// cut on explicit overload.
///
/// Per window (≥ `max(100 ms, 2 × baseline)` and ≥ 20 samples):
/// - any overload in the window: `L ← 0.9 L`;
/// - else, unless the window was under-used (max in-flight < `L/2`):
///   `L ← L · clamp(1.25 · baseline / p50, 0.5, 1) + sqrt(L)`;
/// - the baseline is the lowest window p50; ~10 s after it was last lowered (1 s after the
///   first one) the limit is halved for two windows and the last window's p50 becomes the
///   baseline. A probe still queueing halves again, but never below the capacity estimate.
///
/// `sqrt(L)` is added even when the gradient is below 1: at high service-time variance the
/// lowest window p50 is biased low, and without the headroom the limit collapses.
///
/// The headroom means the limit settles above the downstream's capacity and the calls beyond
/// it queue there. For work that must not delay others (offline lanes) it also estimates the
/// capacity itself, per window: mean in-flight (Little's law: summed run time ÷ window length)
/// × reference ÷ p50, which counts the calls being served and not those queued; the reference
/// is the probes' p50s averaged (the baseline until the first probe), a moving average over
/// windows. [`Algorithm::offline_limit`] is that estimate plus `sqrt` of it, halved during a
/// probe so offline work drains with the limit; until a probe has measured the reference it is
/// the whole limit (the lowest window p50 alone would hold offline work far below capacity at
/// high variance).
#[derive(Clone, Debug)]
pub struct P50Gradient {
    cfg: P50GradientConfig,
    limit: f64,
    baseline_us: Option<f64>,
    baseline_expires_us: i64,
    window: Window,
    probe: Option<Probe>,
    last_p50_us: Option<f64>,
    capacity: Option<f64>,
    /// Whether a window has queued since the estimate began: only then does it bound offline work.
    capacity_shown: bool,
    probe_p50_us: Option<f64>,
    /// Still in slow start (see [`P50GradientConfig::slow_start`]).
    starting: bool,
}

impl P50Gradient {
    pub fn new(cfg: P50GradientConfig) -> Self {
        let min = cfg.min.max(1);
        let cfg = P50GradientConfig { min, max: cfg.max.max(min), ..cfg };
        P50Gradient {
            limit: cfg.initial.clamp(cfg.min, cfg.max) as f64,
            cfg,
            baseline_us: None,
            baseline_expires_us: i64::MAX,
            window: Window::default(),
            probe: None,
            last_p50_us: None,
            capacity: None,
            capacity_shown: false,
            probe_p50_us: None,
            starting: cfg.slow_start,
        }
    }

    /// The current no-load latency estimate (µs), once measured.
    pub fn baseline_us(&self) -> Option<f64> {
        self.baseline_us
    }

    /// The p50 of the last closed window (µs).
    pub fn last_p50_us(&self) -> Option<f64> {
        self.last_p50_us
    }

    /// The downstream's capacity estimate: how many calls it serves at once without queueing
    /// (the moving average, over windows, of mean in-flight × reference ÷ p50).
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// Whether a baseline probe (halved limit) is under way.
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    fn bound(&self, l: f64) -> f64 {
        l.clamp(self.cfg.min as f64, self.cfg.max as f64)
    }

    fn window_len_us(&self) -> i64 {
        let twice_baseline = self.baseline_us.map_or(0, |b| (2.0 * b) as i64);
        self.cfg.window_min_us.max(twice_baseline)
    }

    fn set_baseline(&mut self, p50: f64, now_us: i64, rand: f64) {
        self.baseline_us = Some(p50);
        let stretch = 1.0 + self.cfg.baseline_ttl_jitter * rand.clamp(0.0, 1.0);
        if self.probe_p50_us.is_none() && self.probe.is_none() {
            // Until a first probe has measured the baseline, the ones seen are from windows at
            // a low limit or while the limit grew, the least trustworthy: the first probe comes
            // `first_baseline_ttl_us` after the first of them, and a lower one found meanwhile
            // does not postpone it (each did, by the whole TTL, and the first probe came 10 s
            // or more after load started).
            let first = now_us.saturating_add((self.cfg.first_baseline_ttl_us as f64 * stretch) as i64);
            self.baseline_expires_us = self.baseline_expires_us.min(first);
        } else {
            self.baseline_expires_us =
                now_us.saturating_add((self.cfg.baseline_ttl_us as f64 * stretch) as i64);
        }
    }

    fn close_window(&mut self, now_us: i64, rand: f64) {
        let mut w = std::mem::take(&mut self.window);
        self.window.start_us = Some(now_us);
        // Reuse the allocation for the next window.
        let p50 = median(&mut w.rtts);
        self.window.rtts = std::mem::take(&mut w.rtts);
        self.window.rtts.clear();
        self.last_p50_us = p50;
        let resolution = self.cfg.resolution_us.max(1) as f64;
        if self.probe.is_none()
            && !w.overload
            && let (Some(p), Some(b), Some(start)) = (p50, self.probe_p50_us.or(self.baseline_us), w.start_us)
        {
            if b < 4.0 * resolution {
                // Run times of a few clock ticks: their ratios are rounding, not queueing.
                self.capacity = None;
                self.capacity_shown = false;
            } else {
                // Little's law: the window's mean in-flight is its summed run time over its
                // length. Scaled by reference / p50 it counts the calls being served, not
                // those queued.
                let in_flight = w.sum_rtt_us / (now_us - start).max(1) as f64;
                let estimate = in_flight * b / p.max(resolution);
                let w = self.cfg.capacity_weight;
                self.capacity = Some(self.capacity.map_or(estimate, |c| (1.0 - w) * c + w * estimate));
                // Only a window that queued shows the downstream's limit; until one has, the
                // estimate is the load it was offered (an online trickle's, say), and holding
                // offline work to it made a backlog arriving after a quiet spell climb for
                // seconds (A, c = 8: 3-4 s to saturate through the product).
                if p > self.cfg.tolerance * b {
                    self.capacity_shown = true;
                }
            }
        }

        if let Some(mut probe) = self.probe {
            if w.overload {
                probe.restore = self.bound(probe.restore * self.cfg.backoff);
            }
            probe.windows_left = probe.windows_left.saturating_sub(1);
            self.probe = Some(probe);
            if probe.windows_left > 0 {
                return;
            }
            let halved = self.limit / 2.0;
            match p50 {
                Some(p)
                    if p > self.cfg.probe_rehalve_ratio * probe.reference_us
                        && probe.halvings < self.cfg.probe_max_halvings
                        && halved >= self.cfg.min as f64
                        && self.capacity.is_none_or(|c| halved >= c) =>
                {
                    // Still queueing at the halved limit: it was more than twice the
                    // downstream's capacity, so halve again before trusting the measurement.
                    // Not below the capacity estimate: there nothing queues, and a slow p50
                    // is the service time's own variance (at high variance the lowest window
                    // p50, the reference, is far below a typical one).
                    self.limit = halved;
                    self.probe = Some(Probe {
                        windows_left: self.cfg.probe_windows,
                        halvings: probe.halvings + 1,
                        ..probe
                    });
                }
                Some(p) => {
                    self.set_baseline(p, now_us, rand);
                    // The capacity estimate's reference: probes' p50s averaged, unbiased where
                    // the baseline (a minimum of noisy p50s) is biased low.
                    self.probe_p50_us = Some(self.probe_p50_us.map_or(p, |old| 0.5 * old + 0.5 * p));
                    self.limit = self.bound(probe.restore);
                    self.probe = None;
                }
                None => {
                    // Nothing but overload while probing: keep the old baseline for another
                    // period rather than adopt nothing.
                    let old = probe.reference_us;
                    self.set_baseline(old, now_us, rand);
                    self.limit = self.bound(probe.restore);
                    self.probe = None;
                }
            }
            return;
        }

        if w.overload {
            self.starting = false;
            self.limit = self.bound(self.limit * self.cfg.backoff);
        } else if let Some(p) = p50 {
            if self.baseline_us.is_none_or(|b| p <= b) {
                self.set_baseline(p, now_us, rand);
            }
            let baseline = self.baseline_us.unwrap_or(p);
            // App-limited guard: latency says nothing about a limit that was not reached, and
            // growing it while under-used would leave a later burst unprotected.
            if w.max_inflight as f64 >= self.limit / 2.0 {
                let raw = self.cfg.tolerance * baseline.max(resolution) / p.max(resolution);
                if self.starting && raw >= 1.0 {
                    // Slow start: nothing queues yet, double.
                    self.limit = self.bound(self.limit * 2.0);
                } else {
                    self.starting = false;
                    let gradient = raw.clamp(0.5, 1.0);
                    self.limit = self.bound(self.limit * gradient + self.limit.sqrt());
                }
            }
        }

        if self.baseline_us.is_some() && now_us >= self.baseline_expires_us {
            self.starting = false;
            let reference_us = self.baseline_us.unwrap_or_default();
            self.probe = Some(Probe {
                restore: self.limit,
                windows_left: self.cfg.probe_windows,
                halvings: 1,
                reference_us,
            });
            self.limit = self.bound(self.limit / 2.0);
        }
    }
}

impl Algorithm for P50Gradient {
    fn on_sample(&mut self, s: &Sample) {
        match s.outcome {
            Outcome::Ignore => return,
            Outcome::Success => {
                self.window.rtts.push(s.rtt_us.max(0));
                self.window.sum_rtt_us += s.rtt_us.max(0) as f64;
            }
            Outcome::Overload => self.window.overload = true,
        }
        let start = *self.window.start_us.get_or_insert(s.now_us);
        self.window.count += 1;
        self.window.max_inflight = self.window.max_inflight.max(s.inflight);
        // In slow start a window needs fewer samples (twice the limit, at least 4): at limit 1
        // twenty samples of a 50 ms call take a second, and slow start would take seconds.
        let min_samples = if self.starting {
            ((2.0 * self.limit) as usize).clamp(4, self.cfg.window_min_samples)
        } else {
            self.cfg.window_min_samples
        };
        if s.now_us.saturating_sub(start) >= self.window_len_us() && self.window.count >= min_samples {
            self.close_window(s.now_us, s.rand);
        }
    }

    fn limit(&self) -> i64 {
        (self.limit as i64).clamp(self.cfg.min, self.cfg.max)
    }

    fn estimate(&self) -> f64 {
        self.limit
    }

    fn offline_limit(&self) -> i64 {
        let limit = self.limit();
        // Until a probe has measured the reference, the estimate rests on the lowest window
        // p50, biased low at high variance: it would hold offline work far below capacity.
        // Nor before a window has queued: until then the estimate is only the load offered.
        let (Some(c), Some(_), true) = (self.capacity, self.probe_p50_us, self.capacity_shown) else {
            return limit;
        };
        let mut offline = c + c.sqrt();
        if self.probe.is_some() {
            // The probe measures an unqueued baseline: offline work must drain with the limit.
            offline /= 2.0;
        }
        (offline.ceil() as i64).clamp(self.cfg.min, limit)
    }

    fn name(&self) -> &'static str {
        "p50-gradient"
    }
}

/// The median (upper middle for even counts); reorders `v`.
fn median(v: &mut [i64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable(mid);
    Some(*m as f64)
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

    /// A closed loop against an ideal downstream with `c` slots and fixed service `s_us`:
    /// with `L` in flight the latency is `s * max(1, L / c)` (Little's law, no variance).
    /// Returns the time reached.
    fn closed_loop(alg: &mut P50Gradient, t0: i64, dur_us: i64, c: f64, s_us: f64) -> i64 {
        let mut now = t0;
        while now < t0 + dur_us {
            let l = alg.limit() as f64;
            let rtt = s_us * (l / c).max(1.0);
            // L calls finish per rtt.
            let step = (rtt / l) as i64;
            now += step.max(1);
            alg.on_sample(&Sample {
                now_us: now,
                rtt_us: rtt as i64,
                inflight: l as i64,
                outcome: Outcome::Success,
                rand: 0.5,
            });
        }
        now
    }

    #[test]
    fn p50_gradient_stays_within_bounds() {
        let cfg = P50GradientConfig { min: 3, max: 12, initial: 5, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        // Fast, saturated: grows but never past max.
        let t = feed(&mut g, 0, 5_000, 1_000, 100, |_| 10_000);
        assert_eq!(g.limit(), 12);
        // Very slow: the gradient shrinks it, but latency alone stops at 4, the fixed point of
        // L = L/2 + sqrt(L) (the gradient's floor of 0.5 plus the headroom).
        feed(&mut g, t, 5_000, 1_000, 100, |_| 1_000_000);
        assert_eq!(g.limit(), 4);
        // Explicit overload goes lower, to min and never below.
        let mut now = 20_000_000;
        for _ in 0..2_000 {
            now += 1_000;
            g.on_sample(&Sample {
                now_us: now,
                rtt_us: 1_000,
                inflight: 3,
                outcome: Outcome::Overload,
                rand: 0.1,
            });
            assert!((3..=12).contains(&g.limit()));
        }
        assert_eq!(g.limit(), 3);
    }

    #[test]
    fn p50_gradient_grows_for_run_times_below_the_clocks_tick() {
        // Millisecond clock, jobs of about a millisecond: run times read 0 or 1 ms.
        let cfg = P50GradientConfig { resolution_us: 1_000, initial: 4, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        let mut now = 0;
        for i in 0..20_000 {
            now += 100;
            let l = g.limit();
            // A first stretch at 0 ms sets a baseline of 0; then 1 ms, one tick more.
            let rtt = if i < 2_000 { 0 } else { 1_000 };
            g.on_sample(&Sample {
                now_us: now,
                rtt_us: rtt,
                inflight: l,
                outcome: Outcome::Success,
                rand: 0.5,
            });
        }
        assert!(g.limit() > 100, "no queueing seen, so no reason to stay low: {}", g.limit());
        assert_eq!(g.capacity(), None, "no capacity estimate from rounded run times");
        assert_eq!(g.offline_limit(), g.limit());
    }

    #[test]
    fn p50_gradient_does_not_grow_while_under_used() {
        let cfg = P50GradientConfig { initial: 20, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        // In flight never reaches L/2 = 10: fast calls, but no growth.
        feed(&mut g, 0, 5_000, 1_000, 9, |_| 10_000);
        assert_eq!(g.limit(), 20);
        // Reaching L/2 lets it grow.
        feed(&mut g, 5_000_000, 300, 1_000, 10, |_| 10_000);
        assert!(g.limit() > 20, "{}", g.limit());
    }

    #[test]
    fn p50_gradient_cuts_by_a_tenth_per_overloaded_window() {
        let cfg = P50GradientConfig { initial: 100, max: 1_000, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        // A baseline first (windows of 100 ms / 20 samples at 5 ms spacing, the fifth closing
        // on the last sample), under-used so the limit stays put.
        let t = feed(&mut g, 0, 101, 5_000, 10, |_| 10_000);
        assert_eq!(g.limit(), 100);
        // One window with an overload in it: exactly x0.9, whatever the latencies said.
        let mut now = t;
        for i in 0..25 {
            now += 5_000;
            let outcome = if i == 3 { Outcome::Overload } else { Outcome::Success };
            g.on_sample(&Sample { now_us: now, rtt_us: 10_000, inflight: 100, outcome, rand: 0.5 });
        }
        assert!((g.estimate() - 90.0).abs() < 1e-9, "{}", g.estimate());
        // The next overloaded window cuts again.
        for _ in 0..25 {
            now += 5_000;
            g.on_sample(&Sample {
                now_us: now,
                rtt_us: 10_000,
                inflight: 90,
                outcome: Outcome::Overload,
                rand: 0.5,
            });
        }
        assert!((g.estimate() - 81.0).abs() < 1e-9, "{}", g.estimate());
    }

    #[test]
    fn p50_gradient_probe_halves_then_restores_and_remeasures() {
        let cfg = P50GradientConfig { initial: 40, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        // Establish a 10 ms baseline while under-used (limit stays 40).
        let mut now = feed(&mut g, 0, 40, 5_000, 1, |_| 10_000);
        assert_eq!(g.baseline_us(), Some(10_000.0));
        assert_eq!(g.limit(), 40);
        // The downstream got slower for good (20 ms unloaded). The baseline stays 10 ms until it
        // expires (10 s × (1 + 0.2 × 0.5) = 11 s after it was set); meanwhile under-used.
        let mut saw_probe = false;
        let mut limits = Vec::new();
        while now < 13_000_000 {
            now += 5_000;
            g.on_sample(&Sample {
                now_us: now,
                rtt_us: 20_000,
                inflight: 1,
                outcome: Outcome::Success,
                rand: 0.5,
            });
            if g.probing() {
                saw_probe = true;
                limits.push(g.limit());
            }
        }
        assert!(saw_probe);
        // 20 ms > 1.5 × 10 ms: the probe halves again (40 → 20 → 10 → 5, three halvings) before
        // adopting the new baseline, then restores the limit.
        assert_eq!(limits.iter().copied().min(), Some(5));
        assert!(limits.contains(&20) && limits.contains(&10));
        assert!(!g.probing());
        assert_eq!(g.limit(), 40);
        assert_eq!(g.baseline_us(), Some(20_000.0));
    }

    #[test]
    fn p50_gradient_probe_of_an_unchanged_downstream_halves_once() {
        let cfg = P50GradientConfig { initial: 16, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        let mut now = feed(&mut g, 0, 40, 5_000, 1, |_| 10_000);
        let mut limits = Vec::new();
        while now < 13_000_000 {
            now += 5_000;
            g.on_sample(&Sample {
                now_us: now,
                rtt_us: 10_500,
                inflight: 1,
                outcome: Outcome::Success,
                rand: 0.0,
            });
            if g.probing() {
                limits.push(g.limit());
            }
        }
        assert!(!limits.is_empty());
        assert!(limits.iter().all(|&l| l == 8), "{limits:?}");
        assert_eq!(g.limit(), 16);
        assert_eq!(g.baseline_us(), Some(10_500.0));
    }

    #[test]
    fn p50_gradient_converges_near_capacity_and_follows_steps() {
        let mut g = P50Gradient::new(P50GradientConfig::default());
        // c = 8, S = 10 ms: settles a little above 8 (sqrt headroom, 25 % tolerance).
        let t = closed_loop(&mut g, 0, 20_000_000, 8.0, 10_000.0);
        let l8 = g.limit();
        assert!((9..=16).contains(&l8), "c=8: {l8}");
        // Capacity halves: the limit follows within a few seconds.
        let t = closed_loop(&mut g, t, 5_000_000, 4.0, 10_000.0);
        let l4 = g.limit();
        assert!((5..=9).contains(&l4), "c=4: {l4}");
        // And doubles to 16.
        closed_loop(&mut g, t, 5_000_000, 16.0, 10_000.0);
        let l16 = g.limit();
        assert!((17..=28).contains(&l16), "c=16: {l16}");
    }

    #[test]
    fn p50_gradient_estimates_capacity_for_offline_work_and_follows_steps() {
        let mut g = P50Gradient::new(P50GradientConfig::default());
        assert_eq!(g.offline_limit(), g.limit(), "no estimate yet: the whole limit");
        let t = closed_loop(&mut g, 0, 500_000, 8.0, 10_000.0);
        assert!(g.capacity().is_some());
        assert_eq!(g.offline_limit(), g.limit(), "no probe has measured the reference yet");
        // c = 8: the limit runs above 8 (its headroom queues), the estimate finds the 8 slots.
        let t = closed_loop(&mut g, t, 20_000_000, 8.0, 10_000.0);
        let c8 = g.capacity().unwrap_or_default();
        assert!((7.0..=9.0).contains(&c8), "c=8: estimate {c8}");
        assert!(
            (8..=12).contains(&g.offline_limit()) && g.offline_limit() <= g.limit(),
            "{}",
            g.offline_limit()
        );
        // Halved capacity: the estimate follows it down.
        let t = closed_loop(&mut g, t, 5_000_000, 4.0, 10_000.0);
        let c4 = g.capacity().unwrap_or_default();
        assert!((3.0..=5.0).contains(&c4), "c=4: estimate {c4}");
        // Doubled: the limit's headroom probes upward and the estimate follows.
        closed_loop(&mut g, t, 5_000_000, 16.0, 10_000.0);
        let c16 = g.capacity().unwrap_or_default();
        assert!((13.0..=17.0).contains(&c16), "c=16: estimate {c16}");
    }

    /// Offline work arriving after an online trickle alone (scenario A through the product):
    /// the capacity estimate measured at the trickle's load must not hold the backlog there.
    #[test]
    fn p50_gradient_lets_a_backlog_after_a_trickle_reach_capacity_in_about_a_second() {
        let mut g = P50Gradient::new(P50GradientConfig::default());
        // 10 s of a trickle: one call in flight at a time, 50 ms each, nothing queues.
        let mut now = feed(&mut g, 0, 200, 50_000, 1, |_| 50_000);
        assert!(g.capacity().is_some_and(|c| c < 2.0), "{:?}", g.capacity());
        // Then a backlog that runs as many calls as the offline limit allows, against c = 8
        // slots of 50 ms (queueing beyond 8).
        let start = now;
        let mut reached = None;
        while now < start + 5_000_000 {
            let l = g.offline_limit().max(1) as f64;
            let rtt = 50_000.0 * (l / 8.0).max(1.0);
            now += (rtt / l) as i64;
            g.on_sample(&Sample {
                now_us: now,
                rtt_us: rtt as i64,
                inflight: l as i64,
                outcome: Outcome::Success,
                rand: 0.5,
            });
            if reached.is_none() && g.offline_limit() >= 8 {
                reached = Some(now - start);
            }
        }
        let reached = reached.expect("the offline limit never reached the 8 slots");
        assert!(reached <= 1_500_000, "8 slots in use after {} ms", reached / 1_000);
    }

    #[test]
    fn p50_gradient_offline_limit_drains_with_the_probe() {
        let mut g = P50Gradient::new(P50GradientConfig::default());
        let mut now = closed_loop(&mut g, 0, 9_000_000, 8.0, 10_000.0);
        let before = g.offline_limit();
        let mut during = Vec::new();
        while now < 14_000_000 {
            now = closed_loop(&mut g, now, 10_000, 8.0, 10_000.0);
            if g.probing() {
                during.push(g.offline_limit());
            }
        }
        assert!(!during.is_empty(), "a probe ran");
        assert!(during.iter().all(|&o| o <= (before + 1) / 2 + 1), "{before} then {during:?}");
    }

    #[test]
    fn p50_gradient_recovers_from_an_inflated_start_probe_by_probe() {
        // Starts at 200 against c = 8: the first baseline is measured while queueing (25× too
        // high). Each probe measures at half the limit and lowers the baseline, so the limit
        // comes down, but only probe by probe: hence the low default start.
        let cfg = P50GradientConfig { initial: 200, ..Default::default() };
        let mut g = P50Gradient::new(cfg);
        let t = closed_loop(&mut g, 0, 10_000_000, 8.0, 10_000.0);
        let early = g.limit();
        closed_loop(&mut g, t, 50_000_000, 8.0, 10_000.0);
        eprintln!("early {early} late {}", g.limit());
        assert!(g.limit() * 2 < early, "{early} -> {}", g.limit());
    }
}
