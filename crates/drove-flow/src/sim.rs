//! The simulated world: a clock, seeded randomness and a downstream with `c` slots.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use drove_core::RateLimit;
use drove_core::gcra;
use tokio::sync::oneshot;

use crate::FlowError;

/// Model time in microseconds, carried by tokio's paused clock at one model µs per tokio
/// millisecond: tokio's timer wheel resolves 1 ms, which would round every 10 ms service time
/// by up to 10 %; scaled, the resolution is 1 µs of model time. A paused clock jumps straight
/// to the next timer, so the scale costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    start: tokio::time::Instant,
}

impl SimClock {
    fn start() -> Self {
        SimClock { start: tokio::time::Instant::now() }
    }

    /// Model µs since the run started.
    pub fn now_us(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Sleeps `us` model µs.
    pub async fn sleep_us(&self, us: i64) {
        if us > 0 {
            tokio::time::sleep(Duration::from_millis(us as u64)).await;
        }
    }

    /// Sleeps until model time `at_us`.
    pub async fn sleep_until_us(&self, at_us: i64) {
        let at = self.start + Duration::from_millis(at_us.max(0) as u64);
        tokio::time::sleep_until(at).await;
    }
}

/// Runs `f` on a fresh current-thread runtime with a paused clock, inside a `LocalSet` (the
/// simulation shares state through `Rc`). Same seed, same events: nothing here reads the wall
/// clock or a thread scheduler.
pub fn run_paused<F, Fut, T>(f: F) -> Result<T, FlowError>
where
    F: FnOnce(SimClock) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(FlowError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, async move { f(SimClock::start()).await }))
}

/// A seeded generator; each purpose (arrivals, service times, jitter) gets its own stream so
/// that changing one part of a run does not reshuffle the others.
#[derive(Clone, Debug)]
pub struct SimRng(fastrand::Rng);

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl SimRng {
    pub fn new(seed: u64, stream: u64) -> Self {
        SimRng(fastrand::Rng::with_seed(splitmix(seed ^ splitmix(stream.wrapping_add(1)))))
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        self.0.f64()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.0.f64(); // (0, 1]
        let u2 = self.0.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Lognormal with the given mean and shape `sigma`.
    pub fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        let mu = mean.ln() - sigma * sigma / 2.0;
        (mu + sigma * self.normal()).exp()
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.0.f64()).ln()
    }
}

/// How a throttling provider words its Retry-After.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// Exact, in milliseconds (what GCRA can say, and what Drove says).
    Millis,
    /// Rounded up to whole seconds (HTTP's delay-seconds).
    WholeSeconds,
}

/// A provider rate limit: GCRA, `per_s` starts per second with `burst`, changing over time.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProviderRate {
    /// `(from_us, per_s)`, sorted by time; the first applies from the start.
    pub steps: Vec<(i64, i64)>,
    pub burst: i64,
    pub retry_after: RetryAfter,
}

impl ProviderRate {
    pub fn per_s_at(&self, now_us: i64) -> i64 {
        self.steps.iter().take_while(|(at, _)| *at <= now_us).last().map_or(1, |(_, r)| *r)
    }
}

/// The downstream: `slots` calls served at once in FIFO order, lognormal service time, and
/// optionally a bound on waiting calls (503 beyond it) and a rate limit (429 + Retry-After).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DownstreamConfig {
    pub slots: i64,
    pub mean_us: f64,
    pub sigma: f64,
    /// Calls allowed to wait for a slot; more are answered 503 at once.
    pub queue_bound: Option<usize>,
    /// How long a rejection (429 or 503) takes to come back.
    pub reject_us: i64,
    pub rate: Option<ProviderRate>,
    /// `(at_us, slots)`: capacity steps.
    pub slot_steps: Vec<(i64, i64)>,
}

impl DownstreamConfig {
    pub fn new(slots: i64, mean_us: f64, sigma: f64) -> Self {
        DownstreamConfig {
            slots,
            mean_us,
            sigma,
            queue_bound: None,
            reject_us: 1_000,
            rate: None,
            slot_steps: Vec::new(),
        }
    }

    /// Slots in force at `t_us`.
    pub fn slots_at(&self, t_us: i64) -> i64 {
        self.slot_steps.iter().take_while(|(at, _)| *at <= t_us).last().map_or(self.slots, |(_, n)| *n)
    }

    /// Calls per second the downstream completes when saturated, at `t_us`.
    pub fn capacity_per_s_at(&self, t_us: i64) -> f64 {
        self.slots_at(t_us) as f64 * 1e6 / self.mean_us
    }
}

/// The downstream's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    Ok,
    /// 503: the wait queue is full.
    Unavailable,
    /// 429 with Retry-After (µs).
    Throttled {
        retry_after_us: i64,
    },
}

struct State {
    slots: i64,
    busy: i64,
    waiting: VecDeque<oneshot::Sender<()>>,
    tat_us: Option<i64>,
    rng: SimRng,
}

enum Admit {
    Slot,
    Wait(oneshot::Receiver<()>),
    Reject,
    Throttle(i64),
}

pub struct Downstream {
    cfg: DownstreamConfig,
    clock: SimClock,
    st: RefCell<State>,
    /// The slot count in force, shared with the oracle limit.
    pub slots_now: Rc<Cell<i64>>,
}

impl Downstream {
    pub fn new(cfg: DownstreamConfig, clock: SimClock, seed: u64) -> Rc<Self> {
        let slots = cfg.slots;
        Rc::new(Downstream {
            st: RefCell::new(State {
                slots,
                busy: 0,
                waiting: VecDeque::new(),
                tat_us: None,
                rng: SimRng::new(seed, 0xD0),
            }),
            cfg,
            clock,
            slots_now: Rc::new(Cell::new(slots)),
        })
    }

