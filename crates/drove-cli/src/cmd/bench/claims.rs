//! Claim latency: how long one claim takes as the store's caller sees it (in process: the
//! engine's `drove_claim_seconds`, captured by a recorder of this process) or as a remote
//! worker sees it (HTTP: the round trip of a claim that was not asked to wait).

use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

static TIMES_MS: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// Records one claim's duration, milliseconds.
pub fn record_ms(ms: f64) {
    TIMES_MS.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
}

/// The durations recorded since the last call, milliseconds, sorted.
pub fn take_sorted() -> Vec<f64> {
    let mut v = std::mem::take(&mut *TIMES_MS.lock().unwrap_or_else(|e| e.into_inner()));
    v.sort_by(f64::total_cmp);
    v
}

/// Installs the recorder that captures the engine's claim durations (once per process; a no-op
/// when another recorder is already installed).
pub fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = metrics::set_global_recorder(ClaimRecorder { hist: Arc::new(ClaimHistogram) });
    });
}

struct ClaimHistogram;

impl HistogramFn for ClaimHistogram {
    fn record(&self, seconds: f64) {
        record_ms(seconds * 1e3);
    }
}

struct ClaimRecorder {
    hist: Arc<ClaimHistogram>,
}

impl Recorder for ClaimRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == "drove_claim_seconds" {
            Histogram::from_arc(Arc::clone(&self.hist))
        } else {
            Histogram::noop()
        }
    }
}
