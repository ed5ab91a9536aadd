//! The matrix of docs/FLOW.md §5.1 and issue 5: cells, algorithms, figures and targets.

use std::collections::HashMap;
use std::sync::Mutex;

use drove_core::adaptive::P50GradientConfig;
use serde_json::json;

use crate::conc::{AlgSpec, CallRec, Class, ConcData, ConcRun, Priority, Source};
use crate::rate::{RateData, RatePolicy, RateRun};
use crate::report::{Better, Role};
use crate::sim::{DownstreamConfig, ProviderRate, RetryAfter, percentile};
use crate::{FlowError, FlowOptions};

/// Mean service time of every scenario (docs/FLOW.md §5.1).
pub const SERVICE_MEAN_US: f64 = 10_000.0;
const SECOND: i64 = 1_000_000;

/// Drove's limiter as the benchmark runs it: the defaults, one parameter set for every cell.
pub fn candidate() -> P50GradientConfig {
    P50GradientConfig::default()
}

/// The offline lane's minimum share of the limit (the API's default).
pub const OFFLINE_MIN_SHARE: f64 = 0.1;

/// A run's figures: `(name, which way is better, value)`.
pub(crate) type Figures = Vec<(String, Better, f64)>;

/// A target: `figure op bound`.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub name: &'static str,
    pub figure: &'static str,
    pub op: &'static str,
    pub bound: f64,
}

const fn at_most(name: &'static str, figure: &'static str, bound: f64) -> Target {
    Target { name, figure, op: "<=", bound }
}

const fn at_least(name: &'static str, figure: &'static str, bound: f64) -> Target {
    Target { name, figure, op: ">=", bound }
}

/// What one row runs per seed.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    A { run: ConcRun, kind: AKind },
    B { run: RateRun, halve_us: i64, restore_us: i64 },
    C { run: ConcRun, rho: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AKind {
    Saturating,
    Step { at_us: i64 },
    HalfLoad,
    LullBurst { burst_us: i64 },
}

/// One row before it runs.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub scenario: &'static str,
    pub cell: String,
    pub algorithm: String,
    pub role: Role,
    pub settings: serde_json::Value,
    pub targets: Vec<Target>,
    pub expected_failures: Vec<&'static str>,
    pub work: Work,
}

/// Results shared between rows: unloaded latency per (sigma, seed), online-alone p99 per
/// (rho, seed).
#[derive(Default)]
pub(crate) struct Cache {
    unloaded: Mutex<HashMap<(u64, u64), (f64, f64)>>,
    alone: Mutex<HashMap<(u64, u64, i64, u64), f64>>,
}

struct Times {
    dur: i64,
}

fn us(s: f64) -> i64 {
    (s * SECOND as f64) as i64
}

/// Builds the matrix for `opts`.
pub(crate) fn specs(opts: &FlowOptions) -> Vec<Spec> {
    let t = Times { dur: us(opts.duration_s) };
    let mut out = Vec::new();
    let want = |s: &str| opts.scenarios.to_ascii_uppercase().contains(s);
    if want("A") {
        scenario_a(&t, &mut out);
    }
    if want("B") {
        scenario_b(&t, &mut out);
    }
    if want("C") {
        scenario_c(&t, &mut out);
    }
    if let Some(filter) = &opts.cells {
        out.retain(|s| filter.iter().any(|f| s.cell.contains(f.as_str())));
    }
    if let Some(filter) = &opts.algorithms {
        out.retain(|s| filter.iter().any(|f| s.algorithm.contains(f.as_str())));
    }
    out
}

fn a_algorithms(c: i64) -> Vec<(AlgSpec, Role)> {
    vec![
        (AlgSpec::P50Gradient(candidate()), Role::Candidate),
        (AlgSpec::Static((c / 2).max(1)), Role::Baseline),
        (AlgSpec::Static(8 * c), Role::Baseline),
        (AlgSpec::Oracle, Role::Oracle),
        (AlgSpec::Vegas, Role::Baseline),
        (AlgSpec::Gradient2, Role::Baseline),
    ]
}

