"""The processor's process: the stream processor (processor/stream: readings, counters in Redis,
events) and the control plane it serves (processor/control: RulesService and AlarmsService, with
PostgreSQL), started and stopped together."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from processor.control import alarms_api, rules_api
from processor.control.rule_source import RuleSource
from processor.settings import ProcessorSettings
from processor.stream.counters import Counters
from processor.stream.redis_nodes import RedisNodes
from processor.stream.rounds import Processor, drain_legacy
from processor.stream.silence import TICK_S, Silence
from runtime import consumer_lag, kafka, settings
from runtime.dead_letters import DeadLetters
from runtime.devices import Devices
from runtime.failpoints import Failpoints
from runtime.grpc_server import GrpcServer, add_servicer
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging

log = logging.getLogger(__name__)


async def main(stop: asyncio.Event) -> None:
    config = settings.load(ProcessorSettings, "processor")
    setup_logging("processor", config.log_level)
    log.info("starting: %s", settings.describe(config))
    redis = RedisNodes.connect(
        config.redis_url,
        config.redis_password or None,
        cluster=config.redis_cluster,
        replicas=config.redis_replicas,
        replica_timeout_ms=config.redis_replica_timeout_ms,
        socket_timeout=10,
        socket_connect_timeout=2,
    )
    producer = kafka.make_producer(config, "processor")
    consumer = kafka.make_consumer(config, "processor")
    rules = RuleSource(config, producer)
    devices = Devices(config)
    silence = Silence(redis, producer, config.events_topic, Failpoints(config.failpoints))
    await rules.open()
    alarm_api = alarms_api.AlarmsApi(
        rules.pool, redis, producer, config.events_topic, Failpoints(config.failpoints)
    )
    server = GrpcServer(
        config.grpc_address,
        [rules_api.SERVICE.full_name, alarms_api.SERVICE.full_name],
        [
            lambda s: add_servicer(s, rules_api.SERVICE, rules_api.RulesApi(rules.store)),
            lambda s: add_servicer(s, alarms_api.SERVICE, alarm_api),
        ],
        metrics_port=config.metrics_port,
    )
    await server.start()
    try:
        await retry_until_stopped("Redis", redis.start, stop)
        await retry_until_stopped("Kafka (producer)", producer.start, stop)
        await retry_until_stopped("Kafka (consumer)", consumer.start, stop)
        await rules.start(stop)
        await retry_until_stopped("Redis (alarms cleared by hand)", alarm_api.flush, stop)
        await retry_until_stopped(
            "Redis (the previous version's pending lists)",
            lambda: drain_legacy(redis, producer, config),
            stop,
        )
        await retry_until_stopped("Kafka (the devices topic)", devices.follower.start, stop)
        following = asyncio.create_task(devices.follower.follow())
        processor = Processor(
            consumer,
            producer,
            Counters(redis),
            DeadLetters(producer, config, config.consumer_group),
            rules.book,
            config,
            server.set_serving,
            silence,
            devices.coverage,
        )
        consumer.subscribe([config.metrics_topic], listener=kafka.LogAssignment())
        await server.set_serving()
        log.info("serving; rules: %s", "; ".join(r.describe() for r in rules.book()) or "none")
        lag = asyncio.create_task(consumer_lag.watch(consumer, config.consumer_group, stop))
        ticking = asyncio.create_task(_tick(silence, rules, devices))
        watching = asyncio.create_task(processor.watch(stop))
        try:
            await processor.run(stop)
        finally:
            for task in (lag, ticking, following, watching):
                task.cancel()
    except Stopped:
        pass
    finally:
        # The round in progress is finished (run() returns between rounds); then in reverse order.
        closers = (rules.close, devices.follower.stop, consumer.stop, producer.stop, redis.aclose)
        await shut_down(server, config.shutdown_grace_s, *closers)


async def _tick(silence: Silence, rules: RuleSource, devices: Devices) -> None:
    """The silence rules' clock (processor/stream/silence.py), once the devices are read. While Redis
    or Kafka does not answer, it says so once, and again when they do."""
    failing = False
    while True:
        await asyncio.sleep(TICK_S)
        if not devices.follower.ready:
            continue
        try:
            worked = await silence.tick(rules.book(), devices.follower.held, devices.coverage.version)
        except (RedisError, KafkaError, OSError) as exc:
            if not failing:
                log.warning(
                    "silence rules: waiting for Redis and Kafka to answer (%s: %s)", type(exc).__name__, exc
                )
            failing = True
            continue
        except Exception:
            log.exception("silence rules: a tick failed; the next one tries again")
            continue
        if failing and worked:
            log.info("silence rules: ticking again")
            failing = False
