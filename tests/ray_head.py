"""A real local Ray head for tests (``ray start --head --block`` on 127.0.0.1), started and stopped on its own.

The head runs in a process group of its own, so stopping it ends exactly the processes it started: never ``ray stop``,
which ends every Ray of the user on the machine (the test session's own ``ray.init`` included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `ray`, and `waltz-ray` for the jobs
RAY = str(BIN / "ray")
# Ray puts its sockets at <temp-dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store and refuses any longer
# than 107 bytes (AF_UNIX); pytest's tmp_path is often too long for that.
_SESSION_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
_SOCKET_MAX = 107
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (held together while choosing, so they differ)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def short_temp_dir() -> Path:
    """A fresh ``--temp-dir`` under ``$RAY_TMPDIR`` (the repo's .cache/ray), or under /tmp when that path would make
    Ray's socket paths too long."""
    for parent in (Path(os.environ.get("RAY_TMPDIR") or ROOT / ".cache" / "ray"), Path("/tmp")):
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="h", dir=parent))
        if len(str(path).encode()) + _SESSION_TAIL <= _SOCKET_MAX:
            return path
        path.rmdir()
    raise RuntimeError("no temp dir short enough for Ray's AF_UNIX sockets")


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class LocalHead:
    """One running head: its ``ray start`` process (the process group leader), ports and environment."""

    process: subprocess.Popen[bytes]
    temp_dir: Path
    env: dict[str, str]
    gcs_port: int
    dashboard_port: int

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def log_path(self) -> Path:
        return self.temp_dir / "ray-start.log"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def api(self, path: str) -> Any:
        """GET the dashboard's REST API, e.g. ``api("/api/jobs/<submission id>")``."""
        return _get_json(self.dashboard_url + path)

    def cli(
        self, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the venv's ``ray`` CLI against this head (``ray job ...`` takes ``--address`` from the caller)."""
        return subprocess.run(
            [RAY, *args], env=dict(env or self.env), capture_output=True, text=True, timeout=timeout, check=False
        )

    def wait_ready(self, timeout: float) -> None:
        """Until the dashboard answers and the job API lists jobs; fails early if ``ray start`` exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                _get_json(f"{self.dashboard_url}/api/version")
                _get_json(f"{self.dashboard_url}/api/jobs/")
                return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray head not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def descendants(self) -> list[int]:
        """Every process below ``ray start``, including job drivers (Ray starts those in sessions of their own)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            kids = children.get(todo.pop(), [])
            found += kids
            todo += kids
        return found

    def stop(self, grace: float = 45.0) -> None:
        """SIGTERM to ``ray start`` (it drains the node and stops its processes), then SIGKILL to whatever of this
        head is left: its process group and, by pid, the descendants that left the group."""
        strays = self.descendants() if sys.platform == "linux" else []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in strays:
            with suppress(ProcessLookupError):
                if os.getpgid(pid) != self.process.pid:  # those in the group are gone already
                    os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(
    env: Mapping[str, str] | None = None,
    *,
    num_cpus: int = 2,
    object_store_mb: int = 500,
    ready_timeout: float = 180.0,
) -> LocalHead:
    """Start ``ray start --head --block`` bound to 127.0.0.1 with ``env`` (default: this process's) plus the
    loopback settings and the venv's bin first on PATH, so jobs run ``waltz-ray`` from this environment."""
    head_env = dict(os.environ if env is None else env)
    head_env.pop("RAY_ADDRESS", None)  # the head must not try to join another cluster
    head_env.update(LOOPBACK_ENV)
    # a test head has nothing to drain on SIGTERM; Ray 2.60 otherwise waits for the raylet up to 30 s first
    head_env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    head_env["PATH"] = os.pathsep.join([str(BIN), head_env.get("PATH", "")])
    gcs, dashboard, client, agent = free_ports(4)
    temp_dir = short_temp_dir()
    command = [
        RAY, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        f"--port={gcs}", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--num-cpus={num_cpus}", f"--object-store-memory={object_store_mb * 1024 * 1024}",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    with (temp_dir / "ray-start.log").open("wb") as log:
        # a session of its own: the head's processes share a process group that nothing else is in
        process = subprocess.Popen(
            command, env=head_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    head = LocalHead(process, temp_dir, head_env, gcs, dashboard)
    try:
        head.wait_ready(ready_timeout)
    except BaseException:
        head.stop(grace=15)
        raise
    return head


@contextmanager
def local_head(env: Mapping[str, str] | None = None, **kwargs: Any) -> Iterator[LocalHead]:
    """``start_head`` for a ``with`` block (or a fixture): the head is stopped however the block ends."""
    head = start_head(env, **kwargs)
    try:
        yield head
    finally:
        head.stop()
