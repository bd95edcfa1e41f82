"""Silence rules: a registered device that sends no reading for a rule's time raises an alarm
(EVENT_KIND_DEVICE_SILENT), of the lifecycle of the others, cleared by its next reading.

Who is watched: the enabled devices of the registry (the devices topic, followed) that a rule's
selector takes (a device id prefix, labels). When a device was heard from: the processor's clock
when it handled a round with a reading of any of the device's sensors (runtime/devices.py says
which devices cover a sensor), or when it began watching a device never heard from.

Redis, all of one events topic in one hash slot (silence.lua):
  silence:{<events topic>}:due       sorted set: "<rule id>|<device id>" -> when (µs) the device is
                                     silent for the rule unless heard from before
  silence:{<events topic>}:alarms    hash: "<rule id>|<device id>" -> the raising event
  silence:{<events topic>}:pending   list: events to produce (raised, or "cleared|...")
A device heard from is due again the rule's time later; a tick reads only what is due now (an
alarmed device is not due), so a fleet of silent devices costs nothing between changes. Every change
is one script, atomic: an alarm raised or cleared is in the pending list in the same step, and an
entry leaves the list only once Kafka has its event (after a kill -9 in between, the next processor
to tick produces it). Event ids follow from the rule, the device and the time it was last heard
from, so an alarm is raised once whichever processor raises it, and an event produced twice is stored
once. Every processor ticks (TICK_S): raises the alarms of what is due, produces what is pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from metrics.v1 import device_pb2, event_pb2
from processor.rules import EVENT_NAMESPACE, Rule, RuleBook
from processor.stream import alarms, pending
from processor.stream.redis_nodes import RedisNodes
from runtime.failpoints import Failpoints

log = logging.getLogger(__name__)

SCRIPT = (Path(__file__).parent / "silence.lua").read_text()
SILENT = event_pb2.EVENT_KIND_DEVICE_SILENT
CLEARED_ENTRY = b"cleared|"
# How often a processor looks for silent devices: an alarm is raised within this of its time.
TICK_S = 0.5
# Without silence rules, the ticks that look for what a crash left pending: one in this many.
IDLE_EVERY = 20
# Chunks of due alarms one tick raises at most (the next tick goes on).
MAX_CHUNKS = 50
# Devices in one script call.
CHUNK = 2_000


def keys(events_topic: str) -> list[str]:
    tag = "{" + events_topic + "}"
    return [f"silence:{tag}:due", f"silence:{tag}:alarms", f"silence:{tag}:pending"]


def raise_id(rule_id: str, device_id: str, seen_us: int) -> str:
    return uuid.uuid5(EVENT_NAMESPACE, f"silent\0{rule_id}\0{device_id}\0{seen_us}").hex


def raised_event(rule: Rule, device_id: str, seen_us: int, detect_us: int) -> event_pb2.Event:
    """The event raising a silence alarm: the device last heard from at `seen_us`, silent since
    `seen_us` + the rule's time."""
    silent_us = seen_us + rule.silence_us
    event = event_pb2.Event(
        event_id=raise_id(rule.rule_id, device_id, seen_us), kind=SILENT, sensor_id=device_id,
        value=rule.silence_us / 1e6, threshold=rule.silence_us / 1e6, count=1, severity=rule.severity,  # type: ignore[arg-type]
        rule_id=rule.rule_id,
    )  # fmt: skip
    event.reading_time.FromMicroseconds(seen_us)
    event.detect_time.FromMicroseconds(detect_us)
    alarms.raised(event)
    event.alarm.raise_time.FromMicroseconds(silent_us)
    event.alarm.last_match_time.FromMicroseconds(silent_us)
    return event


def produced(entry: bytes) -> bytes:
    """What a pending entry is on the events topic: a raising event as stored, or the event of an
    alarm's clearing."""
    if not entry.startswith(CLEARED_ENTRY):
        return entry
    detect, by, raised = entry[len(CLEARED_ENTRY) :].split(b"|", 2)
    alarm = event_pb2.Event.FromString(raised).alarm
    alarm.state = event_pb2.ALARM_STATE_CLEARED
    alarm.clear_time.FromMicroseconds(int(detect))
    alarm.cleared_by = by.decode()
    event = alarms.transition(alarm, alarms.CLEARED, 0.0, int(detect), int(detect))
    return event.SerializeToString()