fn alg_name(alg: &AlgSpec, c: i64) -> String {
    match alg {
        AlgSpec::Static(n) if *n == (c / 2).max(1) => "static c/2".into(),
        AlgSpec::Static(n) if *n == 8 * c => "static 8c".into(),
        other => other.label(),
    }
}

fn scenario_a(t: &Times, out: &mut Vec<Spec>) {
    let backlog = |from_us| Source::Backlog { class: Class::Online, from_us, jobs: u64::MAX };
    struct Cell {
        name: String,
        ds: DownstreamConfig,
        sources: Vec<Source>,
        kind: AKind,
    }
    let mut cells = Vec::new();
    for sigma in [0.3, 1.2] {
        for c in [2, 8, 32] {
            cells.push(Cell {
                name: format!("c{c} s{sigma}"),
                ds: DownstreamConfig::new(c, SERVICE_MEAN_US, sigma),
                sources: vec![backlog(0)],
                kind: AKind::Saturating,
            });
        }
    }
    let step_at = t.dur / 2;
    for to in [4, 16] {
        let mut ds = DownstreamConfig::new(8, SERVICE_MEAN_US, 0.3);
        ds.slot_steps = vec![(step_at, to)];
        cells.push(Cell {
            name: format!("c8->{to} s0.3"),
            ds,
            sources: vec![backlog(0)],
            kind: AKind::Step { at_us: step_at },
        });
    }
    let mut bounded = DownstreamConfig::new(8, SERVICE_MEAN_US, 0.3);
    bounded.queue_bound = Some(8);
    cells.push(Cell {
        name: "c8 s0.3 queue<=c 503".into(),
        ds: bounded,
        sources: vec![backlog(0)],
        kind: AKind::Saturating,
    });
    let cap8 = 8.0 * 1e6 / SERVICE_MEAN_US;
    cells.push(Cell {
        name: "c8 s0.3 50% load".into(),
        ds: DownstreamConfig::new(8, SERVICE_MEAN_US, 0.3),
        sources: vec![Source::Poisson {
            class: Class::Online,
            per_s: 0.5 * cap8,
            from_us: 0,
            until_us: t.dur,
        }],
        kind: AKind::HalfLoad,
    });
    let burst_at = t.dur / 3;
    cells.push(Cell {
        name: "c8 s0.3 lull->burst".into(),
        ds: DownstreamConfig::new(8, SERVICE_MEAN_US, 0.3),
        sources: vec![
            Source::Poisson { class: Class::Online, per_s: 0.2 * cap8, from_us: 0, until_us: burst_at },
            backlog(burst_at),
        ],
        kind: AKind::LullBurst { burst_us: burst_at },
    });

    for cell in cells {
        let c = cell.ds.slots;
        for (alg, role) in a_algorithms(c) {
            let algorithm = alg_name(&alg, c);
            let mut targets = Vec::new();
            let mut expected = Vec::new();
            match cell.kind {
                AKind::Saturating | AKind::Step { .. } => {
                    targets.push(at_least("goodput", "goodput", 0.95));
                    let p99 = if c >= 4 { 2.0 } else { 3.0 };
                    targets.push(at_most("p99", "p99x", p99));
                    if c >= 4 {
                        targets.push(at_most("p50", "p50x", 2.0));
                    }
                    if cell.ds.queue_bound.is_some() {
                        targets.push(at_most("rejected", "rejected", 0.01));
                    }
                    if matches!(cell.kind, AKind::Step { .. }) {
                        targets.push(at_most("reconverge", "reconverge_s", 2.0));
                    }
                    // Where docs/FLOW.md §3.4/§5.1 says each baseline fails.
                    let sigma03 = cell.ds.sigma < 0.5;
                    match algorithm.as_str() {
                        "static c/2" => expected.push("goodput"),
                        "static 8c" if cell.ds.queue_bound.is_some() => expected.push("rejected"),
                        "static 8c" if sigma03 => expected.push("p99"),
                        "vegas" if c == 32 && sigma03 => expected.push("goodput"),
                        "gradient2" if c == 8 && sigma03 && cell.ds.queue_bound.is_none() => {
                            expected.push("p99")
                        }
                        _ => {}
                    }
                }
                AKind::HalfLoad => {
                    targets.push(at_least("goodput", "goodput_of_offered", 0.99));
                    targets.push(at_most("p99", "p99x", 1.1));
                    if algorithm == "static c/2" {
                        expected.push("p99");
                    }
                }
                AKind::LullBurst { .. } => {
                    targets.push(at_most("burst p99", "burst_p99x", 3.0));
                    if algorithm == "static 8c" {
                        expected.push("burst p99");
                    }
                }
            }
            let run = ConcRun {
                downstream: cell.ds.clone(),
                alg: alg.clone(),
                priority: Priority::Fifo,
                sources: cell.sources.clone(),
                duration_us: t.dur,
                seed: 0,
                trace_every_us: 100_000,
            };
            let settings = json!({
                "downstream": cell.ds,
                "sources": cell.sources,
                "limit": alg_settings(&alg),
            });
            out.push(Spec {
                scenario: "A",
                cell: cell.name.clone(),
                algorithm,
                role,
                settings,
                targets,
                expected_failures: expected,
                work: Work::A { run, kind: cell.kind },
            });
        }
    }
}

