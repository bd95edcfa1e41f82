"""`make upgrade`: the running stack's services restarted one instance at a time on the checkout's
code, each drained first, so that clients see at most retryable refusals (docs/operations/upgrades.md).

For each instance of a service whose code or settings changed (every one with --all):
  1. drain: SIGUSR1, and the instance reports NOT_SERVING while still answering (runtime.grpc_server);
     when another instance of its service serves, wait until Envoy's health checks have taken it
     out of every cluster that routes to it, so no new call is sent its way;
  2. stop: SIGTERM; running calls finish, streams end at a batch boundary with UNAVAILABLE, consumers
     commit and leave their group (the others take its partitions);
  3. start it on the new code and wait until it answers and Envoy routes to it again.
Then the parts that are not services (Envoy, the servers) are brought in line as `make run` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable

from stack import backup, prepare, probes, service_env
from stack.parts import STOP_WAIT_S, Part, parts, supervisord_conf
from stack.settings import PUBLIC_SERVICES, ROOT, SERVICES, StackSettings
from stack.supervisor import Supervisor, running
from stack.system import SetupError, say

# Envoy checks each instance's health every 2 s and takes it out after two failures.
DRAIN_DEADLINE_S = 15
START_DEADLINE_S = 90


def upgrade(everything: bool) -> int:
    runs = running()
    if not runs:
        raise SetupError("the stack is not running: make run starts it on this code")
    (settings,) = runs
    started = time.monotonic()
    prepare.everything(settings)
    backup.write_config(settings)
    all_parts = parts(settings)
    sup = Supervisor(settings)
    sup.conf.write_text(supervisord_conf(settings, all_parts))
    added, changed, removed = sup.reload()
    if added or removed:
        raise SetupError(
            f"the stack's parts changed (new: {added or '-'}, gone: {removed or '-'}): "
            "that takes make stop and make run, not a rolling upgrade"
        )
    services = [p for kind in SERVICES for p in all_parts if p.what == kind]
    rolled = [p for p in services if everything or p.name in changed]
    if not rolled:
        say("No service's code or settings changed (make upgrade ARGS=--all restarts them all anyway)")
    for n, part in enumerate(rolled, 1):
        say(f"[{n}/{len(rolled)}] {part.name}")
        asyncio.run(_roll(settings, sup, part, replace=part.name in changed))
    others = [name for name in changed if name not in {p.name for p in services}]
    for name in others:
        say(f"{name}: its configuration changed; restarting it (its clients reconnect)")
        sup.replace(name)
        asyncio.run(_wait(f"{name} answers", _probe(settings, _named(all_parts, name))))
    say(f"Upgraded {len(rolled)} service instances in {time.monotonic() - started:.1f} s")
    return 0


async def _roll(settings: StackSettings, sup: Supervisor, part: Part, replace: bool) -> None:
    """Restarts one instance; a public service's standby serves meanwhile when it has no other."""
    standby = settings.standby(part.what)
    if standby is None:
        await _restart(settings, sup, part, replace, others=len(settings.instances(part.what)) > 1)
        return
    began = time.monotonic()
    log = settings.logs_dir / f"{part.name}-standby.log"
    env = {**os.environ, **service_env.service_env(part.what, service_env.local(settings), standby)}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *part.command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await _wait(
            f"{part.name}'s standby answers", lambda: probes.grpc_health(f"127.0.0.1:{standby.grpc_port}")
        )
        await _wait(
            f"{part.name}'s standby: Envoy routes to it",
            lambda: _envoy_sees(settings, standby.grpc_port, healthy=True),
        )
        print(
            f"    a standby serves beside it (port {standby.grpc_port}) in {time.monotonic() - began:.1f} s"
        )
        await _restart(settings, sup, part, replace, others=True)
    finally:
        await _stop_standby(settings, process, standby.grpc_port)


async def _restart(settings: StackSettings, sup: Supervisor, part: Part, replace: bool, others: bool) -> None:
    behind_envoy = part.what in PUBLIC_SERVICES
    began = time.monotonic()
    # Alone, it gets the calls whatever its health (Envoy's panic mode): nothing to drain to.
    if behind_envoy and others:
        # A process that is starting (supervisord restarting it after a crash) would die of the
        # signal before it handles it: it must serve first.
        await _wait(f"{part.name} answers", _probe(settings, part))
        await _drain(settings, int(sup.processes()[part.name]["pid"]), part.port, part.name)
        print(f"    drained in {time.monotonic() - began:.1f} s")
    stopping = time.monotonic()
    if replace:
        sup.replace(part.name)  # stopped, and started with its new settings
    else:
        sup.stop_process(part.name)
        sup.start_process(part.name)
    print(f"    stopped in {time.monotonic() - stopping:.1f} s" + ("" if others else " (its only instance)"))
    starting = time.monotonic()
    await _wait(f"{part.name} answers", _probe(settings, part))
    if behind_envoy and others:
        await _wait(
            f"{part.name}: Envoy routes to it", lambda: _envoy_sees(settings, part.port, healthy=True)
        )
    elif behind_envoy:  # alone, it gets the calls as soon as it answers (Envoy's panic mode)
        await _wait(
            f"{part.name} answers through Envoy", lambda: probes.service_via_envoy(settings, part.what)
        )
    print(f"    serving again in {time.monotonic() - starting:.1f} s")


async def _drain(settings: StackSettings, pid: int, port: int, name: str) -> None:
    """SIGUSR1, then until Envoy sends the instance no new calls."""
    os.kill(pid, signal.SIGUSR1)
    await _wait(
        f"{name}: Envoy routes no new calls to it",
        lambda: _envoy_sees(settings, port, healthy=False),
        DRAIN_DEADLINE_S,
    )


async def _stop_standby(settings: StackSettings, process: asyncio.subprocess.Process, port: int) -> None:
    """Drains the standby (when it serves) and stops it as supervisord stops a part."""
    with contextlib.suppress(RuntimeError, SetupError):  # it did not come up, or Envoy never routed to it
        if process.returncode is None:
            await _envoy_sees(settings, port, healthy=True)
            await _drain(settings, process.pid, port, "the standby")
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_WAIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _envoy_sees(settings: StackSettings, port: int, healthy: bool) -> None:
    """Raises unless every Envoy cluster with the instance at `port` holds it healthy (or not)."""
    status, body = await probes.http_get(settings.envoy_admin_port, "/clusters")
    if status != 200:
        raise RuntimeError(f"Envoy's admin answered {status}")
    flags = [
        line.rsplit("::", 1)[1] for line in body.splitlines() if f"::127.0.0.1:{port}::health_flags::" in line
    ]
    if not flags:
        raise RuntimeError(f"no Envoy cluster routes to port {port}")
    if any((flag == "healthy") != healthy for flag in flags):
        raise RuntimeError(f"Envoy's health flags: {flags}")


async def _wait(
    what: str, check: Callable[[], Awaitable[None]], deadline_s: float = START_DEADLINE_S
) -> None:
    """Until `check` passes; SetupError with its last failure after `deadline_s`."""
    until = time.monotonic() + deadline_s
    while True:
        try:
            await asyncio.wait_for(check(), 5)
        except Exception as exc:  # retried until the deadline, then reported
            if time.monotonic() > until:
                raise SetupError(f"{what}: not after {deadline_s} s ({exc or type(exc).__name__})") from exc
            await asyncio.sleep(0.2)
        else:
            return


def _probe(settings: StackSettings, part: Part) -> Callable[[], Awaitable[None]]:
    return lambda: probes.probe(settings, part)


def _named(all_parts: list[Part], name: str) -> Part:
    return next(p for p in all_parts if p.name == name)
