"""The sync client against a real server: round trips of every call, and the server's refusals
as the fitting exception classes."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, Dict, List

import pytest

from drove_client import (
    Drove,
    DroveError,
    Invalid,
    JobFailed,
    KeyConflict,
    NotFound,
    PayloadTooLarge,
    Permanent,
    Unreachable,
    WaitTimeout,
    WrongState,
    is_terminal,
)

from conftest import Server


def test_submit_get_and_dedupe_by_key(server: Server) -> None:
    drove = server.drove
    job = drove.submit("rt-submit", {"n": 1}, key="k1", priority=5, max_attempts=3, kind="demo", group="g")
    assert job["state"] == "queued"
    assert job["deduplicated"] is False
    assert (job["payload"], job["key"], job["priority"], job["max_attempts"], job["kind"], job["group"]) == ({"n": 1}, "k1", 5, 3, "demo", "g")
    again = drove.submit("rt-submit", {"n": 2}, key="k1")
    assert again["id"] == job["id"] and again["deduplicated"] is True
    assert drove.get(job["id"])["payload"] == {"n": 1}
    with pytest.raises(KeyConflict) as conflict:
        drove.submit("rt-submit", {"n": 3}, key="k1", on_conflict="reject")
    assert conflict.value.status == 409 and conflict.value.code == "key_conflict"
    replaced = drove.submit("rt-submit", {"n": 4}, key="k1", on_conflict="replace")
    assert replaced["id"] == job["id"] and replaced["payload"] == {"n": 4}


def test_a_trace_context_is_kept_and_handed_to_the_worker(server: Server) -> None:
    drove = server.drove
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job = drove.submit("rt-trace", {"n": 1}, traceparent=tp, tracestate="vendor=1")
    assert (job["traceparent"], job["tracestate"]) == (tp, "vendor=1")
    many = drove.submit_many([{"queue": "rt-trace", "traceparent": tp}, {"queue": "rt-trace"}])
    assert many[0]["traceparent"] == tp and "traceparent" not in many[1]
    with pytest.raises(Invalid) as bad:
        drove.submit("rt-trace", traceparent="00-not-a-trace-01")
    assert bad.value.field == "traceparent"


def test_a_submit_inside_an_opentelemetry_span_carries_its_context(server: Server) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("GET /report") as span:
        sc = span.get_span_context()
        job = server.drove.submit("rt-trace", {"n": 2})
        many = server.drove.submit_many([{"queue": "rt-trace"}])
        given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        own = server.drove.submit("rt-trace", traceparent=given)
    assert own["traceparent"] == given
    assert job["traceparent"] == f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    assert many[0]["traceparent"] == job["traceparent"]
    # Outside a span nothing is sent.
    assert "traceparent" not in server.drove.submit("rt-trace")
    assert trace.get_current_span().get_span_context().is_valid is False


def test_delayed_submit_is_scheduled(server: Server) -> None:
    drove = server.drove
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    a = drove.submit("rt-delay", None, run_at=later)
    b = drove.submit("rt-delay", None, delay_ms=3_600_000)
    assert a["state"] == "scheduled" and b["state"] == "scheduled"
    with pytest.raises(ValueError):
        drove.submit("rt-delay", None, run_at=dt.datetime.now())  # naive: refused before sending


def test_list_pages_with_a_cursor(server: Server) -> None:
    drove = server.drove
    ids = [j["id"] for j in drove.submit_many([{"queue": "rt-list", "payload": i} for i in range(5)])]
    first = drove.list(queue="rt-list", limit=3)
    assert len(first["jobs"]) == 3 and first["next_cursor"]
    second = drove.list(queue="rt-list", limit=3, cursor=first["next_cursor"])
    seen = [j["id"] for j in first["jobs"] + second["jobs"]]
    assert sorted(seen) == sorted(ids)
    assert [j["id"] for j in drove.list(queue="rt-list", state="queued", limit=100)["jobs"]] == seen
    with pytest.raises(DroveError) as bad:
        drove.list(queue="rt-list", cursor="not a cursor")
    assert bad.value.status == 400


def test_cancel_and_retry(server: Server) -> None:
    drove = server.drove
    job = drove.submit("rt-cancel", {"x": 1})
    cancelled = drove.cancel(job["id"])
    assert cancelled["state"] == "cancelled" and is_terminal(cancelled)
    with pytest.raises(WrongState) as twice:
        drove.cancel(job["id"])
    assert twice.value.status == 409 and twice.value.code == "wrong_state"
    again = drove.retry(job["id"])
    assert again["state"] == "queued" and again["attempt"] == 0
    with pytest.raises(WrongState):
        drove.retry(job["id"])


def test_batch_submit_answers_in_order_and_names_a_bad_entry(server: Server) -> None:
    drove = server.drove
    jobs = drove.submit_many([
        {"queue": "rt-batch", "payload": {"i": 0}, "key": "same"},
        {"queue": "rt-batch", "payload": {"i": 1}},
        {"queue": "rt-batch", "payload": {"i": 2}, "key": "same"},
    ])
    assert [j["payload"] for j in jobs] == [{"i": 0}, {"i": 1}, {"i": 0}]
    assert jobs[2]["id"] == jobs[0]["id"], "a later entry with the same key joins the earlier one"
    with pytest.raises(Invalid) as bad:
        drove.submit_many([{"queue": "rt-batch"}, {"queue": "rt-batch", "max_attempts": 0}])
    assert bad.value.status == 422 and bad.value.field == "jobs[1].max_attempts"
    assert len(drove.list(queue="rt-batch")["jobs"]) == 2, "a refused batch stores nothing"


def test_errors_map_to_classes_and_name_the_field(server: Server) -> None:
    drove = server.drove
    with pytest.raises(Invalid) as neg:
        drove.submit("rt-errors", None, delay_ms=-1)
    assert (neg.value.status, neg.value.code, neg.value.field) == (422, "invalid_value", "delay_ms")
    with pytest.raises(Invalid) as name:
        drove.submit("not a queue name", None)
    assert name.value.field == "queue"
    with pytest.raises(NotFound) as missing:
        drove.get("no-such-job")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    with pytest.raises(NotFound):
        drove.queue("never-used")
    with pytest.raises(NotFound):
        drove.pool("never-used")
    with pytest.raises(PayloadTooLarge) as big:
        drove.submit("rt-errors", "x" * (1024 * 1024 + 10))
    assert big.value.status == 413 and big.value.field == "payload"
    assert isinstance(big.value, DroveError) and not big.value.transient
    with pytest.raises(ValueError):
        drove.submit("rt-errors", float("nan"))  # not JSON: refused before sending


def test_unreachable_server_is_a_transient_error() -> None:
    with Drove("http://127.0.0.1:9", timeout=5) as nobody:
        with pytest.raises(Unreachable) as err:
            nobody.submit("q", None)
    assert err.value.status is None and err.value.code == "unreachable" and err.value.transient


def test_queue_and_pool_settings_round_trip(server: Server) -> None:
    drove = server.drove
    q = drove.set_queue(
        "rt-settings",
        concurrency=4,
        rate={"limit": 10, "period_ms": 1000, "burst": 2},
        backoff={"base_ms": 100, "max_ms": 1000},
        lease_ms=5000,
        reuse_for_ms=1000,
        max_attempts=7,
    )
    assert q["name"] == "rt-settings"
    assert q["config"]["concurrency"] == 4
    assert q["config"]["rate"]["limit"] == 10 and q["config"]["rate"]["period_ms"] == 1000
    assert q["config"]["backoff"] == {"base_ms": 100, "max_ms": 1000}
    cleared = drove.set_queue("rt-settings", concurrency=None)
    assert cleared["config"]["concurrency"] is None
    assert cleared["config"]["lease_ms"] == 5000, "an omitted setting stays"
    assert drove.queue("rt-settings")["config"]["max_attempts"] == 7
    assert "rt-settings" in [x["name"] for x in drove.queues()]
    counts = drove.queue("rt-settings")["counts"]
    assert set(counts) >= {"scheduled", "queued", "running", "succeeded", "failed", "cancelled"}
    with pytest.raises(Invalid) as bad:
        drove.set_queue("rt-settings", concurrency=0)
    assert bad.value.field == "concurrency"

    drove.set_queue("rt-settings", pool="rt-pool")
    pool = drove.set_pool("rt-pool", concurrency=8, offline_min_share=0.2)
    assert pool["name"] == "rt-pool" and pool["config"]["concurrency"] == 8
    assert drove.pool("rt-pool")["config"]["concurrency"] == 8


def test_submit_and_wait_returns_the_result_or_raises(server: Server) -> None:
    drove = server.drove

    def handler(ctx: Any) -> Any:
        if ctx.payload.get("fail"):
            raise Permanent("no good")
        if ctx.payload.get("hold"):
            ctx.cancelled.wait(60)
            ctx.raise_if_cancelled()
        return {"double": ctx.payload["n"] * 2}

    with drove.worker("rt-wait", handler, concurrency=2):
        assert drove.submit_and_wait("rt-wait", {"n": 21}) == {"double": 42}
        with pytest.raises(JobFailed) as failed:
            drove.submit_and_wait("rt-wait", {"fail": True})
        assert failed.value.kind == "permanent" and failed.value.job["state"] == "failed"
        assert failed.value.job["error"]["message"] == "no good"
        with pytest.raises(WaitTimeout) as slow:
            drove.submit_and_wait("rt-wait", {"hold": True}, wait_ms=300)
        assert slow.value.job["state"] in ("queued", "running")
        drove.cancel(slow.value.job["id"])
        done = drove.get(slow.value.job["id"], wait_ms=30_000)
        assert done["state"] == "cancelled"


def test_get_with_wait_answers_an_unfinished_job_as_it_is(server: Server) -> None:
    drove = server.drove
    job = drove.submit("rt-get-wait", None)
    seen = drove.get(job["id"], wait_ms=200)
    assert seen["state"] == "queued"


def test_progress_and_checkpoint_are_visible_while_running(server: Server) -> None:
    drove = server.drove
    stored = threading.Event()
    go_on = threading.Event()

    def handler(ctx: Any) -> Any:
        ctx.progress(3, 10, "page 3")
        ctx.save_checkpoint({"next": 3})
        stored.set()
        go_on.wait(60)
        return "done"

    with drove.worker("rt-progress", handler, progress_interval_ms=0):
        job = drove.submit("rt-progress", None)
        assert stored.wait(60)
        seen = drove.get(job["id"])
        assert seen["checkpoint"] == {"next": 3}
        assert seen["progress"] == {"done": 3, "total": 10, "message": "page 3"}
        go_on.set()
        assert drove.get(job["id"], wait_ms=30_000)["result"] == "done"


def test_on_event_reports_each_end(server: Server) -> None:
    drove = server.drove
    events: List[Dict[str, Any]] = []
    seen = threading.Event()

    def on_event(e: Any) -> None:
        if e.type in ("completed", "failed"):
            events.append({"type": e.type, "state": e.state, "kind": e.kind, "result": e.result})
            if len(events) == 2:
                seen.set()

    def handler(ctx: Any) -> Any:
        if ctx.payload == "bad":
            raise Permanent("bad")
        return ctx.payload

    with drove.worker("rt-events", handler, on_event=on_event):
        drove.submit("rt-events", "good")
        drove.submit("rt-events", "bad")
        assert seen.wait(60)
    assert sorted(events, key=lambda e: e["type"]) == [
        {"type": "completed", "state": "succeeded", "kind": None, "result": "good"},
        {"type": "failed", "state": "failed", "kind": "permanent", "result": None},
    ]


def test_server_times_are_read_on_every_python() -> None:
    from drove_client._http import parse_time

    assert parse_time("2026-12-04T12:32:15.451Z") == pytest.approx(1796387535.451)
    assert parse_time("2026-12-04T12:32:15Z") == pytest.approx(1796387535.0)
    assert parse_time("2026-12-04T12:32:15.4512345+02:00") == pytest.approx(1796380335.451234)
    assert parse_time("not a time") is None and parse_time(None) is None
