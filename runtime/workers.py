"""Several processes of one service on one port: Python's per-call work then uses every core.

The parent starts `count` copies of the service (`python -m <service>` with WORKER_ENV set) and
supervises them; each binds the service's port with SO_REUSEPORT, and the kernel spreads incoming
connections over them. The parent forwards SIGTERM/SIGINT and SIGUSR1 (drain) and waits for its
workers to drain; a worker that dies is started again. Workers die with the parent
(PR_SET_PDEATHSIG), so a parent killed with -9 leaves no worker behind holding the port.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from runtime import telemetry

log = logging.getLogger(__name__)

# Set in a worker's environment: its index, from 0. A process without it is the parent (or alone).
WORKER_ENV = "METRICS_WORKER_INDEX"
PARENT_ENV = "METRICS_WORKER_PARENT"
COUNT_ENV = "METRICS_WORKER_COUNT"
PR_SET_PDEATHSIG = 1
# A worker that keeps dying is started again at most this often.
RESTART_DELAY_S = 1.0


def worker_index() -> int | None:
    """This process's index among its service's workers, or None when it is not a worker."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None else None


def worker_count() -> int:
    """How many workers this one's parent runs (1 for a process that is not a worker)."""
    return int(os.environ.get(COUNT_ENV, "1"))


def default_count() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0))


def die_with_parent() -> None:
    """Called first in a worker: the kernel kills it when the parent goes (even by kill -9)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(os.environ.get(PARENT_ENV, "0")):
        sys.exit("the parent of this worker is gone")  # it died before prctl took effect


def supervise(service: str, count: int, grace_s: float, metrics: tuple[str, int] = ("", 0)) -> None:
    """Runs `count` workers of `service` until SIGTERM or SIGINT, then stops them within `grace_s`.
    `metrics`: the host and port to serve the workers' Prometheus metrics on, summed (0: none)."""
    with telemetry.shared_by_workers(*metrics) as forget:
        _supervise(service, count, grace_s, forget)


def _supervise(service: str, count: int, grace_s: float, forget: Callable[[int], None]) -> None:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def start(index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, WORKER_ENV: str(index), COUNT_ENV: str(count), PARENT_ENV: str(os.getpid())}
        return subprocess.Popen([sys.executable, "-m", service], env=env)  # noqa: S603 - our own module

    def drain(signum: int, _frame: object) -> None:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, drain)  # runtime.grpc_server: every worker drains
    workers = {index: start(index) for index in range(count)}
    log.info("started %d workers: PIDs %s", count, ", ".join(str(p.pid) for p in workers.values()))
    while not stopping:
        time.sleep(0.2)
        for index, proc in list(workers.items()):
            if proc.poll() is not None and not stopping:
                log.error(
                    "worker %d (PID %d) exited with %s; starting it again", index, proc.pid, proc.returncode
                )
                forget(proc.pid)
                time.sleep(RESTART_DELAY_S)
                workers[index] = start(index)
    deadline = time.monotonic() + grace_s
    for proc in workers.values():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker PID %d did not stop within %.0f s; killing it", proc.pid, grace_s)
            proc.kill()
            proc.wait()
    log.info("workers stopped")
