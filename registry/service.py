"""The registry's process: DevicesService over gRPC, over the devices in PostgreSQL and the devices
topic.

Start: PostgreSQL (the registry's migrations, then its pool), Kafka (its producer; the topic made to
hold what PostgreSQL does), then serving, and following the MQTT brokers' connection logs
(registry/presence.py). Stop (SIGTERM), in reverse: no new calls, the calls under
way finish within the shutdown grace, then the clients close.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg

from metrics.v1 import device_pb2
from registry import api, mqtt_accounts, presence, store
from registry.mqtt_accounts import MqttAccounts
from registry.settings import RegistrySettings
from runtime import compacted, kafka, migrations, postgres, settings
from runtime.certificates import CertificateAuthority
from runtime.failpoints import Failpoints
from runtime.grpc_server import GrpcServer, add_servicer
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging

log = logging.getLogger(__name__)


async def main(stop: asyncio.Event) -> None:
    config = settings.load(RegistrySettings, "registry")
    setup_logging("registry", config.log_level)
    log.info("starting: %s", settings.describe(config))
    producer = kafka.make_producer(config, "registry")
    topic = compacted.Topic(config, config.devices_topic, device_pb2.Device, producer)
    pool: asyncpg.Pool | None = None
    server: GrpcServer | None = None

    async def connect() -> asyncpg.Pool:
        created = await asyncpg.create_pool(
            config.postgres_dsn, password=config.postgres_password or None, min_size=1,
            max_size=config.postgres_pool_size,
            server_settings={**postgres.SERVER_SETTINGS, "search_path": store.SCHEMA},
            init=postgres.setup_connection, command_timeout=30, timeout=5,
        )  # fmt: skip
        return created

    try:
        await retry_until_stopped(
            "PostgreSQL (migrations)", lambda: migrations.apply(config, "registry"), stop
        )
        pool = await retry_until_stopped("PostgreSQL (the registry's tables)", connect, stop)
        devices = store.DeviceStore(pool, topic, Failpoints(config.failpoints))
        keys = Path(config.token_keys_dir) if config.token_keys_dir else None
        ca = (
            CertificateAuthority(config.ca_certificate.encode(), config.ca_private_key.encode())
            if config.ca_certificate and config.ca_private_key
            else None
        )
        accounts = MqttAccounts(mqtt_accounts.brokers(config))
        brokers = [presence.BrokerLog(b, pool, stop) for b in mqtt_accounts.brokers(config)]
        await retry_until_stopped("Kafka (producer)", producer.start, stop)
        await retry_until_stopped("Kafka (the devices topic)", lambda: _reconcile(devices, topic), stop)
        server = GrpcServer(
            config.grpc_address,
            [api.SERVICE.full_name],
            [lambda s: add_servicer(s, api.SERVICE, api.DevicesApi(devices, keys, ca, accounts))],
            metrics_port=config.metrics_port,
        )
        await server.start()
        await server.set_serving()
        log.info("serving")
        # The brokers told every account's state (what a crash left), then what they miss, retried.
        await accounts.reconcile(await devices.accounts(device_pb2.CREDENTIAL_KIND_MQTT_PASSWORD))
        retrying = asyncio.create_task(accounts.retry(devices.find))
        following = [asyncio.create_task(b.run()) for b in brokers]
        await stop.wait()
        retrying.cancel()
        for task in following:
            task.cancel()
        for broker_log in brokers:
            await broker_log.close()
    except Stopped:
        pass
    finally:
        await shut_down(
            server, config.shutdown_grace_s, producer.stop, pool.close if pool is not None else None
        )


async def _reconcile(devices: store.DeviceStore, topic: compacted.Topic[device_pb2.Device]) -> None:
    """Makes the devices topic hold what PostgreSQL does: what a crash between a change's
    publication and its commit left."""
    published = await compacted.reconcile(topic.publish, await devices.everything(), await topic.read())
    if published:
        log.info("published %d device record(s) the devices topic lacked", published)
