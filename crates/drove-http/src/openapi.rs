//! The OpenAPI document as served: the routes' own annotations (utoipa), completed with what
//! every route shares so that the document tells the whole truth about each answer: the bearer
//! scheme, and the error statuses any operation can give (malformed requests, a missing token,
//! a refused origin or host, an unavailable store, and for operations with a body or path
//! parameters, the statuses those bring). A test runs a fuzzer over the document against a
//! real server and fails on any answer the document does not describe.

use serde_json::{Value, json};

/// Operations anyone may call without the token.
const OPEN: &[&str] = &["/healthz", "/readyz"];

/// Completes `doc` (the utoipa document as JSON).
pub fn complete(mut doc: Value) -> Value {
    doc["components"]["securitySchemes"]["bearer"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "The server's token (`drove serve --token`). Without a configured token no \
                        credentials are needed, but the server then answers only loopback host names."
    });
    doc["security"] = json!([{ "bearer": [] }]);
    let error = json!({ "$ref": "#/components/schemas/ErrorBodyDoc" });
    let answer = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": error.clone() } } });
    add_links(&mut doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for (path, item) in paths.iter_mut() {
        let open = OPEN.contains(&path.as_str());
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                continue;
            }
            let has_body = op.get("requestBody").is_some();
            let params: Vec<String> = op
                .get("parameters")
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(|p| p["in"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let mut add: Vec<(&str, &str)> = vec![
                ("400", "Malformed request: unparseable HTTP, JSON or query string"),
                (
                    "403",
                    "Refused: a browser's cross-origin write, or (without a token) a host name that is not the server's",
                ),
            ];
            if open {
                op["security"] = json!([]);
            } else {
                add.push(("401", "A token is configured and the request did not carry it"));
                add.push(("503", "The store is unavailable (the answer carries Retry-After)"));
            }
            if has_body {
                add.push(("408", "The request body stalled or took too long"));
                add.push((
                    "413",
                    "The body (or a payload, result or checkpoint in it) is larger than the limit",
                ));
                add.push(("415", "The body's Content-Type is not JSON"));
                add.push(("422", "A value is invalid; `field` names it"));
            }
            if params.iter().any(|p| p == "query") {
                add.push(("422", "A query parameter's value is invalid"));
            }
            if params.iter().any(|p| p == "path") {
                add.push(("404", "No such resource"));
            }
            let responses = &mut op["responses"];
            for (status, description) in add {
                if responses.get(status).is_none() {
                    responses[status] = answer(description);
                }
            }
        }
    }
    doc
}

/// OpenAPI links: which answers feed which operations (a submitted job's id into reading,
/// cancelling and retrying it; a claimed job's id into ending its run), for generated clients
/// and for the fuzzer's sequences of calls.
fn add_links(doc: &mut Value) {
    let link = |op: &str, id: &str| json!({ "operationId": op, "parameters": { "id": id } });
    let job_links = |id: &str| {
        json!({
            "GetJob": link("get_job", id),
            "CancelJob": link("cancel_job", id),
            "RetryJob": link("retry_job", id),
        })
    };
    let run_links = |id: &str| {
        json!({
            "HeartbeatRun": link("heartbeat_run", id),
            "CompleteRun": link("complete_run", id),
            "FailRun": link("fail_run", id),
            "ReleaseRun": link("release_run", id),
        })
    };
    let set = |doc: &mut Value, path: &str, method: &str, status: &str, links: Value| {
        if let Some(r) =
            doc.pointer_mut(&format!("/paths/{}/{method}/responses/{status}", path.replace('/', "~1")))
        {
            r["links"] = links;
        }
    };
    for status in ["200", "201", "202"] {
        set(doc, "/v1/jobs", "post", status, job_links("$response.body#/id"));
    }
    set(doc, "/v1/jobs/batch", "post", "200", job_links("$response.body#/jobs/0/id"));
    set(doc, "/v1/queues/{name}/claim", "post", "200", run_links("$response.body#/jobs/0/id"));
}
