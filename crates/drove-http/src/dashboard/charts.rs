//! Run statistics over the last hour and the small SVG charts drawn from them.
//!
//! The input is `Store::recent_runs`, capped at [`SAMPLE_CAP`] runs per queue so a busy queue
//! costs a bounded read per page view. When the cap is reached the sample covers only the most
//! recent part of the hour; the charts grey out the minutes before it and the text says so
//! (`/metrics` has exact totals). Charts are plain SVG drawn on the server: they work without
//! JavaScript and carry no user text (only numbers and fixed labels).

use drove_core::{JobState, Millis};
use drove_store::RunSample;
use maud::{Markup, html};

use super::view::duration;

/// Most runs read per queue for the charts (newest first).
pub const SAMPLE_CAP: usize = 2_000;
/// The window the charts cover.
pub const WINDOW_MS: i64 = 3_600_000;
/// Throughput bars: one per minute.
const BARS: usize = 60;
/// Run-time lines: one point per 5 minutes.
const SPANS: usize = 12;

/// What the charts of one queue show.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub start: i64,
    pub ok: Vec<u32>,
    pub failed: Vec<u32>,
    /// Run times (ms) per 5-minute span.
    spans: Vec<Vec<i64>>,
    /// Every run time in the sample, sorted.
    all: Vec<i64>,
    pub succeeded: usize,
    pub partial: usize,
    pub failures: usize,
    pub cancelled: usize,
    /// The cap was reached: the sample starts at `covered_from`, not an hour ago.
    pub capped: bool,
    pub covered_from: i64,
}

impl RunStats {
    pub fn new(samples: &[RunSample], now: Millis) -> RunStats {
        let start = now.0 - WINDOW_MS;
        let mut s = RunStats {
            start,
            ok: vec![0; BARS],
            failed: vec![0; BARS],
            spans: vec![Vec::new(); SPANS],
            all: Vec::with_capacity(samples.len()),
            succeeded: 0,
            partial: 0,
            failures: 0,
            cancelled: 0,
            capped: samples.len() >= SAMPLE_CAP,
            covered_from: start,
        };
        if s.capped {
            s.covered_from = samples.iter().map(|r| r.finished_at.0).min().unwrap_or(start).max(start);
        }
        for r in samples {
            let offset = r.finished_at.0 - start;
            if !(0..WINDOW_MS).contains(&offset) {
                continue;
            }
            let bar = (offset * BARS as i64 / WINDOW_MS) as usize;
            let ms = r.finished_at.since(r.started_at).max(0);
            match r.state {
                JobState::Succeeded => {
                    s.ok[bar] += 1;
                    s.succeeded += 1;
                    s.partial += usize::from(r.partial);
                }
                JobState::Failed => {
                    s.failed[bar] += 1;
                    s.failures += 1;
                }
                _ => s.cancelled += 1,
            }
            // A cancelled run was cut short: its time says nothing about how long work takes.
            if r.state != JobState::Cancelled {
                s.spans[(offset * SPANS as i64 / WINDOW_MS) as usize].push(ms);
                s.all.push(ms);
            }
        }
        s.all.sort_unstable();
        for span in &mut s.spans {
            span.sort_unstable();
        }
        s
    }

    pub fn runs(&self) -> usize {
        self.succeeded + self.failures + self.cancelled
    }

    /// Runs per minute over the part of the hour the sample covers.
    pub fn per_minute(&self, now: Millis) -> f64 {
        let minutes = (now.0 - self.covered_from).max(60_000) as f64 / 60_000.0;
        (self.succeeded + self.failures) as f64 / minutes
    }

    /// The `q` quantile of the run times (nearest rank), if any run was sampled.
    pub fn percentile(&self, q: f64) -> Option<i64> {
        percentile(&self.all, q)
    }
}

pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

const W: f64 = 240.0;
const H: f64 = 40.0;