fn alg_settings(alg: &AlgSpec) -> serde_json::Value {
    match alg {
        AlgSpec::P50Gradient(c) => json!({
            "algorithm": "p50-gradient", "min": c.min, "max": c.max, "initial": c.initial,
            "window_min_us": c.window_min_us, "window_min_samples": c.window_min_samples,
            "tolerance": c.tolerance, "baseline_ttl_us": c.baseline_ttl_us,
            "first_baseline_ttl_us": c.first_baseline_ttl_us, "capacity_weight": c.capacity_weight,
            "resolution_us": c.resolution_us,
            "baseline_ttl_jitter": c.baseline_ttl_jitter, "probe_windows": c.probe_windows,
            "probe_rehalve_ratio": c.probe_rehalve_ratio, "probe_max_halvings": c.probe_max_halvings,
            "backoff": c.backoff,
        }),
        AlgSpec::Static(n) => json!({ "algorithm": "static", "limit": n }),
        AlgSpec::Oracle => json!({ "algorithm": "oracle", "limit": "downstream slots" }),
        AlgSpec::Vegas => json!({ "algorithm": "vegas", "netflix_defaults": true, "fed": "per sample" }),
        AlgSpec::Gradient2 => {
            json!({ "algorithm": "gradient2", "netflix_defaults": true, "fed": "per sample" })
        }
    }
}

