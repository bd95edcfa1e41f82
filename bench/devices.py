"""Fleets of devices: one reading per message, driven by the Go load generator `fleet-load`.

A Python generator would take a core of its own; `fleet-load` (clients/go/cmd/fleet-load) takes a
fraction of one. Each workload writes sensors of its own prefix, so what was acknowledged can be
compared with what was stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import processes
from stack import parts, procfs
from stack import settings as stack_settings
from stack.settings import ROOT

FLEET_LOAD = ROOT / "clients" / "go" / "bin" / "fleet-load"


@dataclass
class Load:
    """One run of fleet-load: its JSON result and the largest receiver RSS seen meanwhile."""

    result: dict[str, Any]
    receiver_rss_mb: float = 0.0
    # CPU seconds fleet-load itself spent.
    cpu_s: float = 0.0

    @property
    def acked(self) -> int:
        return int(self.result["acked_readings_total"])

    @property
    def p99_ms(self) -> float:
        return float(self.result["latency_ms"]["p99"])


@dataclass
class Fleet:
    """The workloads of one run against one target, and their sensor prefixes."""

    target: str
    prefix: str
    say: Any
    loads: dict[str, Load] = field(default_factory=dict)

    async def run(self, name: str, mode: str, seconds: float, **flags: Any) -> Load:
        """Runs fleet-load with `flags` (as --name value); its sensors are <prefix><name>-<i>."""
        args = [str(FLEET_LOAD), "--mode", mode, "--target", flags.pop("target", self.target)]
        args += ["--duration", f"{seconds}s", "--prefix", f"{self.prefix}{name}-"]
        for key, value in flags.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        load = await run_load(args)
        self.loads[name] = load
        r = load.result
        errors = ", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())) or "none"
        self.say(
            f"  {name}: {r['calls_per_s']:,.0f} calls/s, {r['readings_per_s']:,.0f} readings/s, "
            f"p50 {r['latency_ms']['p50']:.1f} ms, p99 {r['latency_ms']['p99']:.1f} ms; errors: {errors}"
        )
        return load


async def run_load(args: list[str]) -> Load:
    """Runs fleet-load, sampling the receivers' resident memory (all their processes) meanwhile."""
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    rss = 0.0
    receiver = processes.pids().get("receiver")

    async def sample() -> None:
        nonlocal rss
        while receiver is not None:
            rss = max(rss, procfs.tree_rss_mb(receiver))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out, _ = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await proc.wait()
        raise
    finally:
        sampler.cancel()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return Load(json.loads(out), rss, cpu)


