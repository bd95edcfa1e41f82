"""Failpoints: named places where a process can be told to die at once, as `kill -9` would kill it.

Crash tests arm them (the `failpoints` setting of a service) to stop a process between two steps
whose order matters, then check that nothing was lost or doubled. Unarmed, a failpoint costs a set
lookup.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Failpoints:
    def __init__(self, armed: Iterable[str] = ()) -> None:
        self._armed = frozenset(armed)

    def __call__(self, name: str) -> None:
        if name in self._armed:
            log.warning("failpoint %s armed: dying now", name)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