fn scenario_b(t: &Times, out: &mut Vec<Spec>) {
    let halve_us = t.dur / 2;
    let restore_us = t.dur * 3 / 4;
    for instances in [1usize, 3] {
        let mut ds = DownstreamConfig::new(10_000, SERVICE_MEAN_US, 0.3);
        ds.rate = Some(ProviderRate {
            steps: vec![(0, 100), (halve_us, 50), (restore_us, 100)],
            burst: 10,
            retry_after: RetryAfter::Millis,
        });
        let cell = format!("R=100/s {instances} inst");
        let policies = [
            (RatePolicy::Learned { ceiling_per_s: 100.0 }, Role::Candidate),
            (RatePolicy::KnownLimit { fraction: 0.95 }, Role::Oracle),
            (RatePolicy::Naive, Role::Baseline),
            (RatePolicy::StaticBucket { per_s: 100.0, burst: 10 }, Role::Baseline),
        ];
        for (policy, role) in policies {
            let mut targets = vec![
                at_least("accepted", "accepted_steady", 0.95),
                at_most("429s", "share_429", 0.02),
                at_most("no attempt on 429", "attempts_on_429", 0.0),
                at_most("429s after halving", "share_429_after_halving", 0.10),
            ];
            if instances > 1 {
                targets.push(at_least("fairness", "fairness", 0.95));
            }
            let expected = match policy {
                RatePolicy::Naive => vec!["429s", "no attempt on 429"],
                RatePolicy::StaticBucket { .. } => vec!["429s", "no attempt on 429"],
                _ => vec![],
            };
            let settings = match &policy {
                RatePolicy::Learned { ceiling_per_s } => json!({
                    "policy": "learned rate under a ceiling, shared gcra (the server's)",
                    "ceiling_per_s": ceiling_per_s, "burst": 1,
                    "downstream": ds, "instances": instances,
                }),
                p => json!({ "policy": p, "downstream": ds, "instances": instances }),
            };
            let run = RateRun {
                downstream: ds.clone(),
                policy: policy.clone(),
                instances,
                workers: 16,
                max_attempts: 20,
                duration_us: t.dur,
                seed: 0,
            };
            out.push(Spec {
                scenario: "B",
                cell: cell.clone(),
                algorithm: policy.label(),
                role,
                settings,
                targets,
                expected_failures: expected,
                work: Work::B { run, halve_us, restore_us },
            });
        }
    }
}

fn scenario_c(t: &Times, out: &mut Vec<Spec>) {
    // The cells of docs/FLOW.md §5.1 (c = 8, σ = 0.3), then the busiest one on a wider and on a
    // more variable downstream: the same parameters must hold there too.
    let mut cells: Vec<(i64, f64, f64)> = [0.1, 0.3, 0.6].iter().map(|&rho| (8, 0.3, rho)).collect();
    cells.extend([(32, 0.3, 0.6), (8, 1.2, 0.6)]);
    for (c, sigma, rho) in cells {
        let cap = c as f64 * 1e6 / SERVICE_MEAN_US;
        let cell = if (c, sigma) == (8, 0.3) {
            format!("c8 online {rho}")
        } else {
            format!("c{c} s{sigma} online {rho}")
        };
        let strict = Priority::Strict { offline_min_share: OFFLINE_MIN_SHARE };
        let variants = [
            ("strict+p50-gradient", AlgSpec::P50Gradient(candidate()), strict, Role::Candidate),
            ("strict+oracle", AlgSpec::Oracle, strict, Role::Oracle),
            ("fifo+p50-gradient", AlgSpec::P50Gradient(candidate()), Priority::Fifo, Role::Baseline),
        ];
        for (name, alg, priority, role) in variants {
            let sources = vec![
                Source::Poisson { class: Class::Online, per_s: rho * cap, from_us: 0, until_us: t.dur },
                // 100 k at c = 8 (docs/FLOW.md §5.1): more than a run can finish, at any c.
                Source::Backlog { class: Class::Offline, from_us: 0, jobs: 12_500 * c as u64 },
            ];
            let ds = DownstreamConfig::new(c, SERVICE_MEAN_US, sigma);
            let settings = json!({
                "downstream": ds, "sources": sources, "priority": priority, "limit": alg_settings(&alg),
            });
            let run = ConcRun {
                downstream: ds,
                alg,
                priority,
                sources,
                duration_us: t.dur,
                seed: 0,
                trace_every_us: 100_000,
            };
            out.push(Spec {
                scenario: "C",
                cell: cell.clone(),
                algorithm: name.into(),
                role,
                settings,
                targets: vec![
                    at_most("online p99", "online_p99x", 1.5),
                    at_least("offline share", "offline_of_leftover", 0.9),
                ],
                expected_failures: if name.starts_with("fifo") { vec!["online p99"] } else { vec![] },
                work: Work::C { run, rho },
            });
        }
    }
}

// ---- measuring -----------------------------------------------------------------------------

fn in_window(t: i64, from: i64, to: i64) -> bool {
    t >= from && t < to
}