class NoopReceiver:
    """bench.noop_receiver in a process of its own, on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> NoopReceiver:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.noop_receiver", str(self.port), env=env, cwd=ROOT
        )
        async with grpc.aio.insecure_channel(self.address) as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SideReceiver:
    """A receiver as the stack runs it (its workers, its settings, its Kafka login), on ports of its
    own: with Prometheus metrics (`measured`) or without (no interceptor, nothing served)."""

    def __init__(self, measured: bool) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self._measured = measured
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SideReceiver:
        stack = stack_settings.load()
        (part,) = [p for p in parts.parts(stack) if p.name == "receiver"]
        env = {
            **os.environ,
            **part.env,
            "METRICS_RECEIVER_GRPC_PORT": self.address.rpartition(":")[2],
            "METRICS_RECEIVER_METRICS_PORT": str(free_port() if self._measured else 0),
        }
        self._proc = await asyncio.create_subprocess_exec(*part.command, env=env, cwd=ROOT)
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while (
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
            ).status != (health_pb2.HealthCheckResponse.SERVING):
                await asyncio.sleep(0.1)
        return self

    def cpu_seconds(self) -> float:
        assert self._proc is not None
        return procfs.tree_cpu_seconds(self._proc.pid)

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()


async def metrics_cost(fleet: Fleet, seconds: float, rounds: int = 3) -> tuple[float, float]:
    """Receiver CPU seconds per million one-reading calls with Prometheus metrics and without, each
    straight to a receiver of its own (no Envoy), alternating in short runs."""
    cpu = {True: 0.0, False: 0.0}
    calls = {True: 0, False: 0}
    for i in range(rounds):
        for measured in (True, False):
            async with SideReceiver(measured) as receiver:
                before = receiver.cpu_seconds()
                name = f"metrics-{'on' if measured else 'off'}-{i}"
                load = await fleet.run(
                    name, "unary", seconds / rounds, concurrency=64, target=receiver.address
                )
                cpu[measured] += receiver.cpu_seconds() - before
                calls[measured] += load.acked
    on, off = (cpu[m] / max(calls[m], 1) * 1e6 for m in (True, False))
    return on, off


@dataclass(frozen=True)
class TlsDoor:
    """Envoy's TLS port, the CA to trust, and a token for the bench's sensors."""

    address: str
    ca: Path
    token: str


async def suite(
    envoy: str, tls: TlsDoor, prefix: str, say: Any, short: bool, drained: Callable[[], Awaitable[Any]]
) -> tuple[dict[str, Any], Fleet]:
    """The fleet figures; the Fleet says what each workload acknowledged, by sensor prefix.
    `drained` waits until the processor and the saver have caught up."""
    seconds = 4.0 if short else 10.0
    fleet = Fleet(envoy, f"{prefix}fleet-", say)
    results: dict[str, Any] = {}

    say("fleets of devices: one reading per message (fleet-load, Go)")
    async with NoopReceiver() as noop:
        # The noop's readings go nowhere; its sensors share the prefix only to keep names apart.
        noop_unary = await fleet.run("noop-unary", "unary", seconds, target=noop.address)
        noop_sync = await fleet.run(
            "noop-sync", "sync", seconds, target=noop.address, streams=1000, warmup="2s"
        )
    await drained()
    unary = await fleet.run("unary", "unary", seconds, concurrency=64)
    tls_calls_per_s, tls_vs_plain = await door_cost(fleet, tls, seconds)
    with_metrics, without_metrics = await metrics_cost(fleet, seconds)
    say(
        f"  receiver CPU s per million one-reading calls: {with_metrics:.1f} with Prometheus metrics, "
        f"{without_metrics:.1f} without (+{with_metrics / without_metrics - 1:.1%})"
    )
    http = await fleet.run("http", "http", seconds, concurrency=64)
    legacy = await fleet.run("legacy", "legacy", seconds, concurrency=64)
    sync = await fleet.run("sync", "sync", seconds, streams=1000, warmup="2s")
    results["fleet_noop_calls_per_s"] = noop_unary.result["calls_per_s"]
    results["fleet_noop_sync_readings_per_s"] = noop_sync.result["readings_per_s"]
    results["fleet_unary_calls_per_s"] = unary.result["calls_per_s"]
    results["fleet_unary_p99_ms"] = unary.p99_ms
    results["fleet_unary_vs_noop"] = unary.result["calls_per_s"] / noop_unary.result["calls_per_s"]
    results["fleet_tls_unary_calls_per_s"] = tls_calls_per_s
    results["tls_token_vs_plain"] = tls_vs_plain
    results["cpu_per_m_calls_metrics_on"] = with_metrics
    results["cpu_per_m_calls_metrics_off"] = without_metrics
    results["metrics_cpu_on_vs_off"] = with_metrics / without_metrics
    results["fleet_http_calls_per_s"] = http.result["calls_per_s"]
    results["fleet_legacy_calls_per_s"] = legacy.result["calls_per_s"]
    results["fleet_sync_readings_per_s"] = sync.result["readings_per_s"]
    results["fleet_sync_vs_noop"] = sync.result["readings_per_s"] / noop_sync.result["readings_per_s"]

    streams = 2_000 if short else 10_000
    held = await fleet.run(
        "devices", "sync", seconds, streams=streams, rate=streams, warmup="3s", open_rate=2_000
    )
    results["fleet_streams_offered"] = streams
    results["fleet_streams_held"] = held.result["streams_open"]
    results["fleet_stream_ack_p99_ms"] = held.p99_ms
    results["fleet_receiver_rss_mb"] = held.receiver_rss_mb

    # Twice what the unary path just carried, offered open loop by more callers than can be served:
    # what is accepted must stay prompt, the rest be refused at once.
    offered = 2 * unary.result["calls_per_s"]
    overload = await fleet.run(
        "overload", "unary", seconds, rate=round(offered), concurrency=2_000, backoff="0s"
    )
    refused = sum(overload.result["errors"].values())
    results["fleet_overload_offered_calls_per_s"] = offered
    results["fleet_overload_accepted_calls_per_s"] = overload.result["calls_per_s"]
    results["fleet_overload_refused"] = refused
    results["fleet_overload_accepted_ack_p99_ms"] = overload.p99_ms
    return results, fleet


async def door_cost(fleet: Fleet, tls: TlsDoor, seconds: float, rounds: int = 3) -> tuple[float, float]:
    """One-reading calls on the TLS port with a token (calls/s), and as a share of the same calls on
    the plaintext port. The two alternate in short runs, so that what else the machine is doing
    meanwhile (PostgreSQL's autovacuum after the large batches, say) weighs on both alike."""
    plain = secure = 0.0
    each = seconds / rounds
    for i in range(rounds):
        plain += (await fleet.run(f"door-plain-{i}", "unary", each, concurrency=64)).result["calls_per_s"]
        secure += (
            await fleet.run(f"door-tls-{i}", "unary", each, concurrency=64,
                            target=tls.address, ca=tls.ca, token=tls.token)
        ).result["calls_per_s"]  # fmt: skip
    return secure / rounds, secure / plain
