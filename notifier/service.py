"""The notifier's process: SubscriptionsService over gRPC, the consumer of the events topic, and the
dispatcher that delivers the queued events to the subscriptions' webhooks.

Start: PostgreSQL (the notifier's migrations, then its pool), Kafka, then serving. Stop
(SIGTERM), in reverse: no new calls or rounds (the round under way is committed), the attempts under
way finish within the shutdown grace, then the clients close.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from notifier import api, store
from notifier.destinations import Destinations
from notifier.dispatch import Dispatcher
from notifier.intake import Intake
from notifier.settings import NotifierSettings
from notifier.webhook import Sender
from runtime import consumer_lag, kafka, migrations, postgres, settings
from runtime.dead_letters import DeadLetters
from runtime.grpc_server import GrpcServer, add_servicer
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging

log = logging.getLogger(__name__)


async def main(stop: asyncio.Event) -> None:
    config = settings.load(NotifierSettings, "notifier")
    setup_logging("notifier", config.log_level)
    log.info("starting: %s", settings.describe(config))
    destinations = Destinations(config.allowed_networks, config.public_destinations)
    producer = kafka.make_producer(config, "notifier")
    consumer = kafka.make_consumer(config, "notifier")
    pool: asyncpg.Pool | None = None
    server: GrpcServer | None = None

    async def connect() -> asyncpg.Pool:
        created = await asyncpg.create_pool(
            config.postgres_dsn, password=config.postgres_password or None, min_size=1,
            max_size=config.postgres_pool_size,
            server_settings={**postgres.SERVER_SETTINGS, "search_path": store.SCHEMA},
            init=postgres.setup_connection, command_timeout=10, timeout=5,
        )  # fmt: skip
        return created

    try:
        await retry_until_stopped(
            "PostgreSQL (migrations)", lambda: migrations.apply(config, "notifier"), stop
        )
        pool = await retry_until_stopped("PostgreSQL (the notifier's tables)", connect, stop)
        server = GrpcServer(
            config.grpc_address,
            [api.SERVICE.full_name],
            [lambda s: add_servicer(s, api.SERVICE, api.Subscriptions(pool, destinations))],
            metrics_port=config.metrics_port,
        )
        await server.start()
        await retry_until_stopped("Kafka (producer)", producer.start, stop)
        await retry_until_stopped("Kafka (consumer)", consumer.start, stop)
        dispatcher = Dispatcher(pool, Sender(destinations, config.delivery_timeout_s), config)
        intake = Intake(consumer, pool, DeadLetters(producer, config, config.consumer_group), config,
                        server.set_serving, dispatcher.wake)  # fmt: skip
        consumer.subscribe([config.events_topic], listener=kafka.LogAssignment())
        await server.set_serving()
        log.info("serving; destinations: %s", destinations.describe())
        await _run(intake, dispatcher, consumer, config, stop)
    except Stopped:
        pass
    finally:
        closers = (consumer.stop, producer.stop, pool.close if pool is not None else None)
        await shut_down(server, config.shutdown_grace_s, *closers)


async def _run(
    intake: Intake, dispatcher: Dispatcher, consumer: object, config: NotifierSettings, stop: asyncio.Event
) -> None:
    """The consumer and the dispatcher side by side until `stop`; a failure of either stops both."""
    tasks = [
        asyncio.create_task(intake.run(stop), name="intake"),
        asyncio.create_task(dispatcher.run(stop), name="dispatcher"),
        asyncio.create_task(consumer_lag.watch(consumer, config.consumer_group, stop), name="lag"),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()  # the others finish too: the round under way, the attempts under way
        await asyncio.gather(*tasks, return_exceptions=True)
