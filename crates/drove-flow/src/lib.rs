//! Drove's flow-control benchmark (`drove bench flow`): the adaptive concurrency limiter, the
//! learned rate of `drove_core::learned` and lane priority, run against a simulated
//! downstream next to the baselines they must beat (docs/FLOW.md §5.1, issue 5).
//!
//! - Scenario A, adaptive concurrency: a downstream with `c` slots, lognormal service time
//!   (mean 10 ms), FIFO queue; closed-loop backlog, 50 % open-loop load, a bounded queue with
//!   503 beyond it, capacity steps, a lull then a burst. Drove's `P50Gradient` against static
//!   `c/2`, static `8c`, the oracle (static at the true `c`) and ports of Netflix Vegas and
//!   Gradient2.
//! - Scenario B, provider rate limit: GCRA at R = 100/s, burst 10, 429 with Retry-After;
//!   R halves at half time and comes back at three quarters; 1 and 3 client instances.
//!   Drove's policy is the server's: one GCRA scope shared by every instance (`drove_core::gcra`,
//!   as the store keeps it) whose configured rate is a ceiling, cut and probed back by
//!   `drove_core::learned` (the code the store's finish calls), held one interval of the cut
//!   rate on a 429, no attempt used; against naive immediate retry, a static bucket per instance and the
//!   known limit.
//! - Scenario C, online vs offline on one downstream: strict priority in front of the adaptive
//!   limiter, offline work held to the limiter's offline limit (its capacity estimate) with a
//!   minimum share of it; against FIFO and the oracle. The research's cells (c = 8, σ = 0.3,
//!   docs/FLOW.md §5.1), plus the busiest one at c = 32 and at σ = 1.2.
//!
//! Key decision: everything runs on a current-thread tokio runtime with a paused clock, so a
//! minute of traffic costs a second or two of CPU and a run is a function of its seed (no wall
//! clock, no threads inside a run). Model time is in µs, carried at one model µs per tokio
//! millisecond (see [`sim::SimClock`]). Every row runs on several seeds; figures are reported
//! as median and worst, and targets are judged on the worst. One parameter set serves every
//! cell ([`scenarios::candidate`]); the baselines stay in the matrix and must fail where the
//! research says they fail, or the benchmark proves nothing.
//!
//! Must not depend on a store, the engine or an HTTP stack: it measures algorithms, and the
//! engine will depend on the same pure code in drove-core rather than on this crate.
//!
//! # How the limiter is fed in production (design note)
//!
//! The engine's limit service, per queue with `adaptive: {min, max}` (or per pool), keeps one
//! `P50Gradient` (`P50GradientConfig::bounded(min, max)`) and feeds it every run that ends:
//! 1. Finished jobs: `Store::recent_runs(queue, since, limit)` every 100 ms, up to 50 ms ago,
//!    each as a `Sample` with `rtt = finished_at - started_at`, `now = finished_at`, `outcome =
//!    Success` (a failure of the job's own is still a latency sample). `inflight` is the number
//!    of the queue's (or pool's) running jobs when the run started; the store does not record it
//!    per run, so the service passes the running count it saw at its previous look, which is
//!    what the app-limited guard needs (were we near the limit?).
//! 2. Run ends that are not terminal and so are not in `recent_runs` (retryable failures,
//!    timeouts with attempts left, throttled outcomes, releases): fed by the in-process
//!    completer and the reaper when they commit them. Timeouts and throttled outcomes (a 429
//!    from a handler, exit 75 from a `drove worker` child, `/fail` with `throttled`) are
//!    `Overload`: a window with any of them cuts the limit by a tenth, once; a throttled outcome
//!    also holds its scope in the store (`learned::hold_until`: one interval of the cut rate under
//!    a learning rate, the whole Retry-After under `learn: false`, nothing without a rate) and
//!    uses no attempt. Cancelled runs and lost leases are `Ignore`.
//! 3. The limit is written with `Store::set_limit(LimitScope::Queue(name) |
//!    LimitScope::Pool(name), Some(limit))` when it changed, and a pool's offline limit
//!    (`Algorithm::offline_limit`) with `Store::set_offline_limit`. The claim transaction
//!    enforces them, so they hold fleet-wide although one node computes them; any node may
//!    run the service (the samples come from the store, so each computes nearly the same
//!    limits, and the last writer wins).
//!
//! Rates are learned in the store itself: a throttled outcome under a `rate` holds the scope
//! (`learned::hold_until`) and cuts the rate in force (`drove_core::learned::on_throttled`) in the
//! same transaction, and claims pace at `learned::interval_in_force`; this benchmark runs the
//! same functions.