/// Completions per second the downstream could do, integrated over `[from, to)`.
fn capacity_between(ds: &DownstreamConfig, from: i64, to: i64) -> f64 {
    let mut points = vec![from];
    points.extend(ds.slot_steps.iter().map(|(at, _)| *at).filter(|&at| at > from && at < to));
    points.push(to);
    points.windows(2).map(|w| ds.capacity_per_s_at(w[0]) * (w[1] - w[0]) as f64 / 1e6).sum()
}

fn call_latencies(calls: &[CallRec], pick: impl Fn(&CallRec) -> bool) -> Vec<f64> {
    calls.iter().filter(|c| c.ok && pick(c)).map(|c| (c.done_us - c.sent_us) as f64).collect()
}

/// Enqueue-to-done latencies of `class` jobs enqueued in `[from, to)`, counting jobs still
/// unfinished at `end` as having waited until then.
fn job_latencies(data: &ConcData, class: Class, from: i64, to: i64, end: i64) -> Vec<f64> {
    let mut v: Vec<f64> = data
        .calls
        .iter()
        .filter(|c| c.ok && c.class == class && in_window(c.enqueued_us, from, to))
        .map(|c| (c.done_us - c.enqueued_us) as f64)
        .collect();
    v.extend(
        data.unfinished
            .iter()
            .filter(|(k, e)| *k == class && in_window(*e, from, to))
            .map(|(_, e)| (end - e) as f64),
    );
    v
}

fn median_trace(trace: &[(i64, f64)], from: i64, to: i64) -> f64 {
    let mut v: Vec<f64> = trace.iter().filter(|(t, _)| in_window(*t, from, to)).map(|(_, l)| *l).collect();
    percentile(&mut v, 0.5)
}

impl Cache {
    /// Latency p50/p99 at concurrency 1 (µs): the downstream's service time, measured.
    fn unloaded(&self, sigma: f64, seed: u64) -> Result<(f64, f64), FlowError> {
        let key = (sigma.to_bits(), seed);
        if let Some(v) = self.unloaded.lock().map_err(|_| FlowError::Poisoned)?.get(&key) {
            return Ok(*v);
        }
        let run = ConcRun {
            downstream: DownstreamConfig::new(1, SERVICE_MEAN_US, sigma),
            alg: AlgSpec::Static(1),
            priority: Priority::Fifo,
            sources: vec![Source::Backlog { class: Class::Online, from_us: 0, jobs: u64::MAX }],
            // 20 000 calls.
            duration_us: (20_000.0 * SERVICE_MEAN_US) as i64,
            seed: seed ^ 0x5EED,
            trace_every_us: 10 * SECOND,
        };
        let data = run.run()?;
        let mut v = call_latencies(&data.calls, |_| true);
        let p50 = percentile(&mut v, 0.5);
        let p99 = percentile(&mut v, 0.99);
        self.unloaded.lock().map_err(|_| FlowError::Poisoned)?.insert(key, (p50, p99));
        Ok((p50, p99))
    }

    /// Online p99 (enqueue to done) with no offline work and no limit.
    fn online_alone(&self, run: &ConcRun, rho: f64, warm: i64) -> Result<f64, FlowError> {
        let key = (rho.to_bits(), run.seed, run.downstream.slots, run.downstream.sigma.to_bits());
        if let Some(v) = self.alone.lock().map_err(|_| FlowError::Poisoned)?.get(&key) {
            return Ok(*v);
        }
        let alone = ConcRun {
            alg: AlgSpec::Static(1_000_000),
            priority: Priority::Fifo,
            sources: run.sources.iter().filter(|s| matches!(s, Source::Poisson { .. })).cloned().collect(),
            ..run.clone()
        };
        let data = alone.run()?;
        let mut v = job_latencies(&data, Class::Online, warm, run.duration_us, run.duration_us);
        let p99 = percentile(&mut v, 0.99);
        self.alone.lock().map_err(|_| FlowError::Poisoned)?.insert(key, p99);
        Ok(p99)
    }
}

