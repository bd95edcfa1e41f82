"""Faults under a steady load (tests/faults.py): kill -9 of each part, a stalled process, consumer
groups rebalancing, PostgreSQL down for a while, a rolling upgrade (make upgrade)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from stack import settings as stack_settings
from stack.settings import SERVICES
from stack.supervisor import Supervisor
from tests.faults import Load, during_load, healthy, pid_of, upgrade_under_load
from tests.helpers import eventually
from tests.services import Topics, service_env, start_service, stop_service
from tests.target import Target

pytestmark = pytest.mark.local_stack


@pytest.mark.parametrize(
    "victim", ["receiver", "processor", "saver", "assessor", "envoy", "kafka", "redis", "postgres"]
)
async def test_kill_9(victim: str, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis) -> None:
    async def kill() -> None:
        pid = pid_of(victim)
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        await eventually(lambda: healthy(victim), timeout=120)
        print(f"{victim}: killed, back in {time.monotonic() - started:.1f} s")

    load = await during_load(target, db, redis_client, kill)
    print(f"{victim}: statuses the clients saw: {load.statuses or 'none'}")


async def test_make_upgrade_under_load_refuses_nothing_and_loses_nothing(
    target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # One instance of each service here: a public one's standby serves while it restarts.
    before = {name: pid_of(name) for name in SERVICES}
    await upgrade_under_load(target, db, redis_client)
    after = {name: pid_of(name) for name in SERVICES}
    assert not {name for name in SERVICES if after[name] == before[name]}, "a service was not restarted"


async def test_postgres_down_for_10_s_under_load(
    target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # Stopped (a clean shutdown), then started again: the saver waits and retries, dead-letters
    # nothing (during_load checks), and stores everything once PostgreSQL is back. No service
    # crashes meanwhile: each waits the outage out in the process it runs in.
    before = {name: pid_of(name) for name in SERVICES}

    async def down() -> None:
        with Supervisor(stack_settings.load()) as supervisor:
            supervisor.stop_process("postgres")
            try:
                await asyncio.sleep(10)  # the length of the outage, not a wait for something
            finally:
                supervisor.start_process("postgres")
        await eventually(lambda: healthy("postgres"), timeout=120)

    await during_load(target, db, redis_client, down)
    assert {name: pid_of(name) for name in SERVICES} == before, "a service restarted: it crashed"


@pytest.mark.parametrize("victim", ["processor", "saver"])
async def test_stall_longer_than_the_session_timeout(
    victim: str, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # SIGSTOP for 10 s, more than the consumer session timeout (6 s): the group gives the stalled
    # member's partitions up; when it wakes, its late commit is refused and it rejoins.
    async def stall() -> None:
        pid = pid_of(victim)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(10)
        finally:
            os.kill(pid, signal.SIGCONT)

    await during_load(target, db, redis_client, stall)


async def test_rebalance_as_a_second_processor_and_saver_join_and_leave(
    target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    topics = Topics(target.metrics_topic, target.events_topic, target.dead_letter_topic, "")

    async def join_then_leave() -> None:
        extra = []
        for name, group in (("processor", target.processor_group), ("saver", target.saver_group)):
            own = {f"METRICS_{name.upper()}_CONSUMER_GROUP": group}
            if name == "processor":  # the stack's rules, alarms and all
                own["METRICS_PROCESSOR_RULES_TOPIC"] = target.rules_topic
            env = service_env(target, topics, name, own)
            extra.append(await start_service(name, env, tmp_path / f"{name}.log"))

        async def rebalanced() -> None:
            # The group rebalances onto both members: each newcomer reads some partitions.
            for name in ("processor", "saver"):
                log = (tmp_path / f"{name}.log").read_text()
                assert f"partitions assigned: {target.metrics_topic}[" in log or (
                    name == "saver" and f"partitions assigned: {target.events_topic}[" in log
                ), f"{name}: {log[-1500:]}"

        await eventually(rebalanced, timeout=60, what="the newcomers assigned partitions")
        for process in extra:
            assert await stop_service(process) == 0  # and back onto one

    await during_load(target, db, redis_client, join_then_leave, Load(batches=120))
