"""The cluster topology's figures next to the single node's, in the same run (`make bench`): end to
end, one reading per message, and what replication costs a producer (acks=all to 3 replicas, 2 in
sync, against 1), both on the cluster's brokers so that only the replication differs.

On one machine the cluster is expected to be slower: 3 brokers, 6 Redis nodes, 2 PostgreSQL servers
and twice the services share the same cores. The ratios are the figures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import devices, measure
from bench.measure import Env
from stack import settings as stack_settings
from stack.settings import ROOT


async def figures(single: Env, results: dict[str, Any], seconds: float, e2e_seconds: float) -> dict[str, Any]:
    """Runs the cluster topology in place of the single node, measures it, and leaves the single node
    running again."""
    single.say("the cluster topology: stopping the single node, starting make run-cluster")
    _stack("down")
    try:
        with _topology("cluster"):
            _stack("up")
            env = Env(stack_settings.load(), single.envoy, single.say, single.progress, prefix=single.prefix)
            try:
                return await _measure(env, results, seconds, e2e_seconds)
            finally:
                await measure.wait_drained(env)
                await measure.remove_data(env)
                _stack("down")
    finally:
        single.say("starting the single node again")
        _stack("up")


async def _measure(env: Env, single: dict[str, Any], seconds: float, e2e_seconds: float) -> dict[str, Any]:
    say = env.say
    rf3 = await measure.raw_produce(env, env.fleet(500, above=0.01), measure.BATCH, seconds, replicas=3)
    rf1 = await measure.raw_produce(env, env.fleet(500, above=0.01), measure.BATCH, seconds, replicas=1)
    say(f"cluster: produce with acks=all to 3 replicas {rf3:,.0f} readings/s, to 1 replica {rf1:,.0f}")
    end_to_end = await measure.end_to_end(env, e2e_seconds)
    e2e = end_to_end.readings_per_s
    say(
        f"cluster: end to end {e2e:,.0f} readings/s, longest wait for an answer {end_to_end.longest_wait_s:.1f} s"
    )
    devices_fleet = devices.Fleet(env.envoy, f"{env.prefix}fleet-", say)
    unary = await devices_fleet.run("cluster-unary", "unary", seconds, concurrency=64)
    found: dict[str, Any] = {
        "cluster_produce_rf3_readings_per_s": rf3,
        "cluster_produce_rf1_readings_per_s": rf1,
        "replication_rf3_vs_rf1": rf3 / rf1,
        "cluster_e2e_readings_per_s": e2e,
        "cluster_e2e_longest_wait_s": end_to_end.longest_wait_s,
        "cluster_fleet_unary_calls_per_s": unary.result["calls_per_s"],
        "cluster_fleet_unary_p99_ms": unary.p99_ms,
    }
    if single.get("e2e_readings_per_s"):
        found["cluster_vs_single_e2e"] = e2e / single["e2e_readings_per_s"]
    if single.get("fleet_unary_calls_per_s"):
        found["cluster_vs_single_fleet_unary"] = (
            unary.result["calls_per_s"] / single["fleet_unary_calls_per_s"]
        )
    return found


@contextmanager
def _topology(name: str) -> Iterator[None]:
    """This process (the stack's settings, the benchmark's helpers) and its children use topology `name`."""
    os.environ["METRICS_TOPOLOGY"] = name
    try:
        yield
    finally:
        del os.environ["METRICS_TOPOLOGY"]


def _stack(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "stack", command], cwd=ROOT, check=False)  # noqa: S603 - ours
    if result.returncode != 0:
        raise RuntimeError(f"python -m stack {command} failed ({result.returncode}); see make logs")
