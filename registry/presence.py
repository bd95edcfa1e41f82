"""Which devices have a connection open at an MQTT broker (Device.mqtt_connected), from the brokers'
own word: Mosquitto publishes its log on $SYS/broker/log/<level> (log_dest topic), and its notices
tell of every client that connects (client id and username) and of every way one goes (it closed the
connection, timed out, was kicked by the dynamic-security plugin...).

The registry keeps a persistent session at each broker, subscribed to the notices at QoS 1: what
happens while the registry is away waits at the broker. Each line is applied to
registry.mqtt_connections (a connection per broker and client id, under its username) before it is
acknowledged, lines in the order the broker wrote them. A broker that restarts loses its
connections without a line for each: its uptime tells the registry it started again, and every
connection recorded before the registry's session came back to it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass

import asyncpg
import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from runtime import postgres
from runtime.dynsec import Broker

log = logging.getLogger(__name__)
GMQTT_LOG = logging.getLogger("registry.gmqtt")
GMQTT_LOG.setLevel(logging.WARNING)

NOTICES = "$SYS/broker/log/N"
UPTIME = "$SYS/broker/uptime"
# The registry's session at every broker: one registry follows each broker's log.
CLIENT_ID = "metrics-registry-presence"
# How long a broker keeps the session (and the lines for it) while the registry is away.
SESSION_EXPIRY_S = 7 * 24 * 3600
RECONNECT_S = 1.0
RETRY_S = 1.0
# A broker whose start, by its uptime, moved later than this started again: the figure is whole
# seconds, and the one a new subscription gets may be a sys_interval old (5 s, stack/mosquitto.py).
RESTART_MARGIN_US = 10_000_000

# Mosquitto 2.0's notices (src/handle_connect.c, src/loop.c); a line's time stamp comes before.
CONNECTED = re.compile(
    r"New client connected from \S+ as (?P<client>.+) \(p\d+, c\d+, k\d+(?:, u'(?P<user>.*)')?\)\.$"
)
DISCONNECTED = re.compile(
    r"Client (?P<client>.+) (?:closed its connection|disconnected|disconnected, not authorised"
    r"|disconnected due to [^.]+|disconnected: .+|has exceeded timeout, disconnecting"
    r"|been disconnected by administrative action)\.$"
    r"|Socket error on client (?P<socket>.+), disconnecting\.$"
    r"|Bad socket read/write on client (?P<bad>.+): .+$"
)


@dataclass(frozen=True)
class Connected:
    client_id: str
    device_id: str


@dataclass(frozen=True)
class Disconnected:
    client_id: str


def parse(line: str) -> Connected | Disconnected | None:
    """What a notice says of a connection: a device connected (a username given), a client went, or
    nothing (another notice, or a connection without a username)."""
    if found := CONNECTED.search(line):
        return Connected(found["client"], found["user"]) if found["user"] else None
    if found := DISCONNECTED.search(line):
        return Disconnected(found["client"] or found["socket"] or found["bad"])
    return None


def uptime_s(payload: bytes) -> int | None:
    """$SYS/broker/uptime's figure ("123 seconds")."""
    figure, _, unit = payload.decode(errors="replace").partition(" ")
    return int(figure) if figure.isdigit() and unit == "seconds" else None


