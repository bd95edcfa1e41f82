"""AlarmsService: the alarms of rules made at run time (routed by Envoy to here, with RulesService).

Alarms are listed from PostgreSQL: the saver's `alarms`, which it keeps from the events of their
changes (read through its grant), merged with the acts of operators that this service records in
its own `alarm_actions`; an active one's match count and latest match come from Redis, where the
counter script keeps them. An act is recorded in alarm_actions and produced as its event before it
commits; a clear by hand also ends the alarm in Redis, with its event stored in the same script (the
sensor's pending list, processor/stream/counters.py), so a crash at any point loses no event and
makes none twice.
Until that event is produced, `processor:cleared-by-hand` names the clear, and every processor
produces what the pending lists of the sensors it names hold when it starts.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaProducer

from metrics.v1 import alarms_service_pb2, alarms_service_pb2_grpc, event_pb2
from processor.stream import alarms, pending
from processor.stream.counters import CLEARED_BY_HAND, Counters, alarms_key, pending_key
from processor.stream.redis_nodes import RedisNodes
from runtime import paging, postgres
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Violation, grpc_errors
from runtime.failpoints import Failpoints
from runtime.identity import Identity, caller

SERVICE = alarms_service_pb2.DESCRIPTOR.services_by_name["AlarmsService"]
Context = grpc.aio.ServicerContext[Any, Any]
pb = alarms_service_pb2

ALARM_ID = re.compile(r"[0-9a-f]{32}")
COLUMNS = (
    "alarm_id, sensor_id, rule_id, metric_type, severity, threshold, raise_time, raise_value, match_count, "
    "last_match_time, last_match_value, clear_time, cleared_by, acknowledge_time, acknowledged_by"
)
# The alarms as shown: the saver's rows (kept from the events of their changes) merged with the acts
# of operators recorded here (alarm_actions), as the saver merges those acts' events once it has them.
ALARMS = """(
SELECT a.alarm_id, a.sensor_id, a.rule_id, a.metric_type, a.severity, a.threshold, a.raise_time,
       a.raise_value, greatest(a.match_count, h.match_count) AS match_count,
       greatest(a.last_match_time, h.last_match_time) AS last_match_time,
       CASE WHEN h.last_match_time > a.last_match_time THEN h.last_match_value
            ELSE a.last_match_value END AS last_match_value,
       coalesce(a.clear_time, h.clear_time) AS clear_time, coalesce(a.cleared_by, h.cleared_by) AS cleared_by,
       coalesce(a.acknowledge_time, h.acknowledge_time) AS acknowledge_time,
       coalesce(a.acknowledged_by, h.acknowledged_by) AS acknowledged_by
FROM alarms a LEFT JOIN alarm_actions h USING (alarm_id)
) AS alarm"""
# Who acknowledged or cleared an alarm on the plain-text door, where callers carry no token.
LOCAL_CALLER = "local"


class AlarmsApi(alarms_service_pb2_grpc.AlarmsServiceServicer):
    """`pool` None: this processor has no rules store (METRICS_PROCESSOR_RULES_TOPIC is empty)."""

    def __init__(
        self,
        pool: asyncpg.Pool | None,
        redis: RedisNodes,
        producer: AIOKafkaProducer,
        events_topic: str,
        failpoint: Failpoints | None = None,
    ) -> None:
        self._pool = pool
        self._failpoint = failpoint or Failpoints()
        self._redis = redis.client
        self._producer = producer
        self._events_topic = events_topic
        self._counters = Counters(redis)

    async def flush(self) -> None:
        """Produces the events of clears by hand that a crash kept from Kafka (at start)."""
        members = await self._redis.smembers(CLEARED_BY_HAND)
        for member in members:
            await self._produce_cleared(member.decode() if isinstance(member, bytes) else member)

    async def _produce_cleared(self, member: str) -> None:
        """Produces what the pending list of the sensor of a clear by hand holds, removes each entry
        once produced (by value: a round of the processor may be producing the same list), then
        the clear from the index."""
        sensor_id = member.partition("|")[0]
        entries: list[bytes] = await self._redis.lrange(pending_key(sensor_id), 0, -1)  # type: ignore[assignment]
        if entries:
            await pending.produce(self._producer, self._events_topic, entries)
            await self._counters.confirm([(sensor_id, entries)])
        await self._redis.srem(CLEARED_BY_HAND, member)

    @grpc_errors
    async def ListAlarms(self, request: pb.ListAlarmsRequest, context: Context) -> pb.ListAlarmsResponse:
        who = caller(context.invocation_metadata(), "read")
        pool = self._available()
        if who is not None and request.sensor_id:
            who.require_sensors([request.sensor_id])
        size = paging.page_size(request.page_size, 100, 1_000)
        conditions, args = _where(request, who)
        digest = paging.filters_digest("alarms", conditions, args)
        if position := paging.decode(request.page_token, digest, 2):
            args += position
            conditions.append(f"(raise_time, alarm_id) < (${len(args) - 1}, ${len(args)})")
        rows = await pool.fetch(
            f"SELECT {COLUMNS} FROM {ALARMS} WHERE {' AND '.join(conditions)} "  # noqa: S608 - ours
            f"ORDER BY raise_time DESC, alarm_id DESC LIMIT {size + 1}",
            *args,
        )
        response = pb.ListAlarmsResponse(alarms=await self._live([as_alarm(r) for r in rows[:size]]))
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = paging.encode(digest, last["raise_time"], last["alarm_id"])
        if request.count_by_severity and not request.page_token:
            conditions, args = _where(request, who, by_severity=False)
            counted = await pool.fetch(
                f"SELECT severity, count(*) AS count FROM {ALARMS} WHERE {' AND '.join(conditions)} "  # noqa: S608 - ours
                "GROUP BY severity ORDER BY severity",
                *args,
            )
            # Highest first: CRITICAL (1) ... WARNING (4), then those of rules without one (0).
            counted = sorted(counted, key=lambda r: r["severity"] or len(event_pb2.Severity.values()))
            response.severity_counts.extend(
                pb.SeverityCount(severity=r["severity"], count=r["count"]) for r in counted
            )
        return response

    @grpc_errors
    async def GetAlarm(self, request: pb.GetAlarmRequest, context: Context) -> event_pb2.Alarm:
        who = caller(context.invocation_metadata(), "read")
        async with self._available().acquire() as conn:
            alarm = await _stored(conn, request.alarm_id, who)
        (live,) = await self._live([alarm])
        return live

    @grpc_errors
    async def AcknowledgeAlarm(
        self, request: pb.AcknowledgeAlarmRequest, context: Context
    ) -> event_pb2.Alarm:
        who = caller(context.invocation_metadata(), "admin")
        async with self._available().acquire() as conn, conn.transaction():
            alarm = await _stored(conn, request.alarm_id, who, lock=True)
            (alarm,) = await self._live([alarm])
            if alarm.acknowledged:
                return alarm
            now = postgres.now_us()
            alarm.acknowledged = True
            alarm.acknowledged_by = _name(who)
            alarm.acknowledge_time.FromMicroseconds(now)
            await conn.execute(
                "UPDATE alarm_actions SET acknowledge_time = $2, acknowledged_by = $3 WHERE alarm_id = $1",
                alarm.alarm_id, now, alarm.acknowledged_by,
            )  # fmt: skip
            event = alarms.transition(alarm, alarms.ACKNOWLEDGED, alarm.last_match_value, now, now)
            await pending.produce(self._producer, self._events_topic, [event.SerializeToString()])
            return alarm

    @grpc_errors
    async def ClearAlarm(self, request: pb.ClearAlarmRequest, context: Context) -> event_pb2.Alarm:
        who = caller(context.invocation_metadata(), "admin")
        async with self._available().acquire() as conn, conn.transaction():
            alarm = await _stored(conn, request.alarm_id, who, lock=True)
            if alarm.state == event_pb2.ALARM_STATE_CLEARED:
                return alarm
            if not alarm.metric_type:  # a silence rule's (processor/stream/silence.py)
                raise FailedPrecondition(
                    f"alarm {alarm.alarm_id} is a silent device's: it clears when device "
                    f"{alarm.sensor_id!r} sends a reading again, or when it or its rule is removed"
                )
            key = alarms_key(alarm.sensor_id)
            state = await self._redis.hget(key, alarm.rule_id)
            active = alarms.Active.parse(state) if isinstance(state, bytes) else None
            if not isinstance(state, bytes) or active is None or active.alarm_id != alarm.alarm_id:
                # Its rule cleared it: the event that says so is on its way to this table.
                raise FailedPrecondition(
                    f"alarm {alarm.alarm_id} was just cleared by its rule; read it again in a moment"
                )
            now = postgres.now_us()
            event = alarms.cleared(active, _name(who), active.last_value, now, now)
            if alarm.acknowledged:  # known here, not in Redis
                event.alarm.acknowledged = True
                event.alarm.acknowledged_by = alarm.acknowledged_by
                event.alarm.acknowledge_time.CopyFrom(alarm.acknowledge_time)
            member = f"{alarm.sensor_id}|{alarm.alarm_id}"
            cleared_event = event.SerializeToString()
            if not await self._counters.clear_by_hand(member, alarm.rule_id, state, cleared_event):
                # (What an earlier attempt whose reply was lost stored, if any, is produced.)
                await self._produce_cleared(member)
                raise FailedPrecondition(
                    f"alarm {alarm.alarm_id} changed while it was being cleared; read it again in a moment"
                )
            self._failpoint("alarms.after_clear")  # ended in Redis, its event stored, not produced
            cleared = event.alarm
            await conn.execute(
                "UPDATE alarm_actions SET clear_time = $2, cleared_by = $3, match_count = $4, "
                "last_match_time = $5, last_match_value = $6 WHERE alarm_id = $1",
                alarm.alarm_id, now, cleared.cleared_by, cleared.match_count,
                cleared.last_match_time.ToMicroseconds(), cleared.last_match_value,
            )  # fmt: skip
        await self._produce_cleared(member)
        return cleared

    async def _live(self, stored: list[event_pb2.Alarm]) -> list[event_pb2.Alarm]:
        """The alarms with the match count and latest match of the active ones as Redis has them."""
        active = [a for a in stored if a.state == event_pb2.ALARM_STATE_ACTIVE]
        if active:
            async with self._redis.pipeline(transaction=False) as pipe:
                for alarm in active:
                    pipe.hget(alarms_key(alarm.sensor_id), alarm.rule_id)
                states = await pipe.execute()
            for alarm, state in zip(active, states, strict=True):
                if state is not None and (live := alarms.Active.parse(state)).alarm_id == alarm.alarm_id:
                    alarm.match_count = live.matches
                    alarm.last_match_value = live.last_value
                    alarm.last_match_time.FromMicroseconds(live.last_time_us)
        return stored

    def _available(self) -> asyncpg.Pool:
        if self._pool is None:
            raise FailedPrecondition(
                "this processor applies only the rules of its configuration, which raise no alarms "
                "(METRICS_PROCESSOR_RULES_TOPIC is empty)"
            )
        return self._pool


def _where(
    request: pb.ListAlarmsRequest, who: Identity | None, by_severity: bool = True
) -> tuple[list[str], list[Any]]:
    """The SQL conditions of the request's filters (that of severity only if `by_severity`), and
    their arguments."""
    if request.state not in event_pb2.AlarmState.values():
        raise InvalidArgument([Violation("state", f"{request.state} is not an alarm state")])
    if request.severity not in event_pb2.Severity.values():
        raise InvalidArgument([Violation("severity", f"{request.severity} is not a severity")])
    filters = _sensor_filters(request, who)
    if request.rule_id:
        filters.append(("rule_id = $?", request.rule_id))
    if request.severity and by_severity:
        filters.append(("severity = $?", request.severity))
    if request.HasField("start_time"):
        filters.append(("raise_time >= $?", request.start_time.ToMicroseconds()))
    if request.HasField("end_time"):
        filters.append(("raise_time < $?", request.end_time.ToMicroseconds()))
    conditions = ["true"]
    args: list[Any] = []
    for condition, value in filters:
        args.append(value)
        conditions.append(condition.replace("$?", f"${len(args)}"))
    if request.state == event_pb2.ALARM_STATE_ACTIVE:
        conditions.append("clear_time IS NULL")
    elif request.state == event_pb2.ALARM_STATE_CLEARED:
        conditions.append("clear_time IS NOT NULL")
    if request.HasField("acknowledged"):
        conditions.append(f"acknowledge_time IS {'NOT ' if request.acknowledged else ''}NULL")
    return conditions, args


def _sensor_filters(request: pb.ListAlarmsRequest, who: Identity | None) -> list[tuple[str, Any]]:
    """Which sensors: the one asked for, or those of the prefix asked for that the caller may see."""
    if request.sensor_id:
        return [("sensor_id = $?", request.sensor_id)]
    filters: list[tuple[str, Any]] = []
    if who is not None and not who.all_sensors:
        filters.append(("sensor_id ^@ ANY($?::text[])", list(who.sensor_prefixes)))
    if request.sensor_id_prefix:
        filters.append(("sensor_id ^@ $?", request.sensor_id_prefix))
    return filters


async def _stored(
    conn: asyncpg.Connection, alarm_id: str, who: Identity | None, lock: bool = False
) -> event_pb2.Alarm:
    if not ALARM_ID.fullmatch(alarm_id):
        raise InvalidArgument(
            [Violation("alarm_id", f"{alarm_id[:70]!r} is not an alarm id (32 hex digits)")]
        )
    if lock:
        # The row of its acts, made if need be, locked: one act at a time on an alarm.
        await conn.execute(
            "INSERT INTO alarm_actions (alarm_id) VALUES ($1) ON CONFLICT DO NOTHING", alarm_id
        )
        await conn.execute("SELECT FROM alarm_actions WHERE alarm_id = $1 FOR UPDATE", alarm_id)
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM {ALARMS} WHERE alarm_id = $1", alarm_id)  # noqa: S608 - ours
    if row is None:
        raise NotFound(f"no alarm {alarm_id!r}")
    if who is not None:
        who.require_sensors([row["sensor_id"]])
    return as_alarm(row)


def as_alarm(row: asyncpg.Record) -> event_pb2.Alarm:
    alarm = event_pb2.Alarm(
        alarm_id=row["alarm_id"], sensor_id=row["sensor_id"], rule_id=row["rule_id"],
        metric_type=row["metric_type"], severity=row["severity"], threshold=row["threshold"],
        raise_value=row["raise_value"], match_count=row["match_count"],
        last_match_value=row["last_match_value"],
        cleared_by=row["cleared_by"] or "", acknowledged=row["acknowledge_time"] is not None,
        acknowledged_by=row["acknowledged_by"] or "",
        state=event_pb2.ALARM_STATE_ACTIVE if row["clear_time"] is None else event_pb2.ALARM_STATE_CLEARED,
    )  # fmt: skip
    alarm.raise_time.FromMicroseconds(row["raise_time"])
    alarm.last_match_time.FromMicroseconds(row["last_match_time"])
    if row["clear_time"] is not None:
        alarm.clear_time.FromMicroseconds(row["clear_time"])
    if row["acknowledge_time"] is not None:
        alarm.acknowledge_time.FromMicroseconds(row["acknowledge_time"])
    return alarm


def _name(who: Identity | None) -> str:
    return who.subject if who is not None else LOCAL_CALLER
