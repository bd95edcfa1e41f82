"""Logging for the services: one line per record, with the service name, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(service: str, level: str) -> None:
    """Configures the root logger once, at start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR; our retry loops report outages once.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
