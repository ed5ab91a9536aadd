//! The HTTP contract through the router (no socket): every status and error code of docs/API.md,
//! the error format, auth, and the OpenAPI document's agreement with the routes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use drove_engine::{Engine, EngineConfig};
use drove_http::{AppState, HttpConfig, app};
use drove_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn api_with(token: Option<&str>, max_payload: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SqliteOptions::new(dir.path().join("drove.db"));
    opts.max_payload = max_payload;
    let store = SqliteStore::open(opts).unwrap();
    let engine = Engine::start(Arc::new(store), EngineConfig::default());
    let mut config = HttpConfig::for_payload(max_payload);
    config.token = token.map(str::to_owned);
    Api { router: app(AppState::new(engine, config)), _dir: dir }
}

fn api() -> Api {
    api_with(None, 1 << 20)
}

impl Api {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, headers)
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let text = body.map(|b| b.to_string());
        let (s, v, _) = self.send(method, uri, text.as_deref(), None).await;
        (s, v)
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn submit_read_and_deduplicate() {
    let a = api();
    let (s, job) = a
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"queue": "emails", "payload": {"to": "x"}, "key": "k1", "kind": "welcome"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(job["state"], "queued");
    assert_eq!(job["deduplicated"], false);
    assert_eq!(job["payload"], json!({"to": "x"}));
    assert_eq!(job["attempt"], 0);
    assert!(job["id"].is_string());
    for field in [
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
        "progress",
        "checkpoint",
        "result",
        "error",
        "cancel_requested",
        "partial",
        "group",
        "priority",
        "max_attempts",
        "kind",
    ] {
        assert!(job.get(field).is_some(), "missing {field}: {job}");
    }
    let (s, again) =
        a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "emails", "payload": 2, "key": "k1"}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["id"], job["id"]);
    let id = job["id"].as_str().unwrap();
    let (s, got) = a.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["payload"], json!({"to": "x"}));
    // reject while active: 409
    let (s, body) = a
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"queue": "emails", "key": "k1", "on_conflict": "reject"})),
        )
        .await;
    assert_error(s, &body, StatusCode::CONFLICT, "key_conflict");
}

#[tokio::test]
async fn wait_answers_202_with_location_when_time_runs_out() {
    let a = api();
    let (s, job, headers) =
        a.send(Method::POST, "/v1/jobs?wait=50ms", Some(r#"{"queue":"slow"}"#), None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap();
    assert_eq!(headers[header::LOCATION], format!("/v1/jobs/{id}").as_str());
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (s, _, _) = a.send(Method::GET, &format!("/v1/jobs/{id}?wait=10ms"), None, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _, _) = a.send(Method::GET, &format!("/v1/jobs/{id}"), None, None).await;
    assert_eq!(s, StatusCode::OK, "no wait asked: 200 whatever the state");
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let a = api();
    for body in ["", "{", "not json", "{\"queue\": \"q\"} trailing", "[1,2"] {
        let (s, v, _) = a.send(Method::POST, "/v1/jobs", Some(body), None).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "malformed_request");
    }
    for wait in ["abc", "-1", "1h", "1.5s", ""] {
        let (s, v, _) = a.send(Method::GET, &format!("/v1/jobs/1?wait={wait}"), None, None).await;
        if wait.is_empty() {
            continue;
        }
        assert_error(s, &v, StatusCode::BAD_REQUEST, "malformed_request");
    }
    let (s, v, _) = a.send(Method::GET, "/v1/jobs?cursor=garbage", None, None).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "malformed_request");
    let (s, v, _) = a.send(Method::GET, "/v1/jobs?limit=ten", None, None).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "malformed_request");
}