/// Runs per minute over the hour: green bars for successes with red failures stacked on top.
pub fn throughput_svg(s: &RunStats) -> Markup {
    let max = (0..BARS).map(|i| s.ok[i] + s.failed[i]).max().unwrap_or(0).max(1) as f64;
    let bw = W / BARS as f64;
    let uncovered = ((s.covered_from - s.start) as f64 / WINDOW_MS as f64 * W).clamp(0.0, W);
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img"
            aria-label={ "runs per minute over the last hour, at most " (max) } {
            title { "Runs per minute, last hour (green: succeeded, red: failed; peak " (max) ")" }
            @if uncovered > 0.0 {
                rect.uncovered x="0" y="0" width=(fmt(uncovered)) height=(H) {
                    title { "not in the sample (capped at " (SAMPLE_CAP) " runs)" }
                }
            }
            line.axis x1="0" y1=(H - 0.5) x2=(W) y2=(H - 0.5) {}
            @for i in 0..BARS {
                @let ok = f64::from(s.ok[i]);
                @let bad = f64::from(s.failed[i]);
                @if ok + bad > 0.0 {
                    @let x = fmt(i as f64 * bw + 0.5);
                    @let h_ok = ok / max * (H - 2.0);
                    @let h_bad = bad / max * (H - 2.0);
                    g {
                        title { (60 - i) " min ago: " (s.ok[i]) " succeeded, " (s.failed[i]) " failed" }
                        rect.ok x=(x) y=(fmt(H - 1.0 - h_ok)) width=(fmt(bw - 1.0)) height=(fmt(h_ok)) {}
                        @if bad > 0.0 {
                            rect.bad x=(x) y=(fmt(H - 1.0 - h_ok - h_bad)) width=(fmt(bw - 1.0)) height=(fmt(h_bad)) {}
                        }
                    }
                }
            }
        }
    }
}

/// Run time per 5 minutes: p50 and p95 lines (dots where a span has a single point).
pub fn runtime_svg(s: &RunStats) -> Markup {
    let p50: Vec<Option<i64>> = s.spans.iter().map(|v| percentile(v, 0.5)).collect();
    let p95: Vec<Option<i64>> = s.spans.iter().map(|v| percentile(v, 0.95)).collect();
    let max = p95.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let x = |i: usize| (i as f64 + 0.5) * W / SPANS as f64;
    let y = |v: i64| H - 2.0 - v as f64 / max * (H - 4.0);
    let points = |vals: &[Option<i64>]| -> String {
        vals.iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{},{}", fmt(x(i)), fmt(y(v)))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img"
            aria-label={ "run time p50 and p95 per 5 minutes, peak " (duration(max as i64)) } {
            title { "Run time per 5 minutes, last hour (dark: p50, light: p95; peak " (duration(max as i64)) ")" }
            line.axis x1="0" y1=(H - 0.5) x2=(W) y2=(H - 0.5) {}
            polyline.p95 points=(points(&p95)) {}
            polyline.p50 points=(points(&p50)) {}
            @for (i, (a, b)) in p50.iter().zip(&p95).enumerate() {
                @if let (Some(a), Some(b)) = (a, b) {
                    g {
                        title { (SPANS - i) "×5 min ago: p50 " (duration(*a)) ", p95 " (duration(*b)) }
                        circle.p95 cx=(fmt(x(i))) cy=(fmt(y(*b))) r="1.6" {}
                        circle.p50 cx=(fmt(x(i))) cy=(fmt(y(*a))) r="1.6" {}
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use drove_core::JobId;

    fn run(state: JobState, finished_ago: i64, ms: i64, now: Millis) -> RunSample {
        let finished_at = now.minus_ms(finished_ago);
        RunSample {
            id: JobId(1),
            state,
            run_at: finished_at.minus_ms(ms),
            started_at: finished_at.minus_ms(ms),
            finished_at,
            partial: false,
        }
    }

    #[test]
    fn buckets_and_percentiles() {
        let now = Millis(10_000_000);
        let mut samples: Vec<RunSample> =
            (1..=100).map(|i| run(JobState::Succeeded, 30_000, i, now)).collect();
        samples.push(run(JobState::Failed, 90_000, 5_000, now));
        samples.push(run(JobState::Cancelled, 90_000, 99_999, now));
        samples.push(run(JobState::Succeeded, WINDOW_MS + 1, 7, now)); // outside the window
        let s = RunStats::new(&samples, now);
        assert_eq!(s.ok[59], 100);
        assert_eq!(s.failed[58], 1);
        assert_eq!((s.succeeded, s.failures, s.cancelled), (100, 1, 1));
        assert_eq!(s.percentile(0.5), Some(51));
        assert_eq!(s.percentile(1.0), Some(5_000));
        assert!(!s.capped);
        let svg = throughput_svg(&s).into_string();
        assert_eq!(svg.matches("class=\"ok\"").count(), 2, "{svg}");
        assert!(runtime_svg(&s).into_string().contains("polyline"));
    }

    #[test]
    fn percentile_edges() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.95), Some(4));
    }

    #[test]
    fn a_capped_sample_says_what_it_covers() {
        let now = Millis(10_000_000);
        let samples: Vec<RunSample> =
            (0..SAMPLE_CAP).map(|i| run(JobState::Succeeded, 600_000 - i as i64, 10, now)).collect();
        let s = RunStats::new(&samples, now);
        assert!(s.capped);
        assert_eq!(s.covered_from, now.0 - 600_000);
        assert!(throughput_svg(&s).into_string().contains("uncovered"));
        assert!((s.per_minute(now) - SAMPLE_CAP as f64 / 10.0).abs() < 0.01);
    }
}