    pub fn config(&self) -> &DownstreamConfig {
        &self.cfg
    }

    fn admit(&self, now: i64) -> Admit {
        let mut st = self.st.borrow_mut();
        if let Some(rate) = &self.cfg.rate {
            let per_s = rate.per_s_at(now).max(1);
            let rl = RateLimit {
                limit: per_s,
                period_ms: 1_000,
                burst: Some(rate.burst.max(1)),
                learn: None,
                auto: false,
                per: None,
            };
            let g = gcra::take(&rl, st.tat_us, now, 1);
            if g.granted == 0 {
                let wait = g.next_at_us.unwrap_or(now).saturating_sub(now).max(1);
                let retry_after_us = match rate.retry_after {
                    RetryAfter::Millis => (wait + 999) / 1_000 * 1_000,
                    RetryAfter::WholeSeconds => (wait + 999_999) / 1_000_000 * 1_000_000,
                };
                return Admit::Throttle(retry_after_us);
            }
            st.tat_us = Some(g.tat_us);
        }
        if st.busy < st.slots {
            st.busy += 1;
            return Admit::Slot;
        }
        if self.cfg.queue_bound.is_some_and(|b| st.waiting.len() >= b) {
            return Admit::Reject;
        }
        let (tx, rx) = oneshot::channel();
        st.waiting.push_back(tx);
        Admit::Wait(rx)
    }

    /// One call: waits for a slot (FIFO), is served, frees the slot.
    pub async fn call(&self) -> Response {
        let now = self.clock.now_us();
        match self.admit(now) {
            Admit::Slot => {}
            Admit::Wait(rx) => {
                // The slot is counted as busy by whoever handed it over.
                if rx.await.is_err() {
                    return Response::Unavailable;
                }
            }
            Admit::Reject => {
                self.clock.sleep_us(self.cfg.reject_us).await;
                return Response::Unavailable;
            }
            Admit::Throttle(retry_after_us) => {
                self.clock.sleep_us(self.cfg.reject_us).await;
                return Response::Throttled { retry_after_us };
            }
        }
        let service = {
            let mut st = self.st.borrow_mut();
            st.rng.lognormal(self.cfg.mean_us, self.cfg.sigma).round().max(1.0) as i64
        };
        self.clock.sleep_us(service).await;
        let mut st = self.st.borrow_mut();
        st.busy -= 1;
        Self::fill(&mut st);
        Response::Ok
    }

    fn fill(st: &mut State) {
        while st.busy < st.slots {
            match st.waiting.pop_front() {
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        st.busy += 1;
                    }
                }
                None => break,
            }
        }
    }

    /// Changes the slot count (a capacity step). Calls in service finish; fewer start.
    pub fn set_slots(&self, slots: i64) {
        let mut st = self.st.borrow_mut();
        st.slots = slots.max(0);
        self.slots_now.set(st.slots);
        Self::fill(&mut st);
    }
}

/// Nearest-rank percentile (`q` in `[0, 1]`) of `v`; sorts `v`. NaN when empty.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_clock_is_exact_at_the_model_scale() {
        let (a, b) = run_paused(|clock| async move {
            clock.sleep_us(9_563).await;
            let a = clock.now_us();
            clock.sleep_until_us(20_001).await;
            (a, clock.now_us())
        })
        .unwrap();
        assert_eq!((a, b), (9_563, 20_001));
    }

    #[test]
    fn lognormal_has_the_asked_mean_and_spread() {
        let mut r = SimRng::new(7, 1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.lognormal(10_000.0, 0.3)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 10_000.0).abs() < 50.0, "{mean}");
        let mut v = xs.clone();
        let p50 = percentile(&mut v, 0.5);
        // median = mean · exp(-σ²/2)
        assert!((p50 / (10_000.0 * (-0.045f64).exp()) - 1.0).abs() < 0.01, "{p50}");
    }

    #[test]
    fn downstream_serves_c_at_once_and_rejects_beyond_its_bound() {
        let out = run_paused(|clock| async move {
            let mut cfg = DownstreamConfig::new(2, 10_000.0, 0.0);
            cfg.queue_bound = Some(1);
            let ds = Downstream::new(cfg, clock, 1);
            let mut handles = Vec::new();
            for _ in 0..4 {
                let ds = ds.clone();
                handles.push(tokio::task::spawn_local(async move {
                    let r = ds.call().await;
                    (r, clock.now_us())
                }));
            }
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        })
        .unwrap();
        // σ = 0: every call takes exactly 10 ms; two in service, one waits, one is refused.
        assert_eq!(out[0], (Response::Ok, 10_000));
        assert_eq!(out[1], (Response::Ok, 10_000));
        assert_eq!(out[2], (Response::Ok, 20_000));
        assert_eq!(out[3], (Response::Unavailable, 1_000));
    }

    #[test]
    fn provider_rate_throttles_with_retry_after() {
        let out = run_paused(|clock| async move {
            let mut cfg = DownstreamConfig::new(100, 1_000.0, 0.0);
            cfg.rate = Some(ProviderRate { steps: vec![(0, 10)], burst: 2, retry_after: RetryAfter::Millis });
            let ds = Downstream::new(cfg, clock, 1);
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(ds.call().await);
            }
            out
        })
        .unwrap();
        // Burst 2 passes; the third (1 ms after the second finished, at t = 2 ms) waits for the
        // next emission at 100 ms: Retry-After 98 ms.
        assert_eq!(out[..2], [Response::Ok, Response::Ok]);
        assert_eq!(out[2], Response::Throttled { retry_after_us: 98_000 });
    }
}
