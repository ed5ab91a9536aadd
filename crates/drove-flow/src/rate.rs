//! Client side of scenario B: instances calling a provider that rate-limits with 429 +
//! Retry-After, under one of four policies.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use drove_core::gcra;
use drove_core::learned::{self, Learned};
use drove_core::{Millis, RateLimit};
use serde::Serialize;
use tokio::sync::Notify;

use crate::FlowError;
use crate::sim::{Downstream, DownstreamConfig, Response, SimClock, SimRng, run_paused};

/// How instances pace their calls.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePolicy {
    /// No pacing; a 429 is a failed attempt and the job is retried at once.
    Naive,
    /// A local bucket per instance at `per_s` (the provider's published rate); a 429 is a
    /// failed attempt, retried through the bucket.
    StaticBucket { per_s: f64, burst: i64 },
    /// Drove's, as the server runs it: one GCRA scope shared by every instance (as the store
    /// keeps it) whose configured rate (`ceiling_per_s`) is a ceiling; a 429 holds the scope
    /// until Retry-After, uses no attempt, and cuts the rate in force
    /// (`drove_core::learned`, the same code the store's finish calls).
    Learned { ceiling_per_s: f64 },
    /// The shared scope at `fraction` of the provider's true rate at each instant (it knows the
    /// schedule); a 429 holds the scope like `Adaptive`.
    KnownLimit { fraction: f64 },
}

impl RatePolicy {
    pub fn label(&self) -> String {
        match self {
            RatePolicy::Naive => "naive retry".into(),
            RatePolicy::StaticBucket { .. } => "static bucket".into(),
            RatePolicy::Learned { .. } => "learned+gcra".into(),
            RatePolicy::KnownLimit { fraction } => format!("known limit {fraction}R"),
        }
    }
}

/// One run of scenario B.
#[derive(Clone, Debug)]
pub struct RateRun {
    pub downstream: DownstreamConfig,
    pub policy: RatePolicy,
    pub instances: usize,
    /// Calls each instance may have in flight.
    pub workers: i64,
    /// Attempts a job has (429s count against them unless the policy says otherwise).
    pub max_attempts: u32,
    pub duration_us: i64,
    pub seed: u64,
}

/// One call.
#[derive(Clone, Copy, Debug)]
pub struct RateCall {
    pub instance: usize,
    pub sent_us: i64,
    pub done_us: i64,
    pub throttled: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RateData {
    pub calls: Vec<RateCall>,
    /// Job attempts used up by 429s.
    pub attempts_on_429: u64,
    /// Jobs that failed for good because 429s used up their attempts.
    pub jobs_failed: u64,
    /// `(t_us, rate per s)` of the shared adaptive scope, every 100 ms.
    pub trace: Vec<(i64, f64)>,
}

/// The scope every instance shares: what the store's queue row holds (a GCRA timestamp and the
/// learned rate).
struct Shared {
    tat_us: Option<i64>,
    learned: Option<Learned>,
}

struct Instance {
    id: usize,
    /// Jobs waiting to be retried, with the attempts they have used.
    retry: RefCell<VecDeque<u32>>,
    inflight: Cell<i64>,
    /// The instance's own bucket (static policy).
    local_tat_us: Cell<Option<i64>>,
    notify: Notify,
    /// Jitters when the instance looks again, as network and store latency do: without it the
    /// simulation would wake instances in the same order every time and one would win every
    /// emission.
    rng: RefCell<SimRng>,
}

struct World {
    clock: SimClock,
    run: RateRun,
    downstream: Rc<Downstream>,
    shared: RefCell<Shared>,
    data: RefCell<RateData>,
}

/// Burst of the shared scope: 2 lets a start that comes a little after its emission time (the
/// jitter above) keep the pace instead of losing the slot.
const SHARED_BURST: i64 = 2;

/// A rate of `per_s` (fractional) as a GCRA limit with per-mille precision.
fn rate_limit(per_s: f64, burst: i64) -> RateLimit {
    RateLimit {
        limit: ((per_s * 1_000.0).round() as i64).max(1),
        period_ms: 1_000_000,
        burst: Some(burst.max(1)),
        learn: Some(false),
        auto: false,
        per: None,
    }
}

/// The configured rate as a learning ceiling.
fn ceiling_learning(mut r: RateLimit) -> RateLimit {
    r.learn = None;
    r
}

impl World {
    /// The shared scope's pace now: (emission interval µs, burst).
    fn shared_pace(&self, now: i64) -> Option<(i64, i64)> {
        match &self.run.policy {
            RatePolicy::Learned { ceiling_per_s } => {
                let ceiling = rate_limit(*ceiling_per_s, 1);
                let interval = learned::interval_in_force(
                    &ceiling_learning(ceiling),
                    self.shared.borrow().learned.as_ref(),
                    Millis(now / 1_000),
                );
                Some((interval, 1))
            }
            RatePolicy::KnownLimit { fraction } => {
                let r = self.downstream.config().rate.as_ref().map_or(1, |r| r.per_s_at(now));
                Some((gcra::emission_us(&rate_limit(r as f64 * fraction, 1)), SHARED_BURST))
            }
            _ => None,
        }
    }