pub mod baselines;
pub mod conc;
pub mod rate;
pub mod report;
pub mod scenarios;
pub mod sim;

use std::sync::Mutex;

pub use report::{Better, Figure, FlowReport, Role, Row, TargetCheck};

/// Why a benchmark run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("could not build the simulation runtime: {0}")]
    Runtime(std::io::Error),
    #[error("invalid options: {0}")]
    Invalid(String),
    #[error("a benchmark thread panicked")]
    Poisoned,
}

/// What to run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FlowOptions {
    /// One run per seed per row; figures are median and worst over them.
    pub seeds: Vec<u64>,
    /// Virtual seconds per run.
    pub duration_s: f64,
    /// Virtual seconds discarded at the start of each run.
    pub warmup_s: f64,
    /// Which scenarios, e.g. `"ABC"` or `"A"`.
    pub scenarios: String,
    /// Only cells whose name contains one of these.
    pub cells: Option<Vec<String>>,
    /// Only algorithms whose name contains one of these.
    pub algorithms: Option<Vec<String>>,
    /// Runs at once (each run is single-threaded and deterministic; the result does not depend
    /// on this).
    pub threads: usize,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            seeds: vec![1, 2, 3],
            duration_s: 60.0,
            warmup_s: 10.0,
            scenarios: "ABC".into(),
            cells: None,
            algorithms: None,
            threads: 1,
        }
    }
}

/// Runs the matrix and reports it.
pub fn run(opts: &FlowOptions) -> Result<FlowReport, FlowError> {
    if opts.seeds.is_empty() {
        return Err(FlowError::Invalid("at least one seed".into()));
    }
    if !(opts.duration_s >= 8.0 && opts.warmup_s >= 0.0 && opts.warmup_s < opts.duration_s / 2.0) {
        return Err(FlowError::Invalid("duration_s >= 8 and 0 <= warmup_s < duration_s / 2".into()));
    }
    let specs = scenarios::specs(opts);
    let warm = (opts.warmup_s * 1e6) as i64;
    let cache = scenarios::Cache::default();
    let jobs: Vec<(usize, usize)> =
        (0..specs.len()).flat_map(|r| (0..opts.seeds.len()).map(move |s| (r, s))).collect();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<scenarios::Figures, FlowError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let worker = || {
        loop {
            let i = {
                let Ok(mut n) = next.lock() else { return };
                let i = *n;
                *n += 1;
                i
            };
            let Some(&(r, s)) = jobs.get(i) else { return };
            let out = scenarios::measure(&specs[r], opts.seeds[s], warm, &cache);
            if let Ok(mut res) = results.lock() {
                res[i] = Some(out);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.max(1) {
            scope.spawn(worker);
        }
    });
    let results = results.into_inner().map_err(|_| FlowError::Poisoned)?;
    let mut per_row: Vec<Vec<scenarios::Figures>> = vec![Vec::new(); specs.len()];
    for (i, res) in results.into_iter().enumerate() {
        let figures = res.ok_or(FlowError::Poisoned)??;
        per_row[jobs[i].0].push(figures);
    }

    let mut rows = Vec::new();
    for (spec, seeds) in specs.into_iter().zip(per_row) {
        let mut figures: Vec<Figure> = Vec::new();
        if let Some(first) = seeds.first() {
            for (k, (name, better, _)) in first.iter().enumerate() {
                let vals = seeds.iter().map(|s| s.get(k).map_or(f64::NAN, |x| x.2)).collect();
                figures.push(Figure::new(name, *better, vals));
            }
        }
        let targets = spec
            .targets
            .iter()
            .map(|t| {
                let value = figures.iter().find(|f| f.name == t.figure).map_or(f64::NAN, |f| f.worst);
                let pass = match t.op {
                    "<=" => value <= t.bound,
                    _ => value >= t.bound,
                };
                TargetCheck {
                    name: t.name.to_owned(),
                    figure: t.figure.to_owned(),
                    op: t.op,
                    bound: t.bound,
                    value,
                    pass,
                }
            })
            .collect();
        let mut row = Row {
            scenario: spec.scenario.to_owned(),
            cell: spec.cell,
            algorithm: spec.algorithm,
            role: spec.role,
            seeds: opts.seeds.clone(),
            settings: spec.settings,
            figures,
            targets,
            expected_failures: spec.expected_failures.iter().map(|s| (*s).to_owned()).collect(),
            as_expected: false,
        };
        row.judge();
        rows.push(row);
    }
    Ok(FlowReport { seeds: opts.seeds.clone(), duration_s: opts.duration_s, warmup_s: opts.warmup_s, rows })
}
