"""A day of load, or an hour: `make soak ARGS="--hours 1"`.

Mixed load on the local stack at a share of its measured capacity (`--share`, of `--capacity`
readings/s, by default `make bench`'s last e2e_readings_per_s): large batches over gRPC streams,
devices on SyncMetrics streams (fleet-load), queries of statistics and readings, a rule changed every
10 s and a webhook subscribed to its alarms. Every `--interval` seconds it samples each part's
memory (proportional set size: a shared page counted once) and open files, the consumer groups'
lag and PostgreSQL's live and dead rows. The verdict says whether anything was lost (every
acknowledged reading stored once) or grew: a part grew when its least in the last window under load
(10 minutes, or a third of a shorter run) is above its most in the first window after the warm-up,
by the bounds below. Least against most, since periodic work (compaction's hourly packing, say)
lifts some samples and not others: what a leak or a backlog raises is the floor. The soak's data is
removed at the end, as the benchmark's is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import devices, measure
from bench.measure import Env
from simulator.load import Plan, run
from stack import access, consumers, credentials, procfs
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from testkit.http import http
from testkit.webhooks import webhook

RESULTS = Path(__file__).parent / "results"  # as make bench's
# Memory, open files or database connections that grew more than this share, and this much, past
# the warm-up: a leak. PostgreSQL's open files are not held to it: they are its cache of data files
# (up to max_files_per_process a process), which grows with the data; its connections are.
GROWTH_SHARE, GROWTH_MB, GROWTH_FILES = 0.2, 20.0, 20
# Lag that grew past twice its size after the warm-up, and past this many records: falling behind.
LAG_RECORDS = 1_000
# Dead rows beyond this share of a table's rows at the end: autovacuum is behind.
DEAD_SHARE = 0.2
WINDOW_S = 600.0


@dataclass
class Sample:
    at_s: float
    # Each part's processes: their own memory (proportional set size but shared memory segments),
    # and those segments (PostgreSQL's shared buffers: a cache of a configured size, which fills
    # as it is used, so not held to the growth bound).
    memory_mb: dict[str, float]
    shared_mb: dict[str, float]
    open_files: dict[str, int]
    connections: int  # PostgreSQL's client sessions
    lag: dict[str, int]
    live_rows: int
    dead_rows: int
    database_mb: float


@dataclass
class Counts:
    batches_acked: int = 0
    batch_errors: dict[str, int] = field(default_factory=dict)
    devices_acked: int = 0
    queries: int = 0
    query_errors: int = 0
    slowest_query_ms: float = 0.0
    rule_changes: int = 0
    webhooks: int = 0
    samples: list[Sample] = field(default_factory=list)


async def sample(env: Env, began: float) -> Sample:
    with Supervisor(env.stack) as supervisor:
        parts = {name: int(p["pid"]) for name, p in supervisor.processes().items() if p["pid"]}
    pss = {name: procfs.tree_pss_and_shared_mb(pid) for name, pid in parts.items()}
    memory = {name: round(total - shared, 1) for name, (total, shared) in pss.items()}
    shared_mb = {name: round(shared, 1) for name, (_, shared) in pss.items() if shared >= 1}
    files = {name: sum(_open_files(p) for p in procfs.tree(pid)) for name, pid in parts.items()}
    lags = await consumers.lags(access.kafka(env.stack), consumers.GROUPS)
    conn = await access.postgres(env.stack, credentials.POSTGRES_READER)
    try:
        live, dead = await conn.fetchrow(
            "SELECT coalesce(sum(n_live_tup), 0)::bigint, coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables"
        )
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        # Sessions of a user in a database: the clients' (a role without pg_read_all_stats sees
        # other users' sessions, but not their backend_type).
        connections = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename IS NOT NULL AND datname IS NOT NULL"
        )
    finally:
        await conn.close()
    return Sample(
        round(time.monotonic() - began, 1), memory, shared_mb, files, connections,
        {f"{g}/{t}": n for (g, t), n in lags.items()}, live, dead, round(size / 2**20, 1),
    )  # fmt: skip


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


async def soak(env: Env, seconds: float, rate: float, interval_s: float, warmup_s: float) -> dict[str, Any]:
    """Runs the mixed load for `seconds` at `rate` readings/s in all; returns the report."""
    counts = Counts()
    base = f"http://{env.envoy}"
    began = time.monotonic()
    batch_rate, device_rate = rate * 0.9, rate * 0.1
    batches = env.fleet(500, above=0.01, arrival_times=True)
    device_fleet = devices.Fleet(env.envoy, env.prefix, env.say)
    status, rule = await http("POST", f"{base}/v1/rules", {
        # 11 of the 500 sensors (ids starting with 11): an alarm whenever one reads 95 or more.
        "metricType": "temperature", "sensorIdPrefix": f"{batches.prefix}11", "threshold": 95, "count": 1,
        "severity": "SEVERITY_MINOR",
    })  # fmt: skip
    if status != 200:
        raise RuntimeError(f"the soak's rule was refused: {rule}")
    async with webhook() as hook:
        status, made = await http("POST", f"{base}/v1/subscriptions", {
            "url": hook.url("/soak"), "secret": "soak-" + "s" * 27, "sensorIdPrefix": f"{batches.prefix}11",
            "kinds": ["EVENT_KIND_THRESHOLD_EXCEEDED"],
        })  # fmt: skip
        if status != 200:
            raise RuntimeError(f"the soak's subscription was refused: {made}")

        async def load_batches() -> None:
            # SyncMetrics: each batch acknowledged on its own, so that what is stored can be
            # compared with what was acknowledged (a client stream that fails says nothing of the
            # batches it wrote before).
            plan = Plan(
                batches, path="sync", rate=batch_rate, duration_s=seconds, batch=500, target=env.envoy
            )
            result = await run(plan)
            counts.batches_acked, counts.batch_errors = result.acked, dict(result.errors)

        async def load_devices() -> None:
            streams = 500
            load = await device_fleet.run(
                "devices", "sync", seconds, streams=streams, rate=device_rate, window=1, warmup="5s"
            )
            counts.devices_acked = load.acked

        async def query() -> None:
            while True:
                now = time.time()
                window = f"startTime={_rfc3339(now - 3600)}&endTime={_rfc3339(now)}"
                for path in (f"/v1/sensors/{batches.ids[0]}/stats?metricType=temperature&{window}",
                             f"/v1/sensors/{env.prefix}devices-0/readings?pageSize=100&{window}"):  # fmt: skip
                    started = time.monotonic()
                    with contextlib.suppress(OSError):
                        status, _ = await http("GET", base + path)
                        counts.query_errors += status != 200
                    counts.queries += 1
                    counts.slowest_query_ms = max(
                        counts.slowest_query_ms, (time.monotonic() - started) * 1000
                    )
                await asyncio.sleep(0.5)

        async def change_rule() -> None:
            while True:
                await asyncio.sleep(10)
                threshold = 96 if counts.rule_changes % 2 == 0 else 95
                await http("PATCH", f"{base}/v1/rules/{rule['ruleId']}", {"threshold": threshold})
                counts.rule_changes += 1

        async def watch() -> None:
            while True:
                counts.samples.append(await sample(env, began))
                last = counts.samples[-1]
                env.say(
                    f"{last.at_s / 60:5.1f} min: memory {sum(last.memory_mb.values()):,.0f} MB, open files "
                    f"{sum(last.open_files.values()):,}, lag {sum(last.lag.values()):,}, dead rows "
                    f"{last.dead_rows:,}, database {last.database_mb:,.0f} MB, queries {counts.queries:,} "
                    f"({counts.query_errors} failed), webhooks {len(hook.on('/soak'))}"
                )
                await asyncio.sleep(interval_s)

        side = [asyncio.create_task(t()) for t in (query, change_rule, watch)]
        try:
            await asyncio.gather(load_batches(), load_devices())
        finally:
            for task in side:
                task.cancel()
            await http("DELETE", f"{base}/v1/subscriptions/{made['subscription']['subscriptionId']}")
            await http("DELETE", f"{base}/v1/rules/{rule['ruleId']}")
        counts.webhooks = len(hook.on("/soak"))
    await measure.wait_drained(env)
    end = await sample(env, began)
    stored = await measure.stored(env, env.prefix)
    env.say(
        f"batches: {counts.batches_acked:,} acknowledged, {await measure.stored(env, batches.prefix):,} stored; "
        f"devices: {counts.devices_acked:,} acknowledged, {await measure.stored(env, env.prefix + 'devices-'):,} stored"
    )
    return report(counts, *windows(counts.samples, warmup_s), end, stored, seconds, rate)


def windows(samples: list[Sample], warmup_s: float) -> tuple[list[Sample], list[Sample]]:
    """The samples of the first window after the warm-up and of the last under load (see the
    module's docstring)."""
    after = [x for x in samples if x.at_s >= warmup_s] or samples[-1:]
    width = min(WINDOW_S, (after[-1].at_s - after[0].at_s) / 3)
    return (
        [x for x in after if x.at_s <= after[0].at_s + width],
        [x for x in after if x.at_s >= after[-1].at_s - width],
    )


def _grew(
    early: list[dict[str, float]], late: list[dict[str, float]], share: float, more: float
) -> dict[str, tuple[float, float]]:
    """Per name: (most early, least late), for those whose least late is above their most early
    times 1 + `share`, plus `more`."""
    found = {}
    for name in late[-1]:
        if all(name in x for x in early + late):
            most, least = max(x[name] for x in early), min(x[name] for x in late)
            if least > most * (1 + share) + more:
                found[name] = (most, least)
    return found


def _files(x: Sample) -> dict[str, float]:
    """Open files of each part but PostgreSQL, and PostgreSQL's connections (see GROWTH_FILES)."""
    found: dict[str, float] = {n: v for n, v in x.open_files.items() if n != "postgres"}
    return found | {"postgres connections": x.connections}


def _lag(x: Sample) -> dict[str, float]:
    return {"all": sum(x.lag.values())}


def report(
    counts: Counts, early: list[Sample], late: list[Sample], end: Sample, stored: int, seconds: float,
    rate: float,
) -> dict[str, Any]:  # fmt: skip
    """`early`, `late`: the windows' samples (windows()); `end`: once drained."""
    acked = counts.batches_acked + counts.devices_acked
    memory = _grew([x.memory_mb for x in early], [x.memory_mb for x in late], GROWTH_SHARE, GROWTH_MB)
    files = _grew([_files(x) for x in early], [_files(x) for x in late], GROWTH_SHARE, GROWTH_FILES)
    lag = _grew([_lag(x) for x in early], [_lag(x) for x in late], 1.0, LAG_RECORDS)
    dead_share = end.dead_rows / max(end.live_rows + end.dead_rows, 1)
    problems = []
    if stored != acked:
        problems.append(f"{acked:,} readings acknowledged, {stored:,} stored")
    problems += [f"{n} memory {a:.0f} → {b:.0f} MB" for n, (a, b) in memory.items()]
    problems += [f"{n} {'' if n.endswith('connections') else 'open files '}{a:.0f} → {b:.0f}"
                 for n, (a, b) in files.items()]  # fmt: skip
    if dead_share > DEAD_SHARE:
        problems.append(f"dead rows {dead_share:.0%} of the tables' rows at the end")
    problems += [f"fell behind: lag {a:,.0f} → {b:,.0f} records under load" for a, b in lag.values()]
    if counts.batch_errors:
        problems.append(f"batches refused: {counts.batch_errors}")
    if counts.query_errors:
        problems.append(f"{counts.query_errors} of {counts.queries} queries failed")

    def summary(window: list[Sample]) -> dict[str, Any]:
        parts = window[-1].memory_mb
        return {
            "from_s": window[0].at_s, "to_s": window[-1].at_s, "samples": len(window),
            "memory_mb": {n: (min(x.memory_mb.get(n, 0) for x in window), max(x.memory_mb.get(n, 0) for x in window))
                          for n in parts},
            "shared_mb": {n: max(x.shared_mb.get(n, 0) for x in window) for n in window[-1].shared_mb},
            "open_files": {n: (min(x.open_files.get(n, 0) for x in window), max(x.open_files.get(n, 0) for x in window))
                           for n in window[-1].open_files},
            "connections": (min(x.connections for x in window), max(x.connections for x in window)),
            "lag": (min(sum(x.lag.values()) for x in window), max(sum(x.lag.values()) for x in window)),
        }  # fmt: skip

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds, "rate": rate, "acknowledged": acked, "stored": stored,
        "batch_errors": counts.batch_errors,
        "queries": counts.queries, "query_errors": counts.query_errors,
        "slowest_query_ms": round(counts.slowest_query_ms, 1), "rule_changes": counts.rule_changes,
        "webhooks": counts.webhooks, "early": summary(early), "late": summary(late), "end": asdict(end),
        "timeline": [
            {"at_s": x.at_s, "memory_mb": {n: round(v) for n, v in x.memory_mb.items()},
             "open_files": sum(x.open_files.values()), "lag": sum(x.lag.values()), "dead_rows": x.dead_rows,
             "database_mb": x.database_mb}
            for x in counts.samples
        ],
        "verdict": "pass" if not problems else "fail", "problems": problems,
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    early, late, end = result["early"], result["late"], result["end"]
    lines = [
        f"windows: after the warm-up {early['from_s'] / 60:.0f}-{early['to_s'] / 60:.0f} min "
        f"({early['samples']} samples), last under load {late['from_s'] / 60:.0f}-{late['to_s'] / 60:.0f} min "
        f"({late['samples']}); least-most of each",
        f"{'part':<16} {'memory MB first':>16} {'last':>12} {'open files first':>17} {'last':>12}",
    ]

    def span(pair: list[float]) -> str:
        return f"{pair[0]:.0f}-{pair[1]:.0f}"

    for name in sorted(late["memory_mb"]):
        lines.append(
            f"{name:<16} {span(early['memory_mb'].get(name, [0, 0])):>16} {span(late['memory_mb'][name]):>12} "
            f"{span(early['open_files'].get(name, [0, 0])):>17} {span(late['open_files'].get(name, [0, 0])):>12}"
        )
    for name in sorted(late["shared_mb"]):
        lines.append(
            f"{name + ' shared':<16} {early['shared_mb'].get(name, 0):>16.0f} {late['shared_mb'][name]:>12.0f}"
            "   (most; shared memory segments: not held to the growth bound)"
        )
    lines += [
        f"PostgreSQL connections {span(early['connections'])} after the warm-up, {span(late['connections'])} at "
        "the end of the load (its open files: a cache of its data files, not held to the growth bound)",
        f"lag (records) {span(early['lag'])} after the warm-up, {span(late['lag'])} at the end of the load, "
        f"{sum(end['lag'].values()):,} drained",
        f"PostgreSQL at the end: live rows {end['live_rows']:,}, dead rows {end['dead_rows']:,}, database "
        f"{end['database_mb']:,.0f} MB",
        f"readings acknowledged {result['acknowledged']:,}, stored {result['stored']:,}; queries "
        f"{result['queries']:,} ({result['query_errors']} failed, slowest {result['slowest_query_ms']:.0f} ms); "
        f"rule changes {result['rule_changes']}; webhooks {result['webhooks']:,}",
        f"verdict: {result['verdict']}" + "".join(f"\n  - {p}" for p in result["problems"]),
    ]  # fmt: skip
    return "\n".join(lines)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _capacity() -> float:
    """The last benchmark's end-to-end figure, or a conservative one for this machine class."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        results = json.loads((RESULTS / "latest.json").read_text())
        return float(results.get("results", results)["e2e_readings_per_s"])
    return 60_000.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--share", type=float, default=0.5, help="of the capacity (default 0.5)")
    parser.add_argument("--capacity", type=float, default=0.0, help="readings/s (default: the last bench's)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    capacity = args.capacity or _capacity()
    rate = capacity * args.share
    seconds = args.hours * 3600
    warmup = min(600.0, seconds / 10)
    stack = stack_settings.load()
    # Quiet load: the samples are the soak's progress.
    env = Env(stack, f"127.0.0.1:{stack.envoy_port}", measure_say, lambda result, elapsed: None)
    measure_say(f"soak: {rate:,.0f} readings/s ({args.share:.0%} of {capacity:,.0f}) for {args.hours:g} h; "
                f"warm-up {warmup / 60:.0f} min")  # fmt: skip

    async def whole() -> dict[str, Any]:
        try:
            return await soak(env, seconds, rate, args.interval, warmup)
        finally:
            await measure.wait_drained(env)
            await measure.remove_data(env)

    result = asyncio.run(whole())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak-latest.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0 if result["verdict"] == "pass" else 1


def measure_say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