    /// Asks the pacing for one start now: `Ok` or the time to look again.
    fn take(&self, inst: &Instance, now: i64) -> Result<(), i64> {
        match &self.run.policy {
            RatePolicy::Naive => Ok(()),
            RatePolicy::StaticBucket { per_s, burst } => {
                let g = gcra::take(&rate_limit(*per_s, *burst), inst.local_tat_us.get(), now, 1);
                if g.granted == 1 {
                    inst.local_tat_us.set(Some(g.tat_us));
                    Ok(())
                } else {
                    Err(g.next_at_us.unwrap_or(now + 1_000))
                }
            }
            RatePolicy::Learned { .. } | RatePolicy::KnownLimit { .. } => {
                let (interval, burst) = self.shared_pace(now).unwrap_or((1_000_000, 1));
                let mut sh = self.shared.borrow_mut();
                let g = gcra::take_at(interval, burst, sh.tat_us, now, 1);
                if g.granted == 1 {
                    sh.tat_us = Some(g.tat_us);
                    Ok(())
                } else {
                    // Look again at the next emission, but at least every 10 ms: the adaptive
                    // rate may have risen meanwhile.
                    Err(g.next_at_us.unwrap_or(now + 1_000).min(now + 10_000))
                }
            }
        }
    }

    fn shared_scope(&self) -> bool {
        matches!(self.run.policy, RatePolicy::Learned { .. } | RatePolicy::KnownLimit { .. })
    }
}

async fn call(world: Rc<World>, inst: Rc<Instance>, mut attempts: u32) {
    loop {
        let sent_us = world.clock.now_us();
        let resp = world.downstream.call().await;
        let done_us = world.clock.now_us();
        let throttled = matches!(resp, Response::Throttled { .. });
        world.data.borrow_mut().calls.push(RateCall { instance: inst.id, sent_us, done_us, throttled });
        match resp {
            Response::Throttled { retry_after_us } if world.shared_scope() => {
                // Drove's throttled outcome: tell the rate, hold the whole scope (every instance
                // sees it: it is the shared GCRA timestamp) until Retry-After or, under a learned
                // rate, one interval of the rate after the cut, and put the job back without
                // using an attempt.
                let until = done_us + retry_after_us;
                let (interval, burst) = world.shared_pace(done_us).unwrap_or((1_000_000, 1));
                // What the provider accepted over the last second, as the store counts it.
                let accepted_1s = world
                    .data
                    .borrow()
                    .calls
                    .iter()
                    .filter(|c| !c.throttled && c.done_us > done_us - 1_000_000)
                    .count() as i64;
                {
                    let mut sh = world.shared.borrow_mut();
                    let mut until = until;
                    if let RatePolicy::Learned { ceiling_per_s } = &world.run.policy {
                        // As the store does: the rate learns first, the hold lasts what it says.
                        let ceiling = ceiling_learning(rate_limit(*ceiling_per_s, 1));
                        let now = Millis(done_us / 1_000);
                        if let Some(l) =
                            learned::on_throttled(&ceiling, sh.learned.as_ref(), now, accepted_1s)
                        {
                            sh.learned = Some(l);
                        }
                        let held =
                            learned::hold_until(&ceiling, sh.learned.as_ref(), Millis(until / 1_000), now);
                        until = until.min(held.0 * 1_000);
                    }
                    sh.tat_us = Some(gcra::hold_until_at(interval, burst, sh.tat_us, until));
                }
                inst.retry.borrow_mut().push_back(attempts);
                break;
            }
            Response::Throttled { .. } => {
                // A job system that treats 429 as a failure: the attempt is spent.
                attempts += 1;
                world.data.borrow_mut().attempts_on_429 += 1;
                if attempts >= world.run.max_attempts {
                    world.data.borrow_mut().jobs_failed += 1;
                    break;
                }
                if matches!(world.run.policy, RatePolicy::Naive) {
                    continue;
                }
                inst.retry.borrow_mut().push_back(attempts);
                break;
            }
            Response::Ok | Response::Unavailable => break,
        }
    }
    inst.inflight.set(inst.inflight.get() - 1);
    inst.notify.notify_one();
}

async fn instance_loop(world: Rc<World>, inst: Rc<Instance>) {
    loop {
        if inst.inflight.get() >= world.run.workers {
            inst.notify.notified().await;
            continue;
        }
        let now = world.clock.now_us();
        match world.take(&inst, now) {
            Ok(()) => {
                // Retries first, then fresh jobs from the (endless) backlog.
                let attempts = inst.retry.borrow_mut().pop_front().unwrap_or(0);
                inst.inflight.set(inst.inflight.get() + 1);
                tokio::task::spawn_local(call(world.clone(), inst.clone(), attempts));
            }
            Err(at) => {
                let jitter = (inst.rng.borrow_mut().f64() * 200.0) as i64;
                world.clock.sleep_until_us(at.max(now + 1) + jitter).await;
            }
        }
    }
}

async fn trace(world: Rc<World>) {
    let mut t = 0;
    loop {
        if matches!(world.run.policy, RatePolicy::Learned { .. })
            && let Some((interval, _)) = world.shared_pace(t)
        {
            world.data.borrow_mut().trace.push((t, learned::per_second(interval)));
        }
        t += 100_000;
        world.clock.sleep_until_us(t).await;
    }
}

impl RateRun {
    pub fn run(&self) -> Result<RateData, FlowError> {
        let run = self.clone();
        run_paused(move |clock| async move {
            let downstream = Downstream::new(run.downstream.clone(), clock, run.seed);
            let world = Rc::new(World {
                clock,
                downstream,
                shared: RefCell::new(Shared { tat_us: None, learned: None }),
                data: RefCell::new(RateData::default()),
                run: run.clone(),
            });
            for id in 0..run.instances {
                let inst = Rc::new(Instance {
                    id,
                    retry: RefCell::new(VecDeque::new()),
                    inflight: Cell::new(0),
                    local_tat_us: Cell::new(None),
                    notify: Notify::new(),
                    rng: RefCell::new(SimRng::new(run.seed, 0xC0 + id as u64)),
                });
                tokio::task::spawn_local(instance_loop(world.clone(), inst));
            }
            tokio::task::spawn_local(trace(world.clone()));
            clock.sleep_until_us(run.duration_us).await;
            std::mem::take(&mut *world.data.borrow_mut())
        })
    }
}