/// Runs one row for one seed and measures it.
pub(crate) fn measure(spec: &Spec, seed: u64, warm: i64, cache: &Cache) -> Result<Figures, FlowError> {
    let f = |name: &str, better, v| (name.to_owned(), better, v);
    match &spec.work {
        Work::A { run, kind } => {
            let run = ConcRun { seed, ..run.clone() };
            let end = run.duration_us;
            let (u50, u99) = cache.unloaded(run.downstream.sigma, seed)?;
            let data = run.run()?;
            let mut out = Vec::new();
            match *kind {
                AKind::Saturating | AKind::Step { .. } => {
                    let ok = data.calls.iter().filter(|c| c.ok && in_window(c.done_us, warm, end)).count();
                    let all = data.calls.iter().filter(|c| in_window(c.done_us, warm, end)).count();
                    let mut lat = call_latencies(&data.calls, |c| in_window(c.done_us, warm, end));
                    out.push(f(
                        "goodput",
                        Better::Higher,
                        ok as f64 / capacity_between(&run.downstream, warm, end),
                    ));
                    out.push(f("p50x", Better::Lower, percentile(&mut lat, 0.5) / u50));
                    out.push(f("p99x", Better::Lower, percentile(&mut lat, 0.99) / u99));
                    out.push(f("rejected", Better::Lower, (all - ok) as f64 / all.max(1) as f64));
                    out.push(f("limit", Better::Lower, median_trace(&data.trace, warm, end)));
                    if let AKind::Step { at_us } = *kind {
                        out.push(f(
                            "reconverge_s",
                            Better::Lower,
                            reconverge_s(&run.downstream, &data, at_us, end, u99),
                        ));
                    }
                }
                AKind::HalfLoad => {
                    let ok = data.calls.iter().filter(|c| c.ok && in_window(c.done_us, warm, end)).count();
                    let offered = data.arrivals.iter().filter(|(_, t)| in_window(*t, warm, end)).count();
                    let mut lat = job_latencies(&data, Class::Online, warm, end, end);
                    out.push(f("goodput_of_offered", Better::Higher, ok as f64 / offered.max(1) as f64));
                    out.push(f("p99x", Better::Lower, percentile(&mut lat, 0.99) / u99));
                    out.push(f("limit", Better::Lower, median_trace(&data.trace, warm, end)));
                }
                AKind::LullBurst { burst_us } => {
                    let mut lat =
                        call_latencies(&data.calls, |c| in_window(c.sent_us, burst_us, burst_us + SECOND));
                    out.push(f("burst_p99x", Better::Lower, percentile(&mut lat, 0.99) / u99));
                    let at_burst = data
                        .trace
                        .iter()
                        .take_while(|(t, _)| *t <= burst_us)
                        .last()
                        .map_or(f64::NAN, |x| x.1);
                    out.push(f("limit_at_burst", Better::Lower, at_burst));
                    let ok = data
                        .calls
                        .iter()
                        .filter(|c| c.ok && in_window(c.done_us, burst_us + SECOND, end))
                        .count();
                    out.push(f(
                        "burst_goodput",
                        Better::Higher,
                        ok as f64 / capacity_between(&run.downstream, burst_us + SECOND, end),
                    ));
                }
            }
            Ok(out)
        }
        Work::B { run, halve_us, restore_us } => {
            let run = RateRun { seed, ..run.clone() };
            let data = run.run()?;
            Ok(b_figures(&run, &data, warm, *halve_us, *restore_us))
        }
        Work::C { run, rho } => {
            let run = ConcRun { seed, ..run.clone() };
            let end = run.duration_us;
            let alone = cache.online_alone(&run, *rho, warm)?;
            let data = run.run()?;
            let mut lat = job_latencies(&data, Class::Online, warm, end, end);
            let offline = data
                .calls
                .iter()
                .filter(|c| c.ok && c.class == Class::Offline && in_window(c.done_us, warm, end))
                .count();
            let leftover = (1.0 - rho) * capacity_between(&run.downstream, warm, end);
            Ok(vec![
                f("online_p99x", Better::Lower, percentile(&mut lat, 0.99) / alone),
                f("offline_of_leftover", Better::Higher, offline as f64 / leftover),
                f("limit", Better::Lower, median_trace(&data.trace, warm, end)),
                f("offline_limit", Better::Lower, median_trace(&data.offline_trace, warm, end)),
            ])
        }
    }
}