class BrokerLog:
    """The registry's session at one broker, and its log applied to the table."""

    def __init__(self, broker: Broker, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        self.broker = broker
        self._name = str(broker)
        self._pool = pool
        self._stop = stop
        # Lines received, in order, with what acknowledges each once it is applied.
        self._lines: list[tuple[str, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._start_us: int | None = None  # the broker's start as last recorded
        self._session_since_us = 0  # when the session's current connection began
        self.client = gmqtt.Client(
            CLIENT_ID, clean_session=False, optimistic_acknowledgement=False,
            session_expiry_interval=SESSION_EXPIRY_S, logger=GMQTT_LOG,
        )  # fmt: skip
        self.client.set_auth_credentials(broker.username, broker.password)
        self.client.set_config({"reconnect_retries": -1, "reconnect_delay": RECONNECT_S})
        self.client.on_connect = self._connected
        self.client.on_message = self._message

    async def run(self) -> None:
        """Connects (again while it fails), then applies the lines as they come, until stopped."""
        async with self._pool.acquire() as conn:
            self._start_us = await conn.fetchval(
                "SELECT start_time FROM mqtt_brokers WHERE broker = $1", self._name
            )
        while not self._stop.is_set():
            try:
                await self.client.connect(
                    self.broker.host, self.broker.port, ssl=self.broker.tls, version=MQTTv50, keepalive=30
                )
                break
            except (OSError, TimeoutError) as exc:
                log.warning("MQTT broker %s (connection log): %s; trying again", self._name, exc)
                await asyncio.sleep(RECONNECT_S)
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            lines, self._lines = self._lines, []
            if lines:
                await self._apply(lines)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()

    def _connected(self, client: gmqtt.Client, flags: int, rc: int, properties: object) -> None:
        self._session_since_us = postgres.now_us()
        client.subscribe([gmqtt.Subscription(NOTICES, qos=1), gmqtt.Subscription(UPTIME, qos=0)])
        log.info("following the connection log of %s (session present: %s)", self._name, bool(flags))

    async def _message(
        self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: object
    ) -> int:
        """A coroutine: gmqtt acknowledges the line with what it returns, once it returns."""
        if topic == UPTIME:
            if (seconds := uptime_s(payload)) is not None:
                await self._started(postgres.now_us() - seconds * 1_000_000)
            return 0
        applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.append((payload.decode(errors="replace"), applied))
        self._wake.set()
        await applied
        return 0

    async def _apply(self, lines: list[tuple[str, asyncio.Future[None]]]) -> None:
        """The lines' connections and departures, in one transaction (tried again until it is done)."""
        now = postgres.now_us()
        changes = [change for line, _ in lines if (change := parse(line)) is not None]
        while changes:
            try:
                async with postgres.transaction(self._pool) as conn:
                    for change in changes:
                        if isinstance(change, Connected):
                            await conn.execute(
                                "INSERT INTO mqtt_connections (broker, client_id, device_id, connect_time) "
                                "VALUES ($1, $2, $3, $4) ON CONFLICT (broker, client_id) DO UPDATE SET "
                                "device_id = excluded.device_id, connect_time = excluded.connect_time",
                                self._name, change.client_id, change.device_id, now,
                            )  # fmt: skip
                        else:
                            await conn.execute(
                                "DELETE FROM mqtt_connections WHERE broker = $1 AND client_id = $2",
                                self._name, change.client_id,
                            )  # fmt: skip
                break
            except postgres.OUTAGE as exc:
                if self._stop.is_set():
                    return  # not acknowledged: the broker sends the lines again
                log.warning("connection log of %s not recorded (%s); trying again", self._name, exc)
                await asyncio.sleep(RETRY_S)
        for _, applied in lines:
            if not applied.done():
                applied.set_result(None)

    async def _started(self, start_us: int) -> None:
        """The broker's start, by its uptime: if it is later than recorded, the broker started again
        and the connections recorded before the session came back are gone."""
        if self._start_us is not None and start_us <= self._start_us + RESTART_MARGIN_US:
            return
        cutoff = self._session_since_us
        with contextlib.suppress(*postgres.OUTAGE):  # the next figure tries again
            async with postgres.transaction(self._pool) as conn:
                await conn.execute(
                    "INSERT INTO mqtt_brokers (broker, start_time) VALUES ($1, $2) "
                    "ON CONFLICT (broker) DO UPDATE SET start_time = excluded.start_time",
                    self._name, start_us,
                )  # fmt: skip
                gone = await conn.execute(
                    "DELETE FROM mqtt_connections WHERE broker = $1 AND connect_time < $2", self._name, cutoff
                )
            if self._start_us is not None:
                log.info("MQTT broker %s started again: %s connection(s) from before dropped", self._name,
                         gone.split()[-1])  # fmt: skip
            self._start_us = start_us
