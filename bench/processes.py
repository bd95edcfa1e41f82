"""The stack's service processes, seen from outside: PIDs, CPU time and resident memory from /proc."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from stack import settings as stack_settings
from stack.parts import SERVICES
from stack.supervisor import Supervisor

TICKS = os.sysconf("SC_CLK_TCK")


def pids() -> dict[str, int]:
    with Supervisor(stack_settings.load()) as supervisor:
        info = supervisor.processes()
    return {name: int(info[name]["pid"]) for name in SERVICES if info[name]["pid"]}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def services_cpu() -> float:
    return sum(cpu_seconds(pid) for pid in pids().values())


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


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and its live descendants (PostgreSQL's backends, Kafka's threads)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
        stack.extend(children.get(pid, ()))
    return total


def all_parts_cpu() -> dict[str, float]:
    """CPU seconds so far of every part of the stack, by part."""
    with Supervisor(stack_settings.load()) as supervisor:
        info = supervisor.processes()
    return {name: tree_cpu_seconds(int(p["pid"])) for name, p in info.items() if p["pid"]}
