"""python -m stack up|down|upgrade|status|logs|shell-env|packages|test-clients|toxiproxy: see
stack/__init__.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable

from runtime import cli
from saver import admin as saver_admin
from stack import (
    access,
    backup,
    bootstrap,
    certs,
    consumers,
    credentials,
    prepare,
    probes,
    procfs,
    redis_cluster,
    roles,
    shell_env,
    upgrade,
)
from stack.parts import Part, parts, supervisord_conf
from stack.settings import PUBLIC_SERVICES, ROOT, StackSettings, load
from stack.supervisor import Supervisor, running
from stack.system import (
    SetupError,
    check_disk,
    ensure_browser,
    ensure_packages,
    ensure_telegraf,
    ensure_toxiproxy,
    ensure_vmagent,
    free_disk_mb,
    reserve_ports,
    say,
    used_mb,
)

SERVER_DEADLINE_S = 120
SERVICE_DEADLINE_S = 90


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    commands = (
        "up",
        "down",
        "upgrade",
        "status",
        "logs",
        "shell-env",
        "packages",
        "test-clients",
        "toxiproxy",
    )
    parser.add_argument("command", choices=commands)
    parser.add_argument(
        "--all", action="store_true", help="upgrade: restart every service instance, changed or not"
    )
    args = parser.parse_args()
    # Probes fail until a part is up; their clients' own complaints would only be noise.
    logging.basicConfig(level=logging.CRITICAL)
    settings = load()
    try:
        if args.command == "up":
            return up(settings)
        if args.command == "down":
            return down()
        if args.command == "upgrade":
            return upgrade.upgrade(everything=args.all)
        if args.command == "status":
            return status()
        if args.command == "packages":
            ensure_packages(settings)
            return 0
        if args.command == "test-clients":
            ensure_browser()
            ensure_vmagent()
            ensure_telegraf()
            return 0
        if args.command == "toxiproxy":
            print(ensure_toxiproxy())
            return 0
        # Of the topology that runs, whichever was asked for.
        settings = next(iter(running()), settings)
        if args.command == "shell-env":
            print(*shell_env.lines(settings), sep="\n")
            return 0
        return logs(settings)
    except (SetupError, credentials.MissingCredentials) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def up(settings: StackSettings) -> int:
    started = time.monotonic()
    if not (ROOT / "gen" / "metrics.binpb").exists():
        raise SetupError("generated code missing: run `make proto` (make run does it for you)")
    other = next((s for s in running() if s.topology != settings.topology), None)
    if other is not None:
        raise SetupError(f"the {other.topology} topology is running (same ports): make stop first")
    ensure_packages(settings)
    check_disk(settings)
    reserve_ports(settings)
    prepare.everything(settings)
    backup.write_config(settings)
    all_parts = parts(settings)
    sup = Supervisor(settings)
    sup.conf.write_text(supervisord_conf(settings, all_parts))
    if sup.pid() is None:
        busy = [p for p in all_parts if _port_in_use(p.port)]
        if busy:
            names = ", ".join(f"{p.port} ({p.name})" for p in busy)
            raise SetupError(
                f"ports already in use by other processes: {names}; stop them or change the ports"
            )
        sup.start()
    else:
        sup.update()
    for stage in STAGES:
        if not _start_stage(settings, sup, [p for p in all_parts if p.stage == stage], started):
            return 1
    say(
        f"Metrics is up in {time.monotonic() - started:.1f} s"
        + (" (cluster topology)" if settings.cluster else "")
    )
    _print_table(settings, sup, all_parts)
    ca = certs.paths(settings).ca
    print(f"\nHTTP/JSON and gRPC with a token (make token): https://127.0.0.1:{settings.envoy_tls_port}"
          + (f"  (CA: {ca})" if ca else ""))  # fmt: skip
    if settings.envoy_plaintext:
        print(f"Local, no token: http://127.0.0.1:{settings.envoy_port}")
        print(f"Web console: http://127.0.0.1:{settings.envoy_port}/")
    print("logs: make logs   stop: make stop")
    return 0


# The servers; PostgreSQL's replica (cluster topology) once the primary holds the database; the rest.
STAGES = ("server", "replica", "service")


def _start_stage(settings: StackSettings, sup: Supervisor, stage_parts: list[Part], started: float) -> bool:
    """Starts a stage's parts and waits until they answer; prepares what the next stage needs."""
    if not stage_parts:
        return True
    stage = stage_parts[0].stage
    if stage == "replica":
        prepare.postgres_replica(settings)
    for part in stage_parts:
        sup.start_process(part.name)
    if stage == "server" and prepare.kafka_users_missing(settings):
        _enrol_kafka_users(settings, sup)
    deadline = SERVICE_DEADLINE_S if stage == "service" else SERVER_DEADLINE_S
    checks = {p.name: _probe(settings, p) for p in stage_parts}
    if stage == "service":
        checks |= {f"{n} via envoy": _via_envoy(settings, n) for n in PUBLIC_SERVICES}
    failed = asyncio.run(_wait_all(checks, deadline, started))
    if failed:
        _explain(settings, sup, failed, deadline)
        return False
    if stage == "server":
        asyncio.run(bootstrap.database(settings))
        backup.ensure_stanza(settings)  # before the first WAL segment is to be archived
        bootstrap.kafka_acls(settings)
        asyncio.run(bootstrap.topics(settings))
        if settings.cluster:
            redis_cluster.form(settings)
    return True


