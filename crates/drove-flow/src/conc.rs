//! Client side of scenarios A and C: load sources, a priority queue and a concurrency gate
//! driven by an [`Algorithm`], calling the simulated downstream.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use drove_core::adaptive::{Algorithm, OFFLINE_HOLD_US, Outcome, P50Gradient, P50GradientConfig, Sample};
use serde::Serialize;
use tokio::sync::Notify;

use crate::FlowError;
use crate::baselines::{Gradient2, Gradient2Config, StaticLimit, Vegas, VegasConfig};
use crate::sim::{Downstream, DownstreamConfig, Response, SimClock, SimRng, run_paused};

/// Which lane a job is in (docs/API.md "Pools and lanes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Online,
    Offline,
}

impl Class {
    fn idx(self) -> usize {
        match self {
            Class::Online => 0,
            Class::Offline => 1,
        }
    }
}

/// Where jobs come from.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `jobs` jobs all enqueued at `from_us` (closed loop: as many in flight as the gate allows).
    Backlog { class: Class, from_us: i64, jobs: u64 },
    /// Poisson arrivals (open loop).
    Poisson { class: Class, per_s: f64, from_us: i64, until_us: i64 },
}

/// Which waiting job gets the next permit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Oldest first, whatever the lane.
    Fifo,
    /// Online first, up to the limit; offline gets the rest up to the algorithm's offline limit
    /// (the downstream's capacity estimate), and never less than `offline_min_share` of that
    /// (when it has work), so it cannot starve.
    Strict { offline_min_share: f64 },
}

/// The limit algorithm of a run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgSpec {
    P50Gradient(#[serde(skip)] P50GradientConfig),
    Static(i64),
    /// Static at the downstream's true slot count, following its steps.
    Oracle,
    Vegas,
    Gradient2,
}

impl AlgSpec {
    pub fn label(&self) -> String {
        match self {
            AlgSpec::P50Gradient(_) => "p50-gradient".into(),
            AlgSpec::Static(n) => format!("static {n}"),
            AlgSpec::Oracle => "oracle".into(),
            AlgSpec::Vegas => "vegas".into(),
            AlgSpec::Gradient2 => "gradient2".into(),
        }
    }

    fn build(&self, slots: Rc<Cell<i64>>) -> Box<dyn Algorithm> {
        match self {
            AlgSpec::P50Gradient(cfg) => Box::new(P50Gradient::new(*cfg)),
            AlgSpec::Static(n) => Box::new(StaticLimit { limit: *n }),
            AlgSpec::Oracle => Box::new(Oracle { slots }),
            AlgSpec::Vegas => Box::new(Vegas::new(VegasConfig::default())),
            AlgSpec::Gradient2 => Box::new(Gradient2::new(Gradient2Config::default())),
        }
    }
}

/// Knows the downstream's slot count at every instant: the physical best a static limit can do.
struct Oracle {
    slots: Rc<Cell<i64>>,
}

impl Algorithm for Oracle {
    fn on_sample(&mut self, _sample: &Sample) {}
    fn limit(&self) -> i64 {
        self.slots.get().max(1)
    }
    fn name(&self) -> &'static str {
        "oracle"
    }
}

/// One simulated run of the concurrency scenarios.
#[derive(Clone, Debug)]
pub struct ConcRun {
    pub downstream: DownstreamConfig,
    pub alg: AlgSpec,
    pub priority: Priority,
    pub sources: Vec<Source>,
    pub duration_us: i64,
    pub seed: u64,
    /// How often the limit is recorded.
    pub trace_every_us: i64,
}

/// One call that came back.
#[derive(Clone, Copy, Debug)]
pub struct CallRec {
    pub class: Class,
    pub enqueued_us: i64,
    pub sent_us: i64,
    pub done_us: i64,
    pub ok: bool,
}

/// What a run recorded.
#[derive(Clone, Debug, Default)]
pub struct ConcData {
    pub calls: Vec<CallRec>,
    /// Open-loop arrivals `(class, at_us)`.
    pub arrivals: Vec<(Class, i64)>,
    /// Jobs still waiting or in flight at the end `(class, enqueued_us)` (backlogs excluded).
    pub unfinished: Vec<(Class, i64)>,
    /// `(t_us, limit estimate)` every `trace_every_us`.
    pub trace: Vec<(i64, f64)>,
    /// `(t_us, offline limit)` every `trace_every_us`.
    pub offline_trace: Vec<(i64, f64)>,
}

#[derive(Default)]
struct Lane {
    /// Enqueue times of individual waiting jobs (arrivals, and jobs back after a 503).
    queue: VecDeque<i64>,
    backlog_left: u64,
    backlog_since: i64,
    inflight: i64,
}

