"""Logging for the services: one line per record, with the service name, to stderr."""

from __future__ import annotations

import logging
import sys
import time


def setup_logging(service: str, level: str) -> None:
    """Configures the root logger once, at start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every failed attempt during an outage, thousands a second; our own code reports
    # outages once. Its records still come through, each kind at most once every 10 s.
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(max(logging.WARNING, root.level))
    kafka.addFilter(OncePer(10.0))


class OncePer(logging.Filter):
    """Lets a record through unless one with the same message template passed in the last `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds
        self._last: dict[tuple[str, object], float] = {}
        self._dropped: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self._seconds) < self._seconds:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} (and {dropped} more like it in the last {self._seconds:.0f} s)"
        return True