def _enrol_kafka_users(settings: StackSettings, sup: Supervisor) -> None:
    """Adds the SCRAM users to a Kafka made without them, then restarts it without PLAIN logins."""
    bootstrap.kafka_users(settings)
    prepare.kafka_users_made(settings)
    prepare.kafka_config(prepare.paths(settings).kafka_libs, settings)
    brokers = [p.name for p in parts(settings) if p.what == "kafka"]
    for name in brokers:
        sup.stop_process(name)
    sup.conf.write_text(supervisord_conf(settings, parts(settings)))
    sup.update()
    for name in brokers:
        sup.start_process(name)


def down() -> int:
    """Stops whichever topology runs."""
    runs = running()
    if not runs:
        say("The stack is not running")
        return 0
    for settings in runs:
        say("Stopping the stack" + (" (cluster topology)" if settings.cluster else ""))
        started = time.monotonic()
        Supervisor(settings).shutdown(timeout_s=180)
        busy = [p for p in settings.ports if _port_in_use(p)]
        if busy:
            print(f"warning: still listening after stop: ports {busy}", file=sys.stderr)
            return 1
        say(f"Stopped in {time.monotonic() - started:.1f} s")
    return 0


def status() -> int:
    runs = running()
    if not runs:
        say("The stack is not running (make run or make run-cluster starts it)")
        return 3
    healthy = True
    for settings in runs:
        if settings.cluster:
            say("Cluster topology (make run-cluster)")
        healthy &= _print_table(settings, Supervisor(settings), parts(settings))
    return 0 if healthy else 1


def logs(settings: StackSettings) -> int:
    files = sorted(str(p) for p in settings.logs_dir.glob("*.log"))
    if not files:
        say(f"no logs in {settings.logs_dir}")
        return 1
    os.execvp("tail", ["tail", "-n", "20", "-F", *files])


def _print_table(settings: StackSettings, sup: Supervisor, all_parts: list[Part]) -> bool:
    infos = sup.processes()
    health = asyncio.run(_health_all(settings, all_parts))
    role = asyncio.run(roles.of(settings, all_parts)) if settings.cluster else {}
    role_header = f" {'role':<34}" if role else ""
    print(f"{'part':<17} {'state':<9} {'pid':>7} {'port':>6} {'rss MB':>7}{role_header}  health")
    healthy = True
    for part in all_parts:
        info = infos.get(part.name, {})
        state = info.get("statename", "?")
        pid = info.get("pid") or 0
        answer = health[part.name]
        healthy &= answer == "ok"
        shown_role = f" {role.get(part.name, '-'):<34}" if role else ""
        rss = _rss_mb(part, pid)
        print(f"{part.name:<17} {state:<9} {pid or '-':>7} {part.port:>6} {rss:>7}{shown_role}  {answer}")
    free, data = free_disk_mb(settings.state_dir), used_mb(settings.state_dir)
    low = free < settings.min_free_mb
    warning = f" -- below the {settings.min_free_mb:,} MB minimum" if low else ""
    print(f"\ndisk: {free:,} MB free, the stack's data takes {data:,} MB ({settings.state_dir}){warning}")
    if any(health[p.name] == "ok" for p in all_parts if p.what == "kafka"):
        print(asyncio.run(_consumers(settings)))
    if any(health[p.name] == "ok" for p in all_parts if p.what == "postgres"):
        print(asyncio.run(_storage(settings)))
    if health["prometheus"] == "ok":
        print(asyncio.run(_live_rates(settings)))
    return healthy and not low


async def _storage(settings: StackSettings) -> str:
    """One line on the readings' storage: raw and packed (saver/compaction.py), bytes a reading."""
    try:
        conn = await access.postgres(settings, credentials.POSTGRES_OWNER)
        try:
            raw, raw_bytes, packed, packed_bytes = await saver_admin.storage(conn)
        finally:
            await conn.close()
    except Exception as exc:  # noqa: BLE001 - shown to the operator, like a part's health
        return f"readings: not known ({exc or type(exc).__name__})"

    def part(readings: int, size: int) -> str:
        each = f" ({size / readings:.1f} bytes each)" if readings else ""
        return f"~{readings:,} in {size / 1e6:,.0f} MB{each}"

    ratio = ""
    if raw and packed and packed_bytes:
        ratio = f" · packed {raw_bytes / raw / (packed_bytes / packed):,.0f}x smaller a reading"
    return f"readings: raw {part(raw, raw_bytes)} · packed {part(packed, packed_bytes)}{ratio}"