impl Lane {
    /// Enqueue time of the oldest waiting job.
    fn head(&self) -> Option<i64> {
        let b = (self.backlog_left > 0).then_some(self.backlog_since);
        match (self.queue.front().copied(), b) {
            (Some(q), Some(b)) => Some(q.min(b)),
            (q, b) => q.or(b),
        }
    }

    fn pop(&mut self) -> Option<(i64, bool)> {
        let b = (self.backlog_left > 0).then_some(self.backlog_since);
        match (self.queue.front().copied(), b) {
            (Some(q), Some(b)) if b < q => {
                self.backlog_left -= 1;
                Some((b, true))
            }
            (Some(q), _) => {
                self.queue.pop_front();
                Some((q, false))
            }
            (None, Some(b)) => {
                self.backlog_left -= 1;
                Some((b, true))
            }
            (None, None) => None,
        }
    }
}

struct Client {
    clock: SimClock,
    downstream: Rc<Downstream>,
    alg: RefCell<Box<dyn Algorithm>>,
    priority: Priority,
    lanes: RefCell<[Lane; 2]>,
    inflight: Cell<i64>,
    /// When an online call last started or ended.
    online_seen_us: Cell<Option<i64>>,
    notify: Notify,
    rng: RefCell<SimRng>,
    data: RefCell<ConcData>,
}

impl Client {
    /// Calls in flight beyond which offline work waits: the algorithm's offline limit while
    /// online work is about (running, waiting, or seen within [`OFFLINE_HOLD_US`]), else the
    /// whole limit.
    fn offline_limit(&self, lanes: &[Lane; 2], limit: i64) -> i64 {
        let now = self.clock.now_us();
        let online_active = lanes[0].inflight > 0
            || lanes[0].head().is_some()
            || self.online_seen_us.get().is_some_and(|t| now - t < OFFLINE_HOLD_US);
        if online_active { self.alg.borrow().offline_limit().min(limit) } else { limit }
    }

    /// The next job to send, if the gate has room.
    fn next(&self) -> Option<(Class, i64, bool)> {
        let limit = self.alg.borrow().limit();
        if self.inflight.get() >= limit {
            return None;
        }
        let mut lanes = self.lanes.borrow_mut();
        let class = match self.priority {
            Priority::Fifo => match (lanes[0].head(), lanes[1].head()) {
                (Some(a), Some(b)) => Some(if b < a { Class::Offline } else { Class::Online }),
                (Some(_), None) => Some(Class::Online),
                (None, Some(_)) => Some(Class::Offline),
                (None, None) => None,
            },
            Priority::Strict { offline_min_share } => {
                // Offline work fills the downstream's capacity, not the limit: the headroom
                // above capacity would only queue it in the downstream, where online calls
                // would then wait behind it.
                let offline_limit = self.offline_limit(&lanes, limit);
                let floor = (offline_min_share * offline_limit as f64).ceil() as i64;
                let offline_waiting = lanes[1].head().is_some();
                if offline_waiting && lanes[1].inflight < floor {
                    Some(Class::Offline)
                } else if lanes[0].head().is_some() {
                    Some(Class::Online)
                } else if offline_waiting && self.inflight.get() < offline_limit {
                    Some(Class::Offline)
                } else {
                    None
                }
            }
        }?;
        if class == Class::Online {
            self.online_seen_us.set(Some(self.clock.now_us()));
        }
        let lane = &mut lanes[class.idx()];
        let (enq, from_backlog) = lane.pop()?;
        lane.inflight += 1;
        self.inflight.set(self.inflight.get() + 1);
        Some((class, enq, from_backlog))
    }

    async fn call(self: Rc<Self>, class: Class, enqueued_us: i64, from_backlog: bool) {
        let sent_us = self.clock.now_us();
        let inflight = self.inflight.get();
        let resp = self.downstream.call().await;
        let done_us = self.clock.now_us();
        if class == Class::Online {
            self.online_seen_us.set(Some(done_us));
        }
        let ok = resp == Response::Ok;
        self.inflight.set(self.inflight.get() - 1);
        {
            let mut lanes = self.lanes.borrow_mut();
            let lane = &mut lanes[class.idx()];
            lane.inflight -= 1;
            if !ok {
                // Refused: the job waits again, first in line, keeping its enqueue time.
                if from_backlog {
                    lane.backlog_left += 1;
                } else {
                    lane.queue.push_front(enqueued_us);
                }
            }
        }
        let outcome = if ok { Outcome::Success } else { Outcome::Overload };
        let rand = self.rng.borrow_mut().f64();
        self.alg.borrow_mut().on_sample(&Sample {
            now_us: done_us,
            rtt_us: done_us - sent_us,
            inflight,
            outcome,
            rand,
        });
        self.data.borrow_mut().calls.push(CallRec { class, enqueued_us, sent_us, done_us, ok });
        self.notify.notify_one();
    }
}

