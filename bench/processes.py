"""The stack's service processes, seen from outside: PIDs, CPU time and resident memory from /proc."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from stack import settings as stack_settings
from stack.procfs import tree_cpu_seconds
from stack.settings import SERVICES
from stack.supervisor import Supervisor


def pids(kinds: Sequence[str] = SERVICES) -> dict[str, int]:
    """The PIDs of the parts of `kinds` (by default the services) by part name (receiver; receiver-1
    and receiver-2 in the cluster topology)."""
    with Supervisor(stack_settings.load()) as supervisor:
        info = supervisor.processes()
    return {
        name: int(p["pid"])
        for name, p in info.items()
        if (name in kinds or name.rsplit("-", 1)[0] in kinds) and p["pid"]
    }


@contextmanager
def stopped(*names: str) -> Iterator[None]:
    """Stops some of the stack's processes for a measurement, and starts them again after it."""
    with Supervisor(stack_settings.load()) as supervisor:
        for name in names:
            supervisor.stop_process(name)
        try:
            yield
        finally:
            for name in names:
                supervisor.start_process(name)


def all_parts_cpu() -> dict[str, float]:
    """CPU seconds so far of every part of the stack, by part."""
    with Supervisor(stack_settings.load()) as supervisor:
        info = supervisor.processes()
    return {name: tree_cpu_seconds(int(p["pid"])) for name, p in info.items() if p["pid"]}