async def _live_rates(settings: StackSettings) -> str:
    """The pipeline's rates over the last minute, from Prometheus's recording rules."""
    try:
        values = {name: await _query(settings, f"metrics:{name}") for name in LIVE}
    except (OSError, ValueError, KeyError) as exc:
        return f"live: not known ({exc})"
    parts = []
    for name, unit in LIVE.items():
        found = values[name]
        shown = ", ".join(f"{labels} {value:,.0f}" if labels else f"{value:,.1f}" for labels, value in found)
        parts.append(f"{unit} {shown or '-'}")
    return f"live (Prometheus, http://127.0.0.1:{settings.prometheus_port}): " + " · ".join(parts)


# Recording rule (prometheus/rules.yml) → what `make status` calls it.
LIVE = {
    "readings_accepted:rate1m": "readings/s in",
    "rows_stored:rate1m": "stored/s",
    "events_raised:rate1m": "events/s",
    "consumer_lag:sum": "lag",
    "dead_letters:increase5m": "dead letters in 5 min",
    "mqtt_clients:sum": "MQTT clients",
    "mqtt_messages:rate1m": "MQTT messages/s",
}


async def _query(settings: StackSettings, expression: str) -> list[tuple[str, float]]:
    status, body = await probes.http_get(
        settings.prometheus_port, "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    )
    if status != 200:
        raise ValueError(f"HTTP {status}")
    return [
        (" ".join(v for k, v in sorted(r["metric"].items()) if k != "__name__"), float(r["value"][1]))
        for r in json.loads(body)["data"]["result"]
    ]


async def _consumers(settings: StackSettings) -> str:
    """One line on the consumer groups' lag and one on the dead letters."""
    try:
        admin = access.kafka(settings)
        lags = await consumers.lags(admin, consumers.GROUPS)
        dead = await consumers.record_count(admin, consumers.DEAD_LETTER_TOPIC)
    except Exception as exc:  # noqa: BLE001 - shown to the operator, like a part's health
        return f"consumers: not known ({exc or type(exc).__name__})"
    behind = " · ".join(f"{group} {topic} {n:,}" for (group, topic), n in lags.items())
    return (
        f"not yet processed (records): {behind}\n"
        f"dead letters: {dead:,} in {consumers.DEAD_LETTER_TOPIC}"
        + ("  (make deadletters ARGS=list)" if dead else "")
    )


def _rss_mb(part: Part, pid: int) -> str:
    """Resident memory of a service with its children (the receiver's workers); of a server, its
    main process (PostgreSQL's backends share its memory: summed, it would count it many times)."""
    if not pid:
        return "-"
    try:
        return f"{(procfs.tree_rss_mb if part.stage == 'service' else procfs.rss_mb)(pid):.0f}"
    except OSError:
        return "-"


async def _health_all(settings: StackSettings, all_parts: list[Part]) -> dict[str, str]:
    async def one(part: Part) -> str:
        try:
            await asyncio.wait_for(_probe(settings, part)(), 5)
        except Exception as exc:  # noqa: BLE001 - shown to the operator as the part's health
            return f"not answering: {exc or type(exc).__name__}"
        return "ok"

    answers = await asyncio.gather(*(one(p) for p in all_parts))
    return {p.name: answer for p, answer in zip(all_parts, answers, strict=True)}


def _probe(settings: StackSettings, part: Part) -> Callable[[], Awaitable[None]]:
    return lambda: probes.probe(settings, part)


def _via_envoy(settings: StackSettings, name: str) -> Callable[[], Awaitable[None]]:
    return lambda: probes.service_via_envoy(settings, name)


async def _wait_all(
    checks: dict[str, Callable[[], Awaitable[None]]], deadline_s: float, started: float
) -> dict[str, str]:
    """Waits until every check passes; returns {name: last error} of those that did not in time."""

    async def wait(name: str, check: Callable[[], Awaitable[None]]) -> tuple[str, str | None]:
        until = time.monotonic() + deadline_s
        error = "no answer"
        while time.monotonic() < until:
            try:
                await asyncio.wait_for(check(), 5)
            except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
                error = str(exc) or type(exc).__name__
                await asyncio.sleep(0.2)
                continue
            say(f"{name} is ready ({time.monotonic() - started:.1f} s)")
            return name, None
        return name, error

    results = await asyncio.gather(*(wait(n, c) for n, c in checks.items()))
    return {name: error for name, error in results if error is not None}


def _explain(settings: StackSettings, sup: Supervisor, failed: dict[str, str], deadline_s: float) -> None:
    infos = sup.processes()
    for name, error in failed.items():
        part = name.split()[0]
        state = infos.get(part, {}).get("statename", "?")
        print(f"error: {name} not ready after {deadline_s} s (process {state}): {error}", file=sys.stderr)
        log = settings.logs_dir / f"{part}.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- last lines of {log}:", *tail, sep="\n", file=sys.stderr)
    print(
        "The stack is left running for inspection: make status, make logs; make stop stops it.",
        file=sys.stderr,
    )


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    cli.run(main)
