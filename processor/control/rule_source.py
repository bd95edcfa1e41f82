"""The rules a processor applies: its configuration's alone (no rules topic), or the rules topic's,
kept in step with the rules stored in PostgreSQL (RulesService)."""

from __future__ import annotations

import asyncio
import functools
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from metrics.v1 import rule_pb2
from processor.control.rule_feed import RuleFeed
from processor.control.rule_store import RuleStore
from processor.rules import Rule, RuleBook, parse_rules
from processor.settings import ProcessorSettings
from runtime import migrations, postgres
from runtime.failpoints import Failpoints
from runtime.lifecycle import retry_until_stopped

log = logging.getLogger(__name__)

# How long a processor waits at start for the rules topic to hold what PostgreSQL does.
SYNC_TIMEOUT_S = 10.0


class RuleSource:
    def __init__(self, config: ProcessorSettings, producer: AIOKafkaProducer) -> None:
        self._config = config
        self._configured = parse_rules(config.rules)
        self._fixed = RuleBook(self._configured.values())
        self.feed = RuleFeed(config, config.rules_topic, producer) if config.rules_topic else None
        self.store: RuleStore | None = None
        # PostgreSQL, where the rules and alarms are (None without a rules topic).
        self.pool: asyncpg.Pool | None = None
        self._following: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """The store's connection pool; its connections are made when a call needs one, so the
        processor runs while PostgreSQL is away (only RulesService waits for it)."""
        if self.feed is None:
            return
        self.pool = await asyncpg.create_pool(
            self._config.postgres_dsn, password=self._config.postgres_password or None, min_size=0,
            max_size=4, init=postgres.setup_connection, server_settings=postgres.SERVER_SETTINGS, timeout=5,
        )  # fmt: skip
        self.store = RuleStore(self.pool, self.feed.publish, Failpoints(self._config.failpoints))

    async def start(self, stop: asyncio.Event) -> None:
        """Applies the control plane's migrations, reads the rules topic, then follows it; waits until
        it holds what PostgreSQL does."""
        if self.feed is None or self.store is None:
            return
        await retry_until_stopped(
            "PostgreSQL (migrations)", lambda: migrations.apply(self._config, "processor"), stop
        )
        await retry_until_stopped("Kafka (rules)", self.feed.start, stop)
        self._following = asyncio.create_task(self.feed.follow())
        sync = functools.partial(_sync, self.store, self.feed, self._configured)
        await retry_until_stopped("PostgreSQL (rules)", sync, stop)

    def book(self) -> RuleBook:
        """The rules in force now."""
        return self.feed.book if self.feed is not None else self._fixed

    async def close(self) -> None:
        if self._following is not None:
            self._following.cancel()
        if self.feed is not None:
            await self.feed.stop()
        if self.pool is not None:
            await self.pool.close()


async def _sync(store: RuleStore, feed: RuleFeed, configured: dict[str, Rule]) -> None:
    """Stores the configuration's rules in an empty store (once), publishes what the topic lacks of
    the store (a crash between a change's publication and its commit), and waits until the feed
    holds them: the processor starts with every rule in force."""
    if await store.seed(_as_stored(rule) for rule in configured.values()):
        log.info("stored the configured rules: %s", "; ".join(r.describe() for r in configured.values()))
    stored = await store.everything()
    if published := await feed.reconcile(stored):
        log.info("published %d rule(s) the rules topic lacked", published)
    expected = {rule_id: rule for rule_id, rule in stored.items() if rule is not None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SYNC_TIMEOUT_S
    while feed.rules != expected:
        if loop.time() > deadline:
            raise TimeoutError("the rules topic does not hold what PostgreSQL does")
        await asyncio.sleep(0.05)


def _as_stored(rule: Rule) -> rule_pb2.Rule:
    """A configured rule as RulesService shows it: its id is its metric type."""
    return rule_pb2.Rule(
        rule_id=rule.metric_type, metric_type=rule.metric_type, threshold=rule.threshold, count=rule.count,
        comparison=rule_pb2.COMPARISON_GREATER_OR_EQUAL, enabled=True,
    )  # fmt: skip
