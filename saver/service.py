"""The saver's process: consume readings and events, store them, then commit the offsets.

Per round: decode and check every record (what no consumer can use goes to the dead-letter topic,
with why) → write all rows in one PostgreSQL transaction → commit the Kafka offsets. A crash before
the commit redelivers the round; the writes are idempotent, so it is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from runtime import consumer_lag, kafka, migrations, postgres, settings
from runtime.dead_letters import DeadLetters
from runtime.failpoints import Failpoints
from runtime.grpc_server import GrpcServer
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging
from runtime.partitions import FailingPartitions
from runtime.records import Unusable, read_event, read_metric_batch
from saver import compaction, history, instruments, series_move, store
from saver.retention import retention
from saver.settings import SaverSettings

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
Dead = tuple[ConsumerRecord[bytes, bytes], Unusable]
Rows = tuple[list[store.ReadingRow], list[store.EventRow]]
# After a round failed, the wait before its partitions are read again from their committed offsets.
RETRY_DELAY_S = 0.5


# SQLSTATE classes of PostgreSQL refusing the data itself: data exceptions (22: a value out of
# range, an invalid text) and integrity constraint violations (23). The same rows fail again.
DATA_SQLSTATE_CLASSES = ("22", "23")


def refuses_data(exc: asyncpg.PostgresError) -> bool:
    return str(exc.sqlstate or "")[:2] in DATA_SQLSTATE_CLASSES


class Saver:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dead_letters: DeadLetters,
        config: SaverSettings,
        stop: asyncio.Event,
        serving: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._consumer = consumer
        self._failing = FailingPartitions(consumer, RETRY_DELAY_S, config.stall_after_s, serving)
        self._dead_letters = dead_letters
        self._config = config
        self._stop = stop
        self._conns: list[asyncpg.Connection] = []
        self._failpoint = Failpoints(config.failpoints)

    async def connect_owner(self) -> asyncpg.Connection:
        """A connection as the schema's owner (the writers' role cannot change the schema)."""
        return await asyncpg.connect(
            self._config.migrations_dsn,
            password=self._config.migrations_password or None,
            server_settings=postgres.SERVER_SETTINGS,
            timeout=5,
        )

    async def migrate(self) -> None:
        """Applies the saver's pending migrations as the schema's owner."""
        await migrations.apply(self._config, "saver")

    async def move_readings(self) -> None:
        """Moves readings stored before series existed, if any are left (saver/series_move.py)."""
        conn = await self.connect_owner()
        try:
            await series_move.finish(conn)
        finally:
            await conn.close()

    async def connect_writer(self) -> asyncpg.Connection:
        """A connection as the data path's role, set up by nothing here."""
        return await asyncpg.connect(
            self._config.postgres_dsn,
            password=self._config.postgres_password or None,
            server_settings=postgres.SERVER_SETTINGS,
            timeout=5,
        )

    async def connect(self) -> asyncpg.Connection:
        conn = await self.connect_writer()
        try:
            await store.setup_connection(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def start(self) -> None:
        """Connects to PostgreSQL (waiting for it), applies pending migrations, opens the writers."""
        await retry_until_stopped("PostgreSQL (migrations)", self.migrate, self._stop)
        await retry_until_stopped("PostgreSQL (moving readings to series)", self.move_readings, self._stop)
        for _ in range(self._config.writers):
            self._conns.append(await retry_until_stopped("PostgreSQL", self.connect, self._stop))

    async def run(self) -> None:
        """Rounds are pipelined: the next round is decoded while PostgreSQL stores the current one;
        offsets are still committed strictly in order, each after its round's transaction."""
        writing: tuple[asyncio.Task[None], Records] | None = None
        while not self._stop.is_set():
            await self._failing.tick()
            rounds = await self._consumer.getmany(
                timeout_ms=0 if writing else 200, max_records=self._config.max_records_per_round
            )
            decoded = self._decode(rounds) if rounds else None
            if writing is not None:
                failure = await self._finish(*writing)
                if failure is not None:
                    # That round, and the one read meanwhile, are read again from their commits.
                    for tp in {*writing[1], *rounds}:
                        await self._failing.failed(tp, failure)
                    writing = None
                    continue
                writing = None
            if decoded is not None:
                writing = (asyncio.create_task(self._write(*decoded)), rounds)
        if writing is not None:
            await self._finish(*writing)

    async def close(self) -> None:
        for conn in self._conns:
            await conn.close(timeout=5)
        self._conns = []

    async def _finish(self, write: asyncio.Task[None], rounds: Records) -> Exception | None:
        """Waits for a round's transaction, then commits its offsets; the failure if it was not stored.

        PostgreSQL refusing the data (a value, a constraint) is the fault of some records: the round
        is written again in halves until each refused record is alone, those are dead-lettered and
        the rest stored. Any other failure (PostgreSQL down, slow, restarting) is nobody's fault:
        nothing is dead-lettered, the round is read again once PostgreSQL answers.
        """
        try:
            try:
                await write
            except asyncpg.PostgresError as exc:
                if not refuses_data(exc):
                    raise
                log.warning("PostgreSQL refused a round (%s); finding the records it refuses", exc)
                refused = await self._isolate([r for records in rounds.values() for r in records])
                await self._dead_letters.send(refused)
        except postgres.OUTAGE as exc:
            # Nothing of this round is committed: reconnect (waiting for PostgreSQL) to read it again.
            for conn in self._conns:
                conn.terminate()
            self._conns = []
            await self.start()
            return exc
        self._failpoint("saver.before_commit")
        offsets = {tp: records[-1].offset + 1 for tp, records in rounds.items()}
        await self._commit(offsets)
        for tp in offsets:
            await self._failing.succeeded(tp)
        return None

    async def _isolate(self, records: list[ConsumerRecord[bytes, bytes]]) -> list[Dead]:
        """Writes `records` in one transaction, or in halves while PostgreSQL refuses the data;
        returns the records it refuses alone (in order, so a sensor's readings keep theirs)."""
        (readings, events), _ = self._decode_records(records)
        try:
            await store.write(self._conns[0], readings, events)
        except asyncpg.PostgresError as exc:
            if not refuses_data(exc):
                raise
            if len(records) == 1:
                return [(records[0], Unusable(f"PostgreSQL refused it: {exc}", "refused_by_database"))]
            middle = len(records) // 2
            return await self._isolate(records[:middle]) + await self._isolate(records[middle:])
        return []

    def _decode_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> tuple[Rows, list[Dead]]:
        """The rows of `records` (of any partitions), leaving out those no consumer can use."""
        by_tp: Records = {}
        for record in records:
            by_tp.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        shares, dead = self._decode(by_tp, writers=1)
        return shares[0], dead

    def _decode(self, rounds: Records, writers: int | None = None) -> tuple[list[Rows], list[Dead]]:
        """Rows per writer: a partition's rows (so a sensor's) always go to the same writer, and
        two writers' transactions never touch the same rollup, histogram or latest row."""
        shares: list[Rows] = [([], []) for _ in range(writers or self._config.writers)]
        dead: list[Dead] = []
        metrics_topic = self._config.metrics_topic
        for tp, records in rounds.items():
            readings, events = shares[tp.partition % len(shares)]
            for record in records:
                try:
                    if tp.topic == metrics_topic:
                        read_metric_batch(record, readings)
                    else:
                        events.append(store.event_row(read_event(record)))
                except Unusable as exc:
                    dead.append((record, exc))
        return shares, dead

    async def _write(self, shares: list[Rows], dead: list[Dead]) -> None:
        """Each writer's share in its own transaction, at the same time (PostgreSQL uses a core each)."""
        if dead:
            await self._dead_letters.send(dead)
        outcomes = await asyncio.gather(
            *(self._write_share(c, *share) for c, share in zip(self._conns, shares, strict=True)),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _write_share(
        self, conn: asyncpg.Connection, readings: list[store.ReadingRow], events: list[store.EventRow]
    ) -> None:
        if not readings and not events:
            return
        began = time.perf_counter()
        new_readings, new_events = await store.write(conn, readings, events)
        instruments.TRANSACTION_SECONDS.observe(time.perf_counter() - began)
        instruments.READING_ROWS.inc(new_readings)
        instruments.EVENT_ROWS.inc(new_events)
        if new_readings != len(readings) or new_events != len(events):
            log.info(
                "stored %d of %d readings and %d of %d events (the rest were stored before)",
                new_readings, len(readings), new_events, len(events),
            )  # fmt: skip

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await kafka.commit(self._consumer, offsets, "the rows are stored; storing them again changes nothing")


async def main(stop: asyncio.Event) -> None:
    config = settings.load(SaverSettings, "saver")
    setup_logging("saver", config.log_level)
    log.info("starting: %s", settings.describe(config))
    kept = retention(
        config.readings_retention_days, config.readings_retention_by_type,
        config.rollups_retention_days, config.events_retention_days,
    )  # fmt: skip
    producer = kafka.make_producer(config, "saver")
    consumer = kafka.make_consumer(config, "saver")
    server = GrpcServer(config.grpc_address, [], metrics_port=config.metrics_port)
    await server.start()
    saver = Saver(
        consumer, DeadLetters(producer, config, config.consumer_group), config, stop, server.set_serving
    )
    try:
        await retry_until_stopped("Kafka (producer)", producer.start, stop)
        await retry_until_stopped("Kafka (consumer)", consumer.start, stop)
        consumer.subscribe([config.metrics_topic, config.events_topic], listener=kafka.LogAssignment())
        await saver.start()
        await server.set_serving()
        log.info("serving")
        lag = asyncio.create_task(consumer_lag.watch(consumer, config.consumer_group, stop))
        kept_bounded = asyncio.create_task(
            history.keep_bounded(
                saver.connect_owner, kept, config.partitions_ahead_days, config.history_interval_s, stop
            )
        )
        compacting = asyncio.create_task(
            compaction.keep_compacting(
                saver.connect_writer, config.compaction_grace_s, config.compaction_interval_s, stop
            )
        )
        try:
            await saver.run()
        finally:
            lag.cancel()
            kept_bounded.cancel()
            compacting.cancel()
    except Stopped:
        pass
    finally:
        await shut_down(server, config.shutdown_grace_s, consumer.stop, producer.stop, saver.close)
