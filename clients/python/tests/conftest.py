"""Test harness: a real ``drove serve`` on a free loopback port with a fresh database per test
module, child processes read line by line, and waits on events and conditions with generous
timeouts (never a sleep standing in for synchronisation)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from drove_client import Drove

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = TESTS_DIR.parent
REPO_DIR = PACKAGE_DIR.parent.parent
LONG = 60.0


def drove_bin() -> str:
    bin_path = os.environ.get("DROVE_BIN") or str(REPO_DIR / "target" / "debug" / "drove")
    if not os.path.exists(bin_path):
        raise RuntimeError(
            f"the drove binary is missing at {bin_path}: build it with `cargo build -p drove-cli` in {REPO_DIR}, or point DROVE_BIN at one"
        )
    return bin_path


class Server:
    """A ``drove serve`` child process on 127.0.0.1 with its own database directory."""

    def __init__(self, token: Optional[str] = None, extra: Optional[List[str]] = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="drove-py-test-")
        self.token = token
        self.extra = extra or []
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.url = ""
        self.port = 0
        self.start()
        self.drove = Drove(self.url, token=token)

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "server.log")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-16_000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Starts the server: on a free port the first time, on the same port after that."""
        args = [drove_bin(), "serve", "--db", os.path.join(self.dir, "drove.db"), "--bind", f"127.0.0.1:{self.port}"]
        if self.token:
            args += ["--token", self.token]
        args += self.extra
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def read() -> None:
            for raw in stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"drove serve did not say it listens within 30 s; its log:\n{self.log()}") from None
            if line is None:
                raise RuntimeError(f"drove serve exited ({self.proc.wait()}) before listening; its log:\n{self.log()}")
            if line.startswith("drove listening on "):
                self.url = line[len("drove listening on ") :].strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                return

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.drove.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.stop()


def until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Checks ``condition`` every 20 ms until it holds (at most ``timeout``): for states only
    visible by asking, such as a count on the server."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_event(event: threading.Event, what: str, timeout: float = LONG) -> None:
    if not event.wait(timeout):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class LineProcess:
    """A Python child process whose stdout is JSON lines; ``next(test)`` returns the first line
    (already seen or still to come) that passes ``test``."""

    def __init__(self, script: Path, args: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.log_file = tempfile.NamedTemporaryFile(prefix="drove-py-child-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(script), *(args or [])],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.lines: List[Dict[str, Any]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                line = json.loads(text)
                if not isinstance(line, dict):
                    line = {"text": text}
            except ValueError:
                line = {"text": text}
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append({"eof": True})
            self.cond.notify_all()

    def next(self, test: Callable[[Dict[str, Any]], bool], what: str, timeout: float = LONG) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if test(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; the child's log:\n{self.log()}")
                self.cond.wait(left)

    def log(self) -> str:
        try:
            with open(self.log_file.name, encoding="utf-8", errors="replace") as f:
                return f.read()[-16_000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)

    def close(self) -> None:
        self.kill(signal.SIGKILL)
        try:
            os.unlink(self.log_file.name)
        except OSError:
            pass
