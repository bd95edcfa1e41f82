"""supervisord runs the stack's processes; this starts it and talks to it over its unix socket."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from stack.settings import TOPOLOGIES, StackSettings, load


class Supervisor:
    def __init__(self, settings: StackSettings) -> None:
        self.conf = settings.state_dir / "supervisord.conf"
        self.sock = settings.state_dir / "supervisor.sock"
        self.pidfile = settings.state_dir / "supervisord.pid"
        self._transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        self._rpc: Any = xmlrpc.client.ServerProxy("http://localhost", transport=self._transport)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._transport.close()

    def pid(self) -> int | None:
        """supervisord's PID when it runs and answers, else None."""
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            self._rpc.supervisor.getState()
        except (OSError, ValueError, xmlrpc.client.Error):
            return None
        return pid

    def start(self) -> None:
        _raise_open_files_limit()
        bin_dir = Path(sys.executable).parent
        subprocess.run([str(bin_dir / "supervisord"), "-c", str(self.conf)], check=True)
        deadline = time.monotonic() + 10
        while self.pid() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"supervisord did not start; see {self.conf.parent / 'logs' / 'supervisord.log'}"
                )
            time.sleep(0.05)

    def update(self) -> None:
        """Applies a changed configuration: restarts only the programs whose settings changed."""
        added, changed, removed = self.reload()
        for name in changed + removed:
            self._remove(name)
        for name in changed + added:
            self._rpc.supervisor.addProcessGroup(name)

    def reload(self) -> tuple[list[str], list[str], list[str]]:
        """Reads the configuration again, changing nothing that runs: the programs added, changed
        and removed."""
        added, changed, removed = self._rpc.supervisor.reloadConfig()[0]
        return added, changed, removed

    def replace(self, name: str) -> None:
        """Stops a program (waiting until it has exited) and starts it with its new settings."""
        self._remove(name)
        self._rpc.supervisor.addProcessGroup(name)
        self._rpc.supervisor.startProcess(name, False)

    def _remove(self, name: str) -> None:
        self._rpc.supervisor.stopProcessGroup(name)
        self._rpc.supervisor.removeProcessGroup(name)

    def start_process(self, name: str) -> None:
        info = self._rpc.supervisor.getProcessInfo(name)
        if info["statename"] not in ("RUNNING", "STARTING"):
            self._rpc.supervisor.startProcess(name, False)

    def stop_process(self, name: str) -> None:
        """Stops a process and waits until it has exited (SIGTERM, then its stop timeout)."""
        info = self._rpc.supervisor.getProcessInfo(name)
        if info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
            self._rpc.supervisor.stopProcess(name, True)

    def processes(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self._rpc.supervisor.getAllProcessInfo()}

    def shutdown(self, timeout_s: float) -> None:
        """Stops every process (each gets its stop signal and time), then supervisord itself."""
        pid = self.pid()
        if pid is None:
            return
        self._rpc.supervisor.shutdown()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.1)
        raise RuntimeError(f"supervisord (PID {pid}) did not stop within {timeout_s:.0f} s")


# The parts inherit supervisord's limit of open files: Envoy's 15,000 client connections (and
# Kafka's segments) need more than the usual 1,024.
OPEN_FILES = 65_536


def _raise_open_files_limit() -> None:
    """Raises this process's limit of open files towards OPEN_FILES (the hard limit too, as root),
    for supervisord and the parts to inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < OPEN_FILES and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):  # past the kernel's fs.nr_open: as it is
            resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
            return
    if soft < OPEN_FILES:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(OPEN_FILES, hard), hard))


def running() -> list[StackSettings]:
    """The settings of each topology whose stack runs (one at most, unless started by hand)."""
    return [s for s in (load(t) for t in TOPOLOGIES) if Supervisor(s).pid() is not None]


def in_use() -> StackSettings:
    """The stack the tools (make token, device-cert, device-credentials) work with: METRICS_TOPOLOGY's
    when it is set, else the topology that runs (make run-cluster's too), else the single node's."""
    if "METRICS_TOPOLOGY" in os.environ:
        return load()
    runs = running()
    return runs[0] if len(runs) == 1 else load()
