"""python -m bench [--short]: the benchmark suite against the local stack (make run).

Prints a table and writes bench/results/latest.json. Figures are measured, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import devices, ecosystem, measure, mqtt, peers, processes, registry, topology
from bench.measure import Env, median, percentile
from runtime import cli
from simulator.__main__ import progress as print_progress
from stack import certs, procfs, tokens
from stack import settings as stack_settings
from stack.settings import SERVICES
from stack.supervisor import Supervisor

RESULTS = Path(__file__).parent / "results"
TARGETS = {
    "e2e_readings_per_s": (">=", 100_000),
    "e2e_longest_wait_s": ("<=", 5.0),
    "receiver_vs_raw_produce": (">=", 0.8),
    "saver_vs_raw_copy": (">=", 0.7),
    "alert_latency_p99_ms": ("<=", 50),
    "alarm_event_latency_p99_ms": ("<=", 50),
    "stats_query_p99_ms": ("<=", 20),
    "storage_bytes_per_reading_hot": ("<=", 80),
    "storage_bytes_per_reading_compressed": ("<=", 8),
    "compaction_cpu_us_per_reading": ("<=", 3),
    "compaction_memory_mb": ("<=", 64),
    "list_readings_day_vs_raw": ("<=", 1.0),
    "http_json_readings_per_s": (">=", 20_000),
    "max_service_rss_mb": ("<=", 200),
    "fleet_unary_calls_per_s": (">=", 4_000),
    "fleet_unary_vs_noop": (">=", 1.0),
    "tls_token_vs_plain": (">=", 0.8),
    "fleet_http_calls_per_s": (">=", 3_500),
    "fleet_legacy_calls_per_s": (">=", 3_000),
    "fleet_sync_readings_per_s": (">=", 15_000),
    "fleet_sync_vs_noop": (">=", 1.0),
    "fleet_streams_held": (">=", 10_000),
    "fleet_stream_ack_p99_ms": ("<=", 200),
    "fleet_receiver_rss_mb": ("<=", 300),
    "fleet_overload_accepted_ack_p99_ms": ("<=", 1_000),
    "mqtt_qos1_readings_per_s": (">=", 20_000),
    "mqtt_devices_held": (">=", 10_000),
    "mqtt_puback_p99_ms": ("<=", 50),
    "mqtt_broker_bridge_rss_mb": ("<=", 150),
    "mqtt_cpu_us_per_reading": ("<=", 100),
    "revocation_check_us_per_call": ("<=", 5),
    "device_silence_alarm_p99_ms": ("<=", 2_000),
    "group_aggregate_p99_ms": ("<=", 100),
    "line_protocol_readings_per_s": (">=", 100_000),
    "remote_write_samples_per_s": (">=", 100_000),
    "promql_range_query_p99_ms": ("<=", 200),
}


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


async def suite_then_clean_up(short: bool, keep_data: bool) -> dict[str, Any]:
    stack = stack_settings.load()
    env = Env(stack, f"127.0.0.1:{stack.envoy_port}", say, print_progress)
    try:
        return await suite(env, short)
    finally:
        if not keep_data:
            await measure.wait_drained(env)
            await measure.remove_data(env)


async def suite(env: Env, short: bool) -> dict[str, Any]:
    seconds = 5.0 if short else 15.0
    results: dict[str, Any] = {}
    rss: dict[str, float] = {}

    def sample_rss() -> None:
        for name, pid in processes.pids().items():
            rss[name] = max(rss.get(name, 0.0), procfs.tree_rss_mb(pid))

    # First, on a quiet stack: later phases leave PostgreSQL busy (autovacuum) for a while.
    days = 30
    await measure.ensure_history(env, days)
    say(f"statistics through Envoy for a sensor with {days} days of 1 Hz data")
    times = await measure.stats_queries(env, days, 20 if short else 100)
    for kind, values in times.items():
        say(f"  {kind}: p50 {median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} ms")
    dashboard = times["whole range, hourly buckets"]
    results["stats_query_p50_ms"] = median(dashboard)
    results["stats_query_p99_ms"] = percentile(dashboard, 0.99)
    results["stats_query_plain_p99_ms"] = percentile(times["whole range"], 0.99)
    first, group = await measure.group_queries(env, 10_000, 20 if short else 100)
    say(
        f"a group of 10,000 sensors over a day: {first:.0f} ms the first time, then p50 {median(group):.1f} ms, "
        f"p99 {percentile(group, 0.99):.1f} ms"
    )
    results["group_aggregate_first_ms"] = first
    results["group_aggregate_p50_ms"] = median(group)
    results["group_aggregate_p99_ms"] = percentile(group, 0.99)
    promql = await ecosystem.promql_range_queries(env, 20 if short else 100)
    results["promql_range_query_p50_ms"] = median(promql)
    results["promql_range_query_p99_ms"] = percentile(promql, 0.99)
    say(f"PromQL through Prometheus's remote read, a day at 1 Hz in 5-minute steps: p50 {median(promql):.0f} ms, "
        f"p99 {results['promql_range_query_p99_ms']:.0f} ms")  # fmt: skip
    sample = 1_000 if short else 10_000
    results["storage_bytes_per_reading_hot"] = await measure.fleet_storage(env, sample, 360, fresh=True)
    say(
        f"storage: {results['storage_bytes_per_reading_hot']:.1f} bytes a reading raw (a fleet, second after second)"
    )
    day_us = await measure.store_list_day(env)
    listing = 5 if short else 20
    raw_list = await measure.list_day(env, day_us, listing)
    packed_readings, cpu_us, memory_mb = await measure.compact_stored(env)
    results["compaction_cpu_us_per_reading"], results["compaction_memory_mb"] = cpu_us, memory_mb
    results["storage_bytes_per_reading_compressed"] = await measure.fleet_storage(
        env, sample, 360, fresh=False
    )
    results["storage_bytes_per_reading_compressed_history"] = await measure.history_storage(env, days)
    packed_list = await measure.list_day(env, day_us, listing)
    results["list_readings_day_raw_p99_ms"] = percentile(raw_list, 0.99)
    results["list_readings_day_p99_ms"] = percentile(packed_list, 0.99)
    results["list_readings_day_vs_raw"] = (
        results["list_readings_day_p99_ms"] / results["list_readings_day_raw_p99_ms"]
    )
    say(
        f"compaction: {packed_readings:,} readings at {results['compaction_cpu_us_per_reading']:.2f} µs of CPU "
        f"each, {results['compaction_memory_mb']:.0f} MB at most; {results['storage_bytes_per_reading_compressed']:.2f} bytes a reading packed (fleet-shaped), "
        f"{results['storage_bytes_per_reading_compressed_history']:.2f} (history); a day listed in "
        f"{results['list_readings_day_p99_ms']:.0f} ms p99 packed, {results['list_readings_day_raw_p99_ms']:.0f} raw"
    )
    await measure.wait_drained(env)
    say("receiver alone, and the raw ceilings (processor and saver stopped)")
    with Supervisor(env.stack) as supervisor:
        for name in ("processor", "saver"):
            supervisor.stop_process(name)
        try:
            fleet = env.fleet(500, above=0.01, arrival_times=True)
            raw = await measure.raw_produce(env, env.fleet(500, above=0.01), measure.BATCH, seconds)
            say(f"raw produce: {raw:,.0f} readings/s")
            ingest = await measure.receiver_ingest(env, fleet, measure.BATCH, seconds)
            sample_rss()
            say(
                f"receiver: {ingest.acked / ingest.elapsed_s:,.0f} readings/s, errors {dict(ingest.errors) or 'none'}"
            )
            accepted = ingest.acked / ingest.elapsed_s
            results["receiver_readings_per_s"] = accepted
            results["raw_produce_readings_per_s"] = raw
            results["receiver_vs_raw_produce"] = accepted / raw
            copy = await measure.raw_copy(env, env.fleet(1000), min(ingest.acked, 500_000), 50_000)
            say(f"raw COPY: {copy:,.0f} rows/s")
            supervisor.start_process("saver")
            saver, saver_cpu = await measure.saver_drain(env, measure.BATCH)
            sample_rss()
            say(f"saver: {saver:,.0f} rows/s ({saver_cpu:.1f} CPU s per million)")
            results |= {
                "raw_copy_rows_per_s": copy,
                "saver_rows_per_s": saver,
                "saver_vs_raw_copy": saver / copy,
            }
        finally:
            for name in ("processor", "saver"):
                supervisor.start_process(name)
    await measure.wait_drained(env)

    e2e_seconds = 20.0 if short else 60.0
    say(f"end to end: as fast as accepted for {e2e_seconds:.0f} s, until every reading is stored")
    cpu_before = processes.all_parts_cpu()
    bench_before = procfs.cpu_seconds(os.getpid())
    sampler = asyncio.create_task(_every(1.0, sample_rss))
    e2e = await measure.end_to_end(env, e2e_seconds)
    sampler.cancel()
    cpu_parts = {
        name: seconds - cpu_before.get(name, 0.0) for name, seconds in processes.all_parts_cpu().items()
    }
    cpu_parts["load generator"] = procfs.cpu_seconds(os.getpid()) - bench_before
    cpu = sum(cpu_parts[name] for name in SERVICES)
    stored = e2e.stored
    results["e2e_readings_per_s"] = e2e.readings_per_s
    results["e2e_acknowledged"] = e2e.acked
    results["e2e_stored"] = stored
    results["e2e_longest_wait_s"] = e2e.longest_wait_s
    say(f"  {e2e.readings_per_s:,.0f} readings/s, the longest wait for an answer {e2e.longest_wait_s:.1f} s")
    results["cpu_seconds_per_million"] = cpu / max(stored, 1) * 1e6
    per_million = {name: seconds / max(stored, 1) * 1e6 for name, seconds in cpu_parts.items()}
    results["cpu_seconds_per_million_by_part"] = per_million
    say("CPU s per million readings: " + ", ".join(f"{n} {s:.1f}" for n, s in per_million.items()))

    say("alert latency at a steady 10,000 readings/s")
    latencies = await measure.alert_latency(env, 10_000, 10.0 if short else 30.0)
    results["alert_latency_p50_ms"] = median(latencies)
    results["alert_latency_p99_ms"] = percentile(latencies, 0.99) if latencies else None
    results["alert_probes"] = len(latencies)

    say("alarm latency of a rule made at run time, changed every 200 ms, at a steady 10,000 readings/s")
    alarm = await measure.alarm_latency(env, 10_000, 10.0 if short else 30.0)
    for name, values in alarm.items():
        results[f"alarm_{name}_latency_p50_ms"] = median(values) if values else None
        results[f"alarm_{name}_latency_p99_ms"] = percentile(values, 0.99) if values else None
    results["alarm_probes"] = len(alarm["event"])

    say("the revocation check of a device's credential, among 10,000 registered devices")
    results["revocation_check_us_per_call"] = await registry.revocation_check_us()
    silent = 1_000 if short else 10_000
    say(f"silence alarms of {silent:,} devices silent for {registry.SILENCE_S} s")
    silence = await registry.silence_alarm_latency(env, silent)
    results["device_silence_alarm_p50_ms"] = median(silence) if silence else None
    results["device_silence_alarm_p99_ms"] = percentile(silence, 0.99) if silence else None
    results["device_silence_alarms"] = len(silence)

    say("HTTP/JSON ingest through Envoy")
    http = await measure.receiver_ingest(env, env.fleet(1000), 100, seconds, path="http")
    results["http_json_readings_per_s"] = http.acked / http.elapsed_s
    sample_rss()
    await measure.wait_drained(env)
    say("InfluxDB line protocol through Envoy, batches of 5,000 lines, until stored")
    results["line_protocol_readings_per_s"] = await ecosystem.line_protocol(env, seconds)
    say(f"  {results['line_protocol_readings_per_s']:,.0f} readings/s")
    say("the same batches to InfluxDB 1.6 on this machine (storage only: a peer's figure)")
    results["influxdb_line_protocol_lines_per_s"] = await peers.influxdb_line_protocol(env, seconds)
    say("Prometheus remote write through Envoy, requests of 2,000 samples, until stored")
    results["remote_write_samples_per_s"] = await ecosystem.remote_write(env, seconds)
    say(f"  {results['remote_write_samples_per_s']:,.0f} samples/s")
    sample_rss()

    # Last, and not in max_service_rss_mb: thousands of device streams leave the receivers larger
    # (fleet_receiver_rss_mb says how much), and Python keeps that memory for later.
    key, kid = tokens.signing_key(env.stack)
    bench_token = tokens.mint(key, kid, scopes=["ingest"], sensors=[env.prefix], ttl_s=3600, tier="gateway",
                              subject="bench")  # fmt: skip
    ca = certs.paths(env.stack).ca
    assert ca is not None
    door = devices.TlsDoor(f"127.0.0.1:{env.stack.envoy_tls_port}", ca, bench_token)
    fleet_results, fleet_loads = await devices.suite(
        env.envoy, door, env.prefix, say, short, lambda: measure.wait_drained(env)
    )
    results |= fleet_results
    results |= await mqtt.suite(env, fleet_loads, short)

    await measure.wait_drained(env)
    results |= await _fleet_stored(env, fleet_loads)
    results["max_service_rss_mb"] = max(rss.values())
    results["service_rss_mb"] = rss
    if short:
        say("the cluster topology's figures: make bench (not --short) measures them")
    else:
        results |= await topology.figures(env, results, seconds, e2e_seconds)
    return results


async def _every(interval: float, action: Any) -> None:
    while True:
        action()
        await asyncio.sleep(interval)


async def _fleet_stored(env: Env, loads: devices.Fleet) -> dict[str, Any]:
    """Acknowledged against stored readings of each fleet workload that reached the stack."""
    acked = stored = 0
    for name, load in loads.loads.items():
        if name.startswith("noop-"):
            continue
        rows = await measure.stored(env, f"{loads.prefix}{name}-")
        if rows != load.acked:
            # More rows than acknowledgements can be honest (a refused or abandoned call may still
            # have been written); fewer never is.
            say(f"note: fleet workload {name}: {load.acked:,} readings acknowledged, {rows:,} stored")
        acked += load.acked
        stored += rows
    say(f"fleet: {acked:,} readings acknowledged, {stored:,} stored")
    return {"fleet_acknowledged": acked, "fleet_stored": stored}


def table(results: dict[str, Any]) -> str:
    lines = [f"{'figure':<28} {'value':>14} {'target':>12}  ", "-" * 60]
    for key, value in results.items():
        if not isinstance(value, int | float):
            continue
        target = TARGETS.get(key)
        mark = ""
        if target:
            op, bound = target
            met = value >= bound if op == ">=" else value <= bound
            mark = "met" if met else "short"
        shown = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        lines.append(f"{key:<28} {shown:>14} {(f'{target[0]} {target[1]:,}' if target else ''):>12}  {mark}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--short", action="store_true", help="a quick run (about 2 minutes) for checks")
    parser.add_argument(
        "--keep-data", action="store_true", help="leave the readings and events of the run in the stack"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    started = time.monotonic()
    results = asyncio.run(suite_then_clean_up(args.short, args.keep_data))
    results["mode"] = "short" if args.short else "full"
    results["seconds"] = time.monotonic() - started
    results["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}
    print(table(results))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {RESULTS / 'latest.json'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    cli.run(main)
