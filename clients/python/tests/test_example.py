"""The example in examples/python, run as its users would: two concurrent requests for one
customer's report build it once, and a later request reuses it."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from conftest import REPO_DIR, LineProcess, Server

EXAMPLE = REPO_DIR / "examples" / "python" / "report_service.py"


def test_report_service_builds_one_report_for_concurrent_requests(server: Server) -> None:
    web = LineProcess(EXAMPLE, env={"DROVE_URL": server.url, "PORT": "0", "REPORT_MS": "600"})
    try:
        ready = web.next(lambda l: str(l.get("text", "")).startswith("report service listening on "), "the service to listen")
        url = ready["text"].rsplit(" ", 1)[1]

        def ask(_: Any) -> httpx.Response:
            return httpx.get(f"{url}/report", params={"customer": "42"}, timeout=60)

        with ThreadPoolExecutor(2) as pool:
            a, b = list(pool.map(ask, range(2)))
        assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json(), "both requests get the one report"
        assert a.json()["customer"] == "42"
        counts = server.drove.queue("reports")["counts"]
        assert counts["succeeded"] == 1, counts
        again = ask(None)
        assert again.json() == a.json(), "a request within a minute reuses the report"
        assert server.drove.queue("reports")["counts"]["succeeded"] == 1
        assert httpx.get(f"{url}/report", params={"customer": "no spaces"}).status_code == 400
        web.kill(signal.SIGTERM)
        assert web.proc.returncode == 0, web.log()
    finally:
        web.close()