async fn dispatch(client: Rc<Client>) {
    loop {
        while let Some((class, enq, from_backlog)) = client.next() {
            tokio::task::spawn_local(client.clone().call(class, enq, from_backlog));
        }
        client.notify.notified().await;
    }
}

async fn poisson(client: Rc<Client>, class: Class, per_s: f64, from_us: i64, until_us: i64, seed: u64) {
    let mut rng = SimRng::new(seed, 0xA0 + class.idx() as u64);
    let mean_gap = 1e6 / per_s;
    let mut t = from_us as f64;
    loop {
        t += rng.exp(mean_gap);
        if t >= until_us as f64 {
            return;
        }
        client.clock.sleep_until_us(t as i64).await;
        let now = client.clock.now_us();
        client.lanes.borrow_mut()[class.idx()].queue.push_back(now);
        client.data.borrow_mut().arrivals.push((class, now));
        client.notify.notify_one();
    }
}

async fn backlog(client: Rc<Client>, class: Class, from_us: i64, jobs: u64) {
    client.clock.sleep_until_us(from_us).await;
    {
        let mut lanes = client.lanes.borrow_mut();
        let lane = &mut lanes[class.idx()];
        lane.backlog_left += jobs;
        lane.backlog_since = from_us;
    }
    client.notify.notify_one();
}

async fn steps(client: Rc<Client>, steps: Vec<(i64, i64)>) {
    for (at, slots) in steps {
        client.clock.sleep_until_us(at).await;
        client.downstream.set_slots(slots);
        // The oracle's limit follows the slots: let the gate look again.
        client.notify.notify_one();
    }
}

async fn trace(client: Rc<Client>, every_us: i64) {
    let mut t = 0;
    loop {
        let (est, limit) = {
            let alg = client.alg.borrow();
            (alg.estimate(), alg.limit())
        };
        let offline = client.offline_limit(&client.lanes.borrow(), limit) as f64;
        {
            let mut data = client.data.borrow_mut();
            data.trace.push((t, est));
            data.offline_trace.push((t, offline));
        }
        t += every_us;
        client.clock.sleep_until_us(t).await;
    }
}

impl ConcRun {
    /// Runs the simulation to `duration_us` of model time.
    pub fn run(&self) -> Result<ConcData, FlowError> {
        let run = self.clone();
        run_paused(move |clock| async move {
            let downstream = Downstream::new(run.downstream.clone(), clock, run.seed);
            let alg = run.alg.build(downstream.slots_now.clone());
            let client = Rc::new(Client {
                clock,
                downstream: downstream.clone(),
                alg: RefCell::new(alg),
                priority: run.priority,
                lanes: RefCell::new([Lane::default(), Lane::default()]),
                inflight: Cell::new(0),
                online_seen_us: Cell::new(None),
                notify: Notify::new(),
                rng: RefCell::new(SimRng::new(run.seed, 0xB0)),
                data: RefCell::new(ConcData::default()),
            });
            for src in &run.sources {
                match *src {
                    Source::Backlog { class, from_us, jobs } => {
                        tokio::task::spawn_local(backlog(client.clone(), class, from_us, jobs));
                    }
                    Source::Poisson { class, per_s, from_us, until_us } => {
                        tokio::task::spawn_local(poisson(
                            client.clone(),
                            class,
                            per_s,
                            from_us,
                            until_us,
                            run.seed,
                        ));
                    }
                }
            }
            tokio::task::spawn_local(steps(client.clone(), run.downstream.slot_steps.clone()));
            tokio::task::spawn_local(trace(client.clone(), run.trace_every_us.max(1)));
            tokio::task::spawn_local(dispatch(client.clone()));
            clock.sleep_until_us(run.duration_us).await;

            let mut data = std::mem::take(&mut *client.data.borrow_mut());
            // Jobs that arrived but never came back: their latency is at least the time they
            // waited, and leaving them out would flatter a policy that starves them.
            let mut done: Vec<(Class, i64)> =
                data.calls.iter().filter(|c| c.ok).map(|c| (c.class, c.enqueued_us)).collect();
            done.sort_by_key(|&(c, t)| (c.idx(), t));
            let mut arrived = data.arrivals.clone();
            arrived.sort_by_key(|&(c, t)| (c.idx(), t));
            data.unfinished = multiset_minus(&arrived, &done);
            data
        })
    }
}

/// `a - b` for sorted multisets.
fn multiset_minus(a: &[(Class, i64)], b: &[(Class, i64)]) -> Vec<(Class, i64)> {
    let key = |x: &(Class, i64)| (x.0.idx(), x.1);
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() {
        if j < b.len() && key(&b[j]) < key(&a[i]) {
            j += 1;
        } else if j < b.len() && key(&b[j]) == key(&a[i]) {
            i += 1;
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out
}