class Silence:
    def __init__(
        self,
        nodes: RedisNodes,
        producer: AIOKafkaProducer,
        events_topic: str,
        failpoint: Failpoints | None = None,
    ) -> None:
        self._nodes = nodes
        self._producer = producer
        self._topic = events_topic
        self._keys = keys(events_topic)
        self._failpoint = failpoint or Failpoints()
        self._flushing = asyncio.Lock()
        # What the watched devices were worked out from, and them: rule id -> device ids.
        self._watched_from: tuple[object, int] | None = None
        self._watched: dict[str, frozenset[str]] = {}
        self._watching = -1
        self._ticks = 0

    async def _run(self, verb: str, now_us: int, args: Iterable[object] = ()) -> Any:
        return await self._nodes.script(SCRIPT, self._keys, [verb, now_us, *args])

    async def seen(self, now_us: int, devices: Iterable[str], rules: Iterable[Rule]) -> None:
        """The devices were heard from now: their alarms clear, and they are due again the rule's
        time from now, for each silence rule that watches them."""
        pairs: list[object] = []
        for rule in rules:
            watched = self._watched.get(rule.rule_id)
            if watched:
                for device_id in devices:
                    if device_id in watched:
                        pairs += (f"{rule.rule_id}|{device_id}", rule.silence_us)
        waiting = 0
        for first in range(0, len(pairs), 2 * CHUNK):
            waiting = int(await self._run("seen", now_us, pairs[first : first + 2 * CHUNK]))
        if waiting:
            await self.flush()

    async def tick(self, book: RuleBook, devices: Mapping[str, device_pb2.Device], version: int) -> bool:
        """Raises the alarms of what is due, and produces what is pending (first, after a change of
        the rules or the devices, works out again what each rule watches). `devices`: the
        registry's, at `version` (Coverage.version). False for a tick with nothing to do."""
        now_us = time.time_ns() // 1000
        self._ticks += 1
        if not book.silence and not self._watched and self._ticks % IDLE_EVERY:
            return False  # no silence rule here: only what a crash may have left pending, now and then
        if self._watched_from != (book, version):
            await self._rewatch(book.silence, devices, now_us)
            self._watched_from = (book, version)
        rules = {rule.rule_id: rule for rule in book.silence}
        raised = skipped = 0
        for _ in range(MAX_CHUNKS):  # a chunk at a time, until nothing more is due
            found, waiting = await self._run("due", now_us, [skipped, CHUNK])
            raising: list[object] = []
            for field, due in zip(found[::2], found[1::2], strict=True):
                name = _text(field)
                rule = rules.get(name.partition("|")[0])
                if rule is None:
                    skipped += 1  # a rule not (yet) known here: another processor's; it stays due
                    continue
                due_us = int(float(due))
                event = raised_event(rule, name.partition("|")[2], due_us - rule.silence_us, now_us)
                raising += (name, due_us, event.SerializeToString())
            if raising:
                waiting = int(await self._run("raise", now_us, raising))
                self._failpoint("silence.after_raise")
                raised += len(raising) // 3
            if waiting:
                await self.flush()
            if len(found) < 2 * CHUNK:
                break
        if raised:
            took_ms = (time.time_ns() // 1000 - now_us) // 1000
            log.info("%d device(s) found silent, alarms raised and produced in %d ms", raised, took_ms)
        return True

    async def _rewatch(
        self, rules: tuple[Rule, ...], devices: Mapping[str, device_pb2.Device], now_us: int
    ) -> None:
        """What each rule watches, worked out again (the rules or the devices changed): the devices
        newly watched are due the rule's time from now; those a rule no longer watches, and the rules
        removed, are forgotten, their alarms cleared."""
        enabled = [d for d in devices.values() if d.state == device_pb2.DEVICE_STATE_ENABLED]
        before = self._watched
        self._watched = {
            rule.rule_id: frozenset(d.device_id for d in enabled if rule.watches(d.device_id, d.labels))
            for rule in rules
        }
        watch: list[object] = []
        for rule in rules:
            watch += (x for device_id in sorted(self._watched[rule.rule_id])
                      for x in (f"{rule.rule_id}|{device_id}", rule.silence_us))  # fmt: skip
        for first in range(0, len(watch), 2 * CHUNK):
            await self._run("watch", now_us, watch[first : first + 2 * CHUNK])
        due, alarmed = await self._run("fields", now_us)
        gone: list[str] = []
        for field in sorted({_text(f) for f in (*due, *alarmed)}):
            rule_id, _, device_id = field.partition("|")
            if rule_id in self._watched and device_id not in self._watched[rule_id]:
                gone += (field, "unwatched")
            elif rule_id in before and rule_id not in self._watched:
                # A rule it knew, deleted or disabled since. (One it never knew may be newer than its
                # rules: another processor's to forget.)
                gone += (field, "rule removed")
        for first in range(0, len(gone), 2 * CHUNK):
            await self._run("unwatch", now_us, gone[first : first + 2 * CHUNK])
        watching = len(watch) // 2
        if watching != self._watching or gone:
            log.info("silence rules watch %d device(s); %d forgotten", watching, len(gone) // 2)
        self._watching = watching

    async def flush(self) -> None:
        """Produces the pending entries, then takes them off the list (one flush at a time here;
        another processor's at once produces the same events, stored once)."""
        async with self._flushing:
            entries: list[bytes] = await self._run("pending", 0)
            if not entries:
                return
            await pending.produce_events(self._producer, self._topic, (produced(e) for e in entries))
            self._failpoint("silence.after_produce")
            for first in range(0, len(entries), CHUNK):
                await self._run("confirm", 0, entries[first : first + CHUNK])
            log.info("produced %d silence event(s)", len(entries))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