/// Seconds after a capacity step until every 1 s bucket (for the next 10 s) has goodput ≥ 0.9
/// of the new capacity and p99 ≤ 2× unloaded.
fn reconverge_s(ds: &DownstreamConfig, data: &ConcData, step_us: i64, end: i64, u99: f64) -> f64 {
    let buckets = ((end - step_us) / SECOND).min(10);
    let ok: Vec<bool> = (0..buckets)
        .map(|k| {
            let (a, b) = (step_us + k * SECOND, step_us + (k + 1) * SECOND);
            let n = data.calls.iter().filter(|c| c.ok && in_window(c.done_us, a, b)).count();
            let mut lat = call_latencies(&data.calls, |c| in_window(c.done_us, a, b));
            n as f64 / capacity_between(ds, a, b) >= 0.9 && percentile(&mut lat, 0.99) / u99 <= 2.0
        })
        .collect();
    let first_good_tail =
        (0..=ok.len()).rev().take_while(|&k| k == ok.len() || ok[k]).last().unwrap_or(ok.len());
    first_good_tail as f64
}

fn b_figures(run: &RateRun, data: &RateData, warm: i64, halve: i64, restore: i64) -> Figures {
    let end = run.duration_us;
    let rate = run.downstream.rate.as_ref();
    let r_at = |t: i64| rate.map_or(0, |r| r.per_s_at(t)) as f64;
    let accepted_in =
        |a: i64, b: i64| data.calls.iter().filter(|c| !c.throttled && in_window(c.sent_us, a, b)).count();
    let settle = 3 * SECOND;
    let steady = [(warm, halve), (halve + settle, restore), (restore + settle, end)];
    let (mut acc, mut allowed) = (0usize, 0.0);
    for (a, b) in steady {
        if b > a {
            acc += accepted_in(a, b);
            allowed += r_at(a) * (b - a) as f64 / 1e6;
        }
    }
    let all_allowed = [(warm, halve), (halve, restore), (restore, end)]
        .iter()
        .map(|&(a, b)| r_at(a) * (b - a).max(0) as f64 / 1e6)
        .sum::<f64>();
    let calls_in = |a: i64, b: i64| data.calls.iter().filter(|c| in_window(c.sent_us, a, b)).count();
    let throttled_in =
        |a: i64, b: i64| data.calls.iter().filter(|c| c.throttled && in_window(c.sent_us, a, b)).count();
    let share = |a, b| throttled_in(a, b) as f64 / calls_in(a, b).max(1) as f64;
    let mut out = vec![
        ("accepted_steady".to_owned(), Better::Higher, acc as f64 / allowed),
        ("accepted_all".to_owned(), Better::Higher, accepted_in(warm, end) as f64 / all_allowed),
        ("share_429".to_owned(), Better::Lower, share(warm, end)),
        ("share_429_after_halving".to_owned(), Better::Lower, share(halve, halve + settle)),
        ("attempts_on_429".to_owned(), Better::Lower, data.attempts_on_429 as f64),
        ("jobs_failed".to_owned(), Better::Lower, data.jobs_failed as f64),
    ];
    if run.instances > 1 {
        let per: Vec<f64> = (0..run.instances)
            .map(|i| {
                data.calls
                    .iter()
                    .filter(|c| c.instance == i && !c.throttled && in_window(c.sent_us, warm, end))
                    .count() as f64
            })
            .collect();
        let sum: f64 = per.iter().sum();
        let sq: f64 = per.iter().map(|x| x * x).sum();
        out.push(("fairness".to_owned(), Better::Higher, sum * sum / (per.len() as f64 * sq.max(1.0))));
    }
    out
}
