"""Processes seen from /proc: CPU time and resident memory, of one process or of its whole tree."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    return _megabytes(f"/proc/{pid}/status", "VmRSS:")


def pss_mb(pid: int) -> float:
    """Proportional set size: resident memory with each shared page divided among its sharers."""
    return _megabytes(f"/proc/{pid}/smaps_rollup", "Pss:")


@contextmanager
def peak_rss_growth_mb(every_s: float = 0.01) -> Iterator[list[float]]:
    """This process's resident memory at its highest inside the block, less what it was before, as
    the list's one item once the block is done (sampled by a thread every `every_s`)."""
    before = rss_mb(os.getpid())
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every_s):
            peak[0] = max(peak[0], rss_mb(os.getpid()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    growth = [0.0]
    try:
        yield growth
    finally:
        done.set()
        watcher.join()
        growth[0] = max(peak[0], rss_mb(os.getpid())) - before


def _megabytes(path: str, name: str) -> float:
    """A line `name  <n> kB` of a /proc file, in MB (0 when absent)."""
    with open(path) as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1]) / 1024
    return 0.0


def tree(root: int) -> list[int]:
    """A process and its live descendants (PostgreSQL's backends, the receiver's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and its live descendants."""
    return sum(_or_zero(cpu_seconds, pid) for pid in tree(root))


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and its live descendants, added up: a page they share (the
    interpreter, libraries, what a forked worker still shares with its parent) counts once each."""
    return sum(_or_zero(rss_mb, pid) for pid in tree(root))


def tree_pss_mb(root: int) -> float:
    """Memory of a process and its live descendants, each shared page counted once over them all
    (PostgreSQL's shared buffers, which every backend maps)."""
    return sum(_or_zero(pss_mb, pid) for pid in tree(root))


def tree_pss_and_shared_mb(root: int) -> tuple[float, float]:
    """tree_pss_mb, and the part of it in shared memory segments (PostgreSQL's shared buffers),
    from one read of each process's smaps_rollup."""
    total = shared = 0.0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
                    elif line.startswith("Pss_Shmem:"):
                        shared += int(line.split()[1]) / 1024
        except OSError:  # gone meanwhile
            continue
    return total, shared


def _or_zero(measure: Callable[[int], float], pid: int) -> float:
    try:
        return measure(pid)
    except OSError:  # gone meanwhile
        return 0.0
