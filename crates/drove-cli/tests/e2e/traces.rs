//! Traces end to end: `drove serve` and `drove worker` export over OTLP/HTTP (protobuf) to a
//! receiver this test runs; one job submitted under a caller's trace, failed once and retried,
//! yields the submit span as the caller's child, the first run as the submit's child, the retry
//! as a new trace linked to it, finishes as their runs' children, and the child processes get
//! their run's TRACEPARENT.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;

use super::support::*;

/// A span as the receiver recorded it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    kind: i32,
    attrs: HashMap<String, String>,
    links: Vec<(String, String)>,
    error: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver on loopback: POST /v1/traces with a protobuf body.
async fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut spans = Vec::new();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(&kv.value))
                        .unwrap_or_default();
                    for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                        spans.push(Got {
                            service: service.clone(),
                            name: s.name,
                            trace: hex(&s.trace_id),
                            id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                            kind: s.kind,
                            attrs: s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                            links: s.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                            error: s.status.is_some_and(|st| st.code == 2),
                        });
                    }
                }
                sink.lock().unwrap().extend(spans);
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_makes_one_trace_from_its_caller_and_a_linked_one_for_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (otlp, got) = receiver().await;
    let mut server = Server::start(&dir.path().join("d.db"), &["--otlp-endpoint", &otlp]);
    let http = Http::new(&server.url);
    http.put("/v1/queues/traced", json!({"backoff": {"base_ms": 0, "max_ms": 0}})).await;

    // The caller's span context rides in the W3C headers.
    let resp = http
        .client
        .post(format!("{}/v1/jobs", server.url))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "caller=yes")
        .json(&json!({"queue": "traced", "key": "report-7", "payload": {"n": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let job: serde_json::Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let stored = job["traceparent"].as_str().expect("the job keeps a traceparent").to_owned();
    assert!(stored.starts_with(&format!("00-{CALLER_TRACE}-")), "{stored}");
    assert_ne!(&stored[36..52], CALLER_SPAN, "the job descends from the server's submit span");
    assert_eq!(job["tracestate"], "caller=yes");

    // The child logs the TRACEPARENT it got, fails its first attempt and succeeds the next.
    let log = dir.path().join("traceparents");
    let cmd = [
        "sh",
        "-c",
        r#"cat >/dev/null; echo "$DROVE_ATTEMPT $TRACEPARENT${TRACESTATE:+ $TRACESTATE}" >> "$TP_LOG"; [ "$DROVE_ATTEMPT" = 1 ] && { echo 'first try fails' >&2; exit 3; }; echo '{"ok":true}'"#,
    ];
    let mut worker = Worker::start_env(
        &server.url,
        "traced",
        1,
        &["--otlp-endpoint", &otlp],
        &cmd,
        &[("TP_LOG", log.to_str().unwrap())],
    );
    let done = http.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2);

    // A delayed job gives the promoter a pass with work to do.
    let (_, later) = http.post("/v1/jobs", json!({"queue": "later", "delay_ms": 200})).await;
    let later = later["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http.get(&format!("/v1/jobs/{later}")).await.1["state"] != "queued" {
        assert!(std::time::Instant::now() < deadline, "the delayed job was never promoted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A graceful stop flushes what each process still buffers.
    assert!(worker.terminate().success());
    assert!(server.terminate().success());
    let spans = got.lock().unwrap().clone();
    // The job's spans as the receiver recorded them (shown with --nocapture).
    for s in &spans {
        let mut attrs: Vec<_> = s.attrs.iter().filter(|(k, _)| k.starts_with("drove.")).collect();
        attrs.sort();
        println!(
            "{:<13} {:<12} trace={} span={} parent={:<16} links={:?} error={} {:?}",
            s.name, s.service, s.trace, s.id, s.parent, s.links, s.error, attrs
        );
    }
    let one = |name: &str, pred: &dyn Fn(&Got) -> bool| -> Got {
        let found: Vec<&Got> = spans.iter().filter(|s| s.name == name && pred(s)).collect();
        assert_eq!(found.len(), 1, "one {name} span wanted, got {found:#?}\nall: {spans:#?}");
        found[0].clone()
    };
    let of_job = |s: &Got| s.attrs.get("drove.job.id") == Some(&id);

    let submit = one("drove.submit", &|s| of_job(s));
    assert_eq!(
        (submit.service.as_str(), submit.trace.as_str(), submit.parent.as_str()),
        ("drove", CALLER_TRACE, CALLER_SPAN)
    );
    assert_eq!(submit.kind, 4, "a producer span");
    assert_eq!(submit.attrs["drove.queue"], "traced");
    assert_eq!(&stored[36..52], submit.id, "the job keeps the submit span's context");

    let run1 = one("drove.run", &|s| of_job(s) && s.attrs["drove.attempt"] == "1");
    assert_eq!(run1.service, "drove-worker");
    assert_eq!(
        (run1.trace.as_str(), run1.parent.as_str()),
        (CALLER_TRACE, submit.id.as_str()),
        "run 1 is the submit's child"
    );
    assert_eq!(run1.kind, 5, "a consumer span");
    assert_eq!(
        (run1.attrs["drove.queue"].as_str(), run1.attrs["drove.key"].as_str()),
        ("traced", "report-7")
    );
    assert_eq!(run1.attrs["drove.outcome"], "retryable");
    assert!(run1.error, "a failed run is an error");
    assert!(run1.links.is_empty());

    let run2 = one("drove.run", &|s| of_job(s) && s.attrs["drove.attempt"] == "2");
    assert_ne!(run2.trace, CALLER_TRACE, "a retry starts a trace of its own");
    assert_eq!(run2.parent, "", "a retry has no parent");
    assert_eq!(
        run2.links,
        vec![(CALLER_TRACE.to_owned(), submit.id.clone())],
        "a retry links to the job's context"
    );
    assert_eq!(run2.attrs["drove.outcome"], "succeeded");
    assert!(!run2.error);

    // Each end of a run is recorded by the server as that run's child.
    let fail = one("drove.finish", &|s| of_job(s) && s.attrs["drove.outcome"] == "fail");
    assert_eq!(
        (fail.service.as_str(), fail.trace.as_str(), fail.parent.as_str()),
        ("drove", CALLER_TRACE, run1.id.as_str())
    );
    let complete = one("drove.finish", &|s| of_job(s) && s.attrs["drove.outcome"] == "complete");
    assert_eq!((complete.trace.as_str(), complete.parent.as_str()), (run2.trace.as_str(), run2.id.as_str()));
    assert_eq!(complete.attrs["drove.state"], "succeeded");

    // Both claims link the job they handed out.
    let claims: Vec<&Got> = spans.iter().filter(|s| s.name == "drove.claim").collect();
    assert_eq!(claims.len(), 2, "{claims:#?}");
    for c in claims {
        assert_eq!(c.links, vec![(CALLER_TRACE.to_owned(), submit.id.clone())]);
        assert_eq!(c.attrs["drove.queue"], "traced");
    }
    // The maintenance services show the passes that did work, and only those.
    let services = ["drove.promoter", "drove.scheduler", "drove.reaper", "drove.pruner"];
    let passes: Vec<&Got> = spans.iter().filter(|s| services.contains(&s.name.as_str())).collect();
    assert!(
        passes.iter().any(|s| s.name == "drove.promoter" && s.service == "drove"),
        "no promoter span: {passes:#?}"
    );
    for p in &passes {
        let jobs: i64 = p.attrs["drove.jobs"].parse().unwrap();
        assert!(jobs >= 1, "an idle pass made a span: {p:#?}");
        assert_eq!(p.parent, "", "a pass is a trace of its own");
    }

    // The child processes continue their run's span.
    let lines = read_lines(&log);
    assert_eq!(
        lines,
        vec![
            format!("1 00-{CALLER_TRACE}-{}-01 caller=yes", run1.id),
            format!("2 00-{}-{}-01", run2.trace, run2.id),
        ]
    );
}
