"""Prometheus metrics of a service: served over HTTP on its metrics port (0 = none).

Each part defines its series next to its code (gRPC calls: runtime/grpc_metrics.py). Processes
sharing a port (the receiver's workers, runtime/workers.py) write their values to files in a folder
their parent makes (prometheus_client's multiprocess mode); the parent serves the sum.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

log = logging.getLogger(__name__)

# A `_created` series per counter and histogram doubles what each scrape carries, for nothing the
# rules here use.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds, from half a millisecond (a reading acknowledged by Kafka) to ten seconds (a slow query).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def serve(host: str, port: int) -> None:
    """Serves this process's metrics on host:port (a thread of its own); port 0 serves none, nor
    does a worker (its parent serves the values of all: `shared_by_workers`)."""
    if port == 0 or in_worker():
        return
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise OSError(f"metrics port {host}:{port}: {exc.strerror or exc}") from exc
    log.info("metrics on http://%s:%d/metrics", host, port)


@contextlib.contextmanager
def shared_by_workers(host: str, port: int) -> Iterator[Callable[[int], None]]:
    """In the parent of workers: a folder their values go to (set in the environment they inherit),
    served summed on host:port while the block runs, removed after it. Yields `forget(pid)`, to
    call when a worker is gone: its live gauges no longer count (its counters still do)."""
    if port == 0:
        yield lambda pid: None
        return
    folder = tempfile.mkdtemp(prefix="metrics-workers-")
    os.environ[MULTIPROCESS_ENV] = folder
    try:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        try:
            start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(f"metrics port {host}:{port}: {exc.strerror or exc}") from exc
        log.info("metrics of the workers on http://%s:%d/metrics", host, port)
        yield lambda pid: multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def in_worker() -> bool:
    """True in a process whose values its parent serves."""
    return bool(os.environ.get(MULTIPROCESS_ENV))