#[tokio::test]
async fn invalid_values_are_422_naming_the_field() {
    let a = api();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"payload": 1}), "queue"),
        (json!({"queue": "bad name"}), "queue"),
        (json!({"queue": "q", "priority": "high"}), "priority"),
        (json!({"queue": "q", "max_attempts": 0}), "max_attempts"),
        (json!({"queue": "q", "delay_ms": -5}), "delay_ms"),
        (json!({"queue": "q", "reuse_for_ms": -1}), "reuse_for_ms"),
        (json!({"queue": "q", "timeout_ms": 0}), "timeout_ms"),
        (json!({"queue": "q", "run_at": "tomorrow"}), "run_at"),
        (json!({"queue": "q", "key": ""}), "key"),
        (json!({"queue": "q", "group": "x".repeat(129)}), "group"),
        (json!({"queue": "q", "on_conflict": "merge"}), "on_conflict"),
        (json!({"queue": "q", "colour": "red"}), "colour"),
        (json!({"queue": "q", "delay_ms": 1, "run_at": "2030-01-01T00:00:00Z"}), "delay_ms"),
        (
            json!({"queue": "q", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"}),
            "traceparent",
        ),
        (
            json!({"queue": "q", "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}),
            "traceparent",
        ),
        (json!({"queue": "q", "tracestate": "a=b"}), "tracestate"),
        (
            json!({"queue": "q", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "x".repeat(513)}),
            "tracestate",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = a.call(Method::POST, "/v1/jobs", Some(body.clone())).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
    let (s, v) = a.call(Method::GET, "/v1/jobs/1?wait=61s", None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let (s, v) = a.call(Method::GET, "/v1/jobs?limit=0", None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let (s, v) = a.call(Method::GET, "/v1/jobs?state=done", None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    for (body, field) in [
        (json!({"max": 0}), "max"),
        (json!({"max": 1001}), "max"),
        (json!({"wait_ms": 60001}), "wait_ms"),
        (json!({"lease_ms": 999}), "lease_ms"),
        (json!({"max": -3}), "max"),
    ] {
        let (s, v) = a.call(Method::POST, "/v1/queues/q/claim", Some(body)).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field);
    }
    for (body, field) in [
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"rate": {"limit": 5, "period_ms": -1}}), "rate.period_ms"),
        (json!({"lane": "sideways"}), "lane"),
        (json!({"concurency": 2}), "concurency"),
    ] {
        let (s, v) = a.call(Method::PUT, "/v1/queues/q", Some(body)).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field);
    }
    let (s, v) = a.call(Method::POST, "/v1/jobs/batch", Some(json!({"jobs": []}))).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let (s, v) = a
        .call(
            Method::POST,
            "/v1/jobs/batch",
            Some(json!({"jobs": [{"queue": "q"}, {"queue": "q", "max_attempts": 0}]})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(v["error"]["field"], "jobs[1].max_attempts");
    let (s, v) = a
        .call(
            Method::POST,
            "/v1/jobs/batch",
            Some(json!({"jobs": [{"queue": "q"}, {"queue": "q", "traceparent": "01"}]})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(v["error"]["field"], "jobs[1].traceparent");
    let (s, page) = a.call(Method::GET, "/v1/jobs", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["jobs"], json!([]), "the rejected batch wrote nothing");
}

#[tokio::test]
async fn oversized_payloads_are_413_and_the_body_is_drained() {
    let a = api_with(None, 1_000);
    let big = json!({"queue": "q", "payload": "x".repeat(1_500)});
    let (s, v) = a.call(Method::POST, "/v1/jobs", Some(big)).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let huge = json!({"queue": "q", "payload": "x".repeat(200_000)});
    let (s, v) = a.call(Method::POST, "/v1/jobs", Some(huge)).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn unknown_things_are_404_and_wrong_methods_405() {
    let a = api();
    for uri in [
        "/v1/jobs/999999",
        "/v1/jobs/abc",
        "/v1/jobs/0",
        "/v1/jobs/-1",
        "/v1/queues/never",
        "/v1/nothing",
        "/nothing",
        "/v1/pools/none",
    ] {
        let (s, v) = a.call(Method::GET, uri, None).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    for uri in ["/v1/jobs/424242/cancel", "/v1/jobs/424242/retry"] {
        let (s, v) = a.call(Method::POST, uri, None).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    let (s, v) = a.call(Method::POST, "/v1/jobs/424242/complete", Some(json!({"lease": "1"}))).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = a.call(Method::DELETE, "/v1/jobs", None).await;
    assert_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn worker_protocol_and_fencing() {
    let a = api();
    a.call(Method::PUT, "/v1/queues/w", Some(json!({"backoff": {"base_ms": 0, "max_ms": 0}}))).await;
    let (_, job) = a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "w", "payload": [1, 2]}))).await;
    let id = job["id"].as_str().unwrap().to_owned();
    // An empty claim body means max 1.
    let (s, claimed) = a.call(Method::POST, "/v1/queues/w/claim", None).await;
    assert_eq!(s, StatusCode::OK);
    let c = &claimed["jobs"][0];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["state"], "running");
    let lease = c["lease"].as_str().unwrap().to_owned();
    assert!(c["lease_expires_at"].is_string());
    let (s, ack) = a
        .call(Method::POST, &format!("/v1/jobs/{id}/heartbeat"), Some(json!({"lease": lease, "progress": {"done": 1, "total": 2, "message": "half"}, "checkpoint": {"page": 1}})))
        .await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["cancel_requested"], false);
    // A stale lease: 409, nothing changed.
    for (path, body) in [
        ("heartbeat", json!({"lease": "999999"})),
        ("complete", json!({"lease": "999999", "result": 1})),
        ("fail", json!({"lease": "nonsense", "error": {"message": "x"}})),
        ("release", json!({"lease": 5})),
    ] {
        let (s, v) = a.call(Method::POST, &format!("/v1/jobs/{id}/{path}"), Some(body)).await;
        assert_error(s, &v, StatusCode::CONFLICT, "lease_lost");
    }
    let (s, v) = a
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/fail"),
            Some(json!({"lease": lease, "error": {"message": "x", "kind": "exploded"}})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(v["error"]["field"], "error.kind");
    let (s, done) = a
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({"lease": lease, "result": {"sum": 3}, "partial": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["partial"], true);
    assert_eq!(done["result"], json!({"sum": 3}));
    assert_eq!(done["checkpoint"], json!({"page": 1}));
    assert_eq!(done["progress"], json!({"done": 1, "total": 2, "message": "half"}));
    // A terminal job cannot be cancelled; it can't be retried either (it succeeded).
    let (s, v) = a.call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_error(s, &v, StatusCode::CONFLICT, "wrong_state");
    let (s, v) = a.call(Method::POST, &format!("/v1/jobs/{id}/retry"), None).await;
    assert_error(s, &v, StatusCode::CONFLICT, "wrong_state");
}

#[tokio::test]
async fn finish_many_ends_each_entry_alone() {
    let a = api();
    a.call(
        Method::POST,
        "/v1/jobs/batch",
        Some(json!({"jobs": [{"queue": "f"}, {"queue": "f"}, {"queue": "f"}]})),
    )
    .await;
    let (_, claimed) =
        a.call(Method::POST, "/v1/queues/f/claim", Some(json!({"max": 3, "worker": "w"}))).await;
    let jobs = claimed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    let entries = json!({"jobs": [
        {"id": jobs[0]["id"], "lease": jobs[0]["lease"], "result": "ok"},
        {"id": jobs[1]["id"], "lease": "999999", "result": "stale"},
        {"id": jobs[2]["id"], "lease": jobs[2]["lease"], "error": {"message": "nope", "kind": "permanent"}},
        {"id": "zzz", "lease": jobs[0]["lease"]},
    ]});
    let (s, out) = a.call(Method::POST, "/v1/jobs/finish", Some(entries)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let r = out["jobs"].as_array().unwrap();
    assert_eq!(r[0]["state"], "succeeded");
    assert_eq!(r[1]["error"]["code"], "lease_lost");
    assert_eq!(r[2]["state"], "failed");
    assert_eq!(r[3]["error"]["code"], "not_found");
}

#[tokio::test]
async fn listing_pages_with_an_opaque_cursor() {
    let a = api();
    let jobs: Vec<Value> = (0..7).map(|i| json!({"queue": "l", "payload": i})).collect();
    a.call(Method::POST, "/v1/jobs/batch", Some(json!({ "jobs": jobs }))).await;
    let mut seen = Vec::new();
    let mut uri = "/v1/jobs?queue=l&limit=3".to_owned();
    loop {
        let (s, page) = a.call(Method::GET, &uri, None).await;
        assert_eq!(s, StatusCode::OK);
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["payload"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/jobs?queue=l&limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![6, 5, 4, 3, 2, 1, 0]);
}

#[tokio::test]
async fn queues_show_counts_and_take_settings() {
    let a = api();
    let (s, v) = a.call(Method::GET, "/v1/queues/q", None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "q"}))).await;
    let (s, q) = a
        .call(
            Method::PUT,
            "/v1/queues/q",
            Some(json!({"concurrency": 3, "rate": {"limit": 10, "period_ms": 1000}, "paused": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["config"]["concurrency"], 3);
    assert_eq!(q["config"]["paused"], true);
    assert_eq!(q["limit_now"], 3);
    assert_eq!(q["counts"]["queued"], 1);
    let (_, q) = a.call(Method::PUT, "/v1/queues/q", Some(json!({"concurrency": null}))).await;
    assert_eq!(q["config"]["concurrency"], Value::Null);
    assert_eq!(q["config"]["rate"]["limit"], 10, "absent fields are kept");
    let (s, all) = a.call(Method::GET, "/v1/queues", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all["queues"][0]["name"], "q");
    let (s, p) = a.call(Method::PUT, "/v1/pools/api", Some(json!({"concurrency": 5}))).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["limit_now"], 5);
    assert_eq!(p["offline_limit_now"], Value::Null, "only an adaptive pool has an offline limit");
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let a = api_with(Some("s3cret"), 1 << 20);
    let (s, v, _) = a.send(Method::GET, "/v1/queues", None, None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, v, _) = a.send(Method::GET, "/v1/queues", None, Some("wrong")).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _, _) = a.send(Method::GET, "/v1/queues", None, Some("s3cret")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, _) = a.send(Method::GET, "/v1/openapi.json", None, None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    for open in ["/healthz", "/readyz"] {
        let (s, _, _) = a.send(Method::GET, open, None, None).await;
        assert_eq!(s, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes() {
    let a = api();
    let (s, doc) = a.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/jobs", vec!["post", "get"]),
        ("/v1/jobs/batch", vec!["post"]),
        ("/v1/jobs/finish", vec!["post"]),
        ("/v1/jobs/{id}", vec!["get"]),
        ("/v1/jobs/{id}/cancel", vec!["post"]),
        ("/v1/jobs/{id}/retry", vec!["post"]),
        ("/v1/jobs/{id}/heartbeat", vec!["post"]),
        ("/v1/jobs/{id}/complete", vec!["post"]),
        ("/v1/jobs/{id}/fail", vec!["post"]),
        ("/v1/jobs/{id}/release", vec!["post"]),
        ("/v1/queues", vec!["get"]),
        ("/v1/queues/{name}", vec!["get", "put"]),
        ("/v1/queues/{name}/claim", vec!["post"]),
        ("/v1/pools/{name}", vec!["get", "put"]),
        ("/v1/schedules", vec!["get"]),
        ("/v1/schedules/{name}", vec!["get", "put", "patch", "delete"]),
        ("/v1/schedules/{name}/run", vec!["post"]),
        ("/v1/ops", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
    ];
    for (path, methods) in &expected {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing from the document"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing from the document");
        }
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "the document has paths the test does not know: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // And every documented operation is routed (never answered by the 404 fallback).
    for (path, methods) in &expected {
        let uri = path.replace("{id}", "1").replace("{name}", "docs-check");
        for m in methods {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let (s, v) = a.call(method, &uri, None).await;
            let fallback = s == StatusCode::NOT_FOUND && v["error"]["message"] == "no such endpoint";
            assert!(!fallback && s != StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}: {s} {v}");
        }
    }
}

#[tokio::test]
async fn every_schema_property_has_a_description() {
    let a = api();
    let (s, doc) = a.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    // A property that only points at another schema carries that schema's description.
    let is_ref = |p: &Value| {
        let composed = ["allOf", "oneOf"].iter().any(|k| {
            p[*k].as_array().is_some_and(|parts| parts.iter().any(|part| part.get("$ref").is_some()))
        });
        p.get("$ref").is_some() || composed
    };
    let mut missing = Vec::new();
    for (schema, body) in doc["components"]["schemas"].as_object().unwrap() {
        let Some(props) = body["properties"].as_object() else { continue };
        for (name, prop) in props {
            let described = prop["description"].as_str().is_some_and(|d| !d.trim().is_empty());
            if !described && !is_ref(prop) {
                missing.push(format!("{schema}.{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "{} properties without a description: {missing:?}", missing.len());
}

#[tokio::test]
async fn the_documented_job_shape_matches_the_served_one() {
    let a = api();
    let (_, doc) = a.call(Method::GET, "/v1/openapi.json", None).await;
    let documented: std::collections::BTreeSet<String> =
        doc["components"]["schemas"]["JobDoc"]["properties"].as_object().unwrap().keys().cloned().collect();
    // A job that failed once and holds a lease: every optional part is present.
    a.call(Method::PUT, "/v1/queues/shape", Some(json!({"backoff": {"base_ms": 0, "max_ms": 0}}))).await;
    let trace = json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=b"});
    let (_, j) = a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "shape", "key": "k", "traceparent": trace["traceparent"], "tracestate": trace["tracestate"]}))).await;
    assert_eq!((&j["traceparent"], &j["tracestate"]), (&trace["traceparent"], &trace["tracestate"]), "{j}");
    let (_, c) = a.call(Method::POST, "/v1/queues/shape/claim", Some(json!({"max": 1}))).await;
    let id = c["jobs"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"lease": c["jobs"][0]["lease"], "error": {"message": "boom"}});
    a.call(Method::POST, &format!("/v1/jobs/{id}/fail"), Some(body)).await;
    let (_, c) = a.call(Method::POST, "/v1/queues/shape/claim", Some(json!({"max": 1}))).await;
    let claimed = &c["jobs"][0];
    assert_eq!(claimed["errors"][0]["message"], "boom", "{claimed}");
    assert_eq!(claimed["errors"][0]["kind"], "retryable");
    assert_eq!(claimed["errors"][0]["attempt"], 1);
    let served: std::collections::BTreeSet<String> = claimed.as_object().unwrap().keys().cloned().collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but not in JobDoc: {undocumented:?}");
    let missing: Vec<_> = documented.difference(&served).filter(|k| *k != "deduplicated").collect();
    assert!(missing.is_empty(), "in JobDoc but never served: {missing:?}");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_the_work() {
    let a = api();
    let scrape = |a: &Api| {
        let router = a.router.clone();
        async move {
            let req = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let text =
                String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec())
                    .unwrap();
            parse_prometheus(&text)
        }
    };
    let before = scrape(&a).await;
    let value = |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "metered"}))).await;
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "metered"}))).await;
    let (_, claimed) = a.call(Method::POST, "/v1/queues/metered/claim", Some(json!({"max": 2}))).await;
    for j in claimed["jobs"].as_array().unwrap() {
        let id = j["id"].as_str().unwrap();
        a.call(Method::POST, &format!("/v1/jobs/{id}/complete"), Some(json!({"lease": j["lease"]}))).await;
    }
    let after = scrape(&a).await;
    let submitted = r#"drove_jobs_submitted_total{queue="metered"}"#;
    assert_eq!(value(&after, submitted) - value(&before, submitted), 2.0);
    let done = r#"drove_runs_finished_total{queue="metered",outcome="succeeded"}"#;
    assert_eq!(value(&after, done) - value(&before, done), 2.0);
    assert_eq!(value(&after, r#"drove_queue_jobs{queue="metered",state="succeeded"}"#), 2.0);
    assert!(value(&after, r#"drove_run_seconds_count{queue="metered"}"#) >= 2.0);
    assert!(value(&after, r#"drove_claim_batch_size_count{queue="metered"}"#) >= 1.0);
    assert!(value(&after, r#"drove_claim_seconds_count{queue="metered"}"#) >= 1.0);
    assert!(
        value(&after, r#"drove_store_commit_seconds_count{store="sqlite"}"#)
            > value(&before, r#"drove_store_commit_seconds_count{store="sqlite"}"#)
    );
    let posts = r#"drove_http_requests_total{route="/v1/jobs",method="POST",status="201"}"#;
    assert_eq!(value(&after, posts) - value(&before, posts), 2.0);
}

/// Parses the Prometheus text format strictly enough to catch a malformed page: every line is
/// a comment (`# HELP` / `# TYPE`) or `name{labels} value`.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let kind = rest.split_whitespace().next().unwrap_or("");
            assert!(kind == "HELP" || kind == "TYPE", "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        out.insert(series.to_owned(), v);
    }
    out
}

// ---- issue 13: no input can take a node down --------------------------------------------

#[tokio::test]
async fn rates_too_large_to_compute_are_refused_and_the_largest_allowed_keep_working() {
    let a = api();
    // The report's setting: the GCRA interval overflowed and a division by zero killed the writer.
    for field in ["rate", "group_rate"] {
        let body = json!({ field: {"limit": 9_223_372_036_854_775_807_i64, "period_ms": 1} });
        let (s, v) = a.call(Method::PUT, "/v1/queues/q", Some(body)).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], format!("{field}.limit"));
    }
    for (body, field) in [
        (json!({"rate": {"limit": 1, "period_ms": i64::MAX}}), "rate.period_ms"),
        (json!({"rate": {"limit": 1, "period_ms": 1000, "burst": i64::MAX}}), "rate.burst"),
        (json!({"timeout_ms": i64::MAX}), "timeout_ms"),
        (json!({"backoff": {"base_ms": 1, "max_ms": i64::MAX}}), "backoff.max_ms"),
        (json!({"concurrency": i64::MAX}), "concurrency"),
    ] {
        let (s, v) = a.call(Method::PUT, "/v1/queues/q", Some(body)).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field);
    }
    for (body, field) in [
        (json!({"queue": "q", "delay_ms": i64::MAX}), "delay_ms"),
        (json!({"queue": "q", "timeout_ms": i64::MAX}), "timeout_ms"),
        (json!({"queue": "q", "max_attempts": i64::MAX}), "max_attempts"),
    ] {
        let (s, v) = a.call(Method::POST, "/v1/jobs", Some(body)).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field);
    }
    // The largest allowed rate, with a group rate too: claims work and so does every other queue.
    let (s, _) = a
        .call(
            Method::PUT,
            "/v1/queues/q",
            Some(json!({"rate": {"limit": 1_000_000_000, "period_ms": 1, "burst": 1_000_000_000},
                        "group_rate": {"limit": 1_000_000_000, "period_ms": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    for g in ["a", "b", "c"] {
        a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "q", "group": g}))).await;
    }
    let (s, v) = a.call(Method::POST, "/v1/queues/q/claim", Some(json!({"max": 10}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3);
    let (s, _) = a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "other"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = a.call(Method::GET, "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn json_no_reader_can_decode_is_refused_naming_the_field() {
    let a = api();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases = [
        (format!(r#"{{"queue":"q","payload":{deep}}}"#), "payload"),
        (r#"{"queue":"q","payload":{"n":1e999}}"#.to_owned(), "payload"),
        (r#"{"queue":"q","payload":"\ud800"}"#.to_owned(), "payload"),
    ];
    for (body, field) in cases {
        let (s, v, _) = a.send(Method::POST, "/v1/jobs", Some(&body), None).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    // Results and checkpoints too.
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "w"}))).await;
    let (_, c) = a.call(Method::POST, "/v1/queues/w/claim", Some(json!({}))).await;
    let (id, lease) = (c["jobs"][0]["id"].as_str().unwrap().to_owned(), c["jobs"][0]["lease"].clone());
    let hb = format!(r#"{{"lease":{lease},"checkpoint":{deep}}}"#);
    let (s, v, _) = a.send(Method::POST, &format!("/v1/jobs/{id}/heartbeat"), Some(&hb), None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(v["error"]["field"], "checkpoint");
    let done = format!(r#"{{"lease":{lease},"result":[1e999]}}"#);
    let (s, v, _) = a.send(Method::POST, &format!("/v1/jobs/{id}/complete"), Some(&done), None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(v["error"]["field"], "result");
    // Nothing was lost: the run is still there to complete.
    let (s, _) =
        a.call(Method::POST, &format!("/v1/jobs/{id}/complete"), Some(json!({"lease": lease}))).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn arrays_are_not_objects_and_bodies_must_be_json() {
    let a = api();
    for (body, field) in
        [(r#"["q", null]"#, "body"), (r#"{"rate": [5, 1000]}"#, "rate"), (r#"{"jobs": [["q"]]}"#, "jobs[0]")]
    {
        let uri = if field == "rate" {
            "/v1/queues/q"
        } else if field == "body" {
            "/v1/jobs"
        } else {
            "/v1/jobs/batch"
        };
        let method = if field == "rate" { Method::PUT } else { Method::POST };
        let (s, v, _) = a.send(method, uri, Some(body), None).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let req = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::from(r#"{"queue":"q"}"#))
        .unwrap();
    let resp = a.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // What curl -d and fetch send by default still works.
    for ct in
        ["application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain;charset=UTF-8"]
    {
        let req = Request::post("/v1/jobs")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(r#"{"queue":"q"}"#))
            .unwrap();
        assert_eq!(a.router.clone().oneshot(req).await.unwrap().status(), StatusCode::CREATED, "{ct}");
    }
}

#[tokio::test]
async fn wait_zero_means_no_wait() {
    let a = api();
    let (s, v, _) = a.send(Method::POST, "/v1/jobs?wait=0", Some(r#"{"queue":"z"}"#), None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let (s, _, _) = a.send(Method::GET, &format!("/v1/jobs/{id}?wait=0ms"), None, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn names_no_queue_can_have_are_unknown_on_every_read_route() {
    let a = api();
    for uri in ["/v1/queues/a%00b", "/v1/pools/a%00b", "/v1/queues/%F0%9F%92%A9"] {
        let (s, v, _) = a.send(Method::GET, uri, None, None).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    }
    for (q, field) in [("queue=a%00b", "queue"), ("key=a%00b", "key"), ("group=a%00b", "group")] {
        let (s, v, _) = a.send(Method::GET, &format!("/v1/jobs?{q}"), None, None).await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
        assert_eq!(v["error"]["field"], field);
    }
}

#[tokio::test]
async fn a_tokenless_server_answers_only_its_own_host_names() {
    let a = api();
    let get = |host: &'static str| {
        let router = a.router.clone();
        async move {
            let req = Request::get("/v1/queues").header(header::HOST, host).body(Body::empty()).unwrap();
            router.oneshot(req).await.unwrap().status()
        }
    };
    // A page that rebinds its own name to 127.0.0.1 sends that name.
    assert_eq!(get("evil.example:7070").await, StatusCode::FORBIDDEN);
    assert_eq!(get("localhost:7070").await, StatusCode::OK);
    assert_eq!(get("127.0.0.1:7070").await, StatusCode::OK);
    // With a token the token is the guard.
    let t = api_with(Some("s3cret"), 1 << 20);
    let req = Request::get("/v1/queues")
        .header(header::HOST, "jobs.example.com")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.router.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_ops_summary_counts_each_window_per_queue() {
    let a = api();
    for _ in 0..3 {
        a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "ops", "max_attempts": 1}))).await;
    }
    let (_, c) = a.call(Method::POST, "/v1/queues/ops/claim", Some(json!({"max": 3}))).await;
    let runs = c["jobs"].as_array().unwrap().clone();
    let end = |i: usize, path: &str, body: Value| {
        let id = runs[i]["id"].as_str().unwrap().to_owned();
        let mut body = body;
        body["lease"] = runs[i]["lease"].clone();
        let path = format!("/v1/jobs/{id}/{path}");
        let a = &a;
        async move { a.call(Method::POST, &path, Some(body)).await }
    };
    end(0, "complete", json!({})).await;
    end(1, "complete", json!({"partial": true})).await;
    end(2, "fail", json!({"error": {"message": "nope", "kind": "permanent"}})).await;
    let (s, v) = a.call(Method::GET, "/v1/ops?window=1h", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["window"], "1h");
    assert_eq!(v["totals"]["succeeded"], 2);
    assert_eq!(v["totals"]["partial"], 1);
    assert_eq!(v["totals"]["failed"], 1);
    assert_eq!(v["totals"]["failed_by_kind"]["permanent"], 1);
    assert_eq!(v["queues"][0]["name"], "ops");
    let (_, q) = a.call(Method::GET, "/v1/queues/ops", None).await;
    assert_eq!((q["counts"]["succeeded"].clone(), q["counts"]["partial"].clone()), (json!(2), json!(1)));
    let (_, list) = a.call(Method::GET, "/v1/jobs?partial=true", None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    let (s, v) = a.call(Method::GET, "/v1/ops?window=9d", None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let (s, v) = a.call(Method::GET, "/v1/jobs?partial=maybe", None).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
}

#[tokio::test]
async fn a_finish_entry_that_cannot_be_read_is_refused_alone() {
    let a = api();
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "f"}))).await;
    let (_, c) = a.call(Method::POST, "/v1/queues/f/claim", Some(json!({}))).await;
    let (id, lease) = (c["jobs"][0]["id"].clone(), c["jobs"][0]["lease"].clone());
    let body = json!({"jobs": [
        {"id": "999", "lease": "1", "error": {"message": "x", "kind": "bogus"}},
        {"id": id, "lease": lease, "result": 1},
    ]});
    let (s, v) = a.call(Method::POST, "/v1/jobs/finish", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["jobs"][0]["id"], "999");
    assert_eq!(v["jobs"][0]["error"]["code"], "invalid_value");
    assert_eq!(v["jobs"][1]["state"], "succeeded", "the other entry ended");
}

#[tokio::test]
async fn a_claim_carries_the_ends_of_the_last_runs() {
    let a = api();
    for i in 0..3 {
        a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "cyc", "payload": i}))).await;
    }
    let (_, first) = a.call(Method::POST, "/v1/queues/cyc/claim", Some(json!({"max": 2}))).await;
    let runs = first["jobs"].as_array().unwrap();
    // One request: end both runs (one completes, one has a stale lease) and claim the next.
    let finish = json!([
        {"id": runs[0]["id"], "lease": runs[0]["lease"], "result": "done"},
        {"id": runs[1]["id"], "lease": "999999", "result": "late"},
    ]);
    let (s, v) =
        a.call(Method::POST, "/v1/queues/cyc/claim", Some(json!({"max": 2, "finish": finish}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["finished"][0]["state"], "succeeded");
    assert_eq!(v["finished"][1]["error"]["code"], "lease_lost");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1, "the third job");
    let (s, v) = a.call(Method::POST, "/v1/queues/cyc/claim", Some(json!({"finish": {"id": 1}}))).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
}

#[tokio::test]
async fn an_invalid_claim_ends_none_of_the_runs_it_carries() {
    let a = api();
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "inv", "payload": 1}))).await;
    let (_, c) = a.call(Method::POST, "/v1/queues/inv/claim", Some(json!({"worker": "w"}))).await;
    let (id, lease) = (c["jobs"][0]["id"].clone(), c["jobs"][0]["lease"].clone());
    let finish = json!([{"id": id, "lease": lease, "result": 7}]);
    let (s, v) =
        a.call(Method::POST, "/v1/queues/inv/claim", Some(json!({"max": 0, "finish": finish.clone()}))).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(v["error"]["field"], "max");
    let (_, job) = a.call(Method::GET, &format!("/v1/jobs/{}", id.as_str().unwrap()), None).await;
    assert_eq!(job["state"], "running", "a refused claim touched the run: {job}");
    // Entries are named as the claim names them, and an id written as a number is echoed.
    let bad = json!([{"id": 12345, "lease": "1", "result": 1}, finish[0].clone()]);
    let (s, v) = a.call(Method::POST, "/v1/queues/inv/claim", Some(json!({"finish": bad}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["finished"][0]["id"], "12345");
    assert!(v["finished"][0]["error"]["field"].as_str().unwrap().starts_with("finish[0]"), "{v}");
    assert_eq!(v["finished"][1]["state"], "succeeded");
}

#[tokio::test]
async fn a_linger_outlasts_a_zero_wait_when_jobs_are_ready() {
    let a = api();
    // Nothing ready: a zero wait answers at once, linger or not.
    let (s, v) = a
        .call(Method::POST, "/v1/queues/lg/claim", Some(json!({"max": 5, "wait_ms": 0, "linger_ms": 60000})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 0);
    // One ready of the five asked for: the claim holds for its linger (timers never fire
    // early, so this bound cannot flake), then takes what there is.
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "lg", "payload": 1}))).await;
    let asked = std::time::Instant::now();
    let (s, v) = a
        .call(Method::POST, "/v1/queues/lg/claim", Some(json!({"max": 5, "wait_ms": 0, "linger_ms": 300})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1, "{v}");
    assert!(asked.elapsed() >= std::time::Duration::from_millis(300), "answered before its linger");
}

/// docs/API.md is what users read: it has one `### METHOD /path` section for every operation of
/// the served OpenAPI document, and none for an operation the server does not have.
#[tokio::test]
async fn docs_api_md_has_a_section_for_every_operation() {
    let a = api();
    let (_, doc) = a.call(Method::GET, "/v1/openapi.json", None).await;
    let mut served = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            served.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .filter(|h| ["GET ", "POST ", "PUT ", "PATCH ", "DELETE "].iter().any(|m| h.starts_with(m)))
        .map(|h| h.trim().to_owned())
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but without a section in docs/API.md: {undocumented:?}");
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "sections in docs/API.md the server does not have: {unserved:?}");
}

/// A queue's answer has exactly the fields the document gives it, counts included.
#[tokio::test]
async fn the_documented_queue_shape_matches_the_served_one() {
    let a = api();
    let (_, doc) = a.call(Method::GET, "/v1/openapi.json", None).await;
    let keys = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    a.call(Method::POST, "/v1/jobs", Some(json!({"queue": "shape"}))).await;
    let (_, q) = a.call(Method::GET, "/v1/queues/shape", None).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(keys(&q["counts"]), keys(&schemas["CountsDoc"]["properties"]), "{q}");
    let served = keys(&q);
    let documented = keys(&schemas["QueueDoc"]["properties"]);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but not in QueueDoc: {undocumented:?}");
}
