"""A device at the MQTT broker, as the field's Python devices are written (paho-mqtt 2, MQTT 5): it
connects, publishes at QoS 1 and learns each PUBACK's reason code (0: the broker holds the message;
0x87: not authorized) and which broker gave it. Given several brokers' ports (Mosquitto has no
clustering: a device is given each), it moves to the next when its connection breaks or a broker
will not have it."""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

SUCCESS = 0
NOT_AUTHORIZED = 0x87


class Refused(Exception):
    """The broker refused the connection; the message is its reason."""


class Device:
    def __init__(
        self,
        port: int | Sequence[int],
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        client_id: str | None = None,
    ) -> None:
        self._ports = [port] if isinstance(port, int) else list(port)
        self._at = 0
        self._closing = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"device-{uuid.uuid4().hex[:10]}",
            protocol=paho.MQTTv5,
        )  # fmt: skip
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca is not None:
            self._client.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        self._lock = threading.Lock()
        self._acks: dict[int, tuple[ReasonCode, int]] = {}
        self._acked = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._refusal: str | None = None
        # How often the broker let it in: paho connects again by itself when the connection breaks.
        self.connections = 0
        # Set when the connection ends (the broker's reason in `disconnect_reason`).
        self.disconnected = threading.Event()
        self.disconnect_reason: str | None = None
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._next_broker

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        else:
            self.connections += 1
        self._connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        with self._acked:
            self._acks[mid] = (reason, self._client.port)
            self._acked.notify_all()

    async def connect(self, within_s: float = 10) -> None:
        """Raises Refused with the broker's reason if it will not have the device."""
        await asyncio.to_thread(self._client.connect, "127.0.0.1", self._ports[0], 30)
        self._client.loop_start()
        if not await asyncio.to_thread(self._connected.wait, within_s):
            raise TimeoutError("no CONNACK")
        if self._refusal is not None:
            self._client.loop_stop()
            raise Refused(self._refusal)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.disconnect_reason = str(reason)
        self.disconnected.set()
        self._next_broker()

    def _next_broker(self, *_: Any) -> None:
        """paho connects again by itself, to the port it has: with several, it is given the next."""
        if len(self._ports) > 1 and not self._closing:
            self._at = (self._at + 1) % len(self._ports)
            self._client.connect_async("127.0.0.1", self._ports[self._at], 30)

    async def publish(self, topic: str, payload: bytes | str, within_s: float = 30) -> int:
        """Publishes at QoS 1; the PUBACK's reason code."""
        return (await self.publish_to(topic, payload, within_s))[0]

    async def publish_to(self, topic: str, payload: bytes | str, within_s: float = 30) -> tuple[int, int]:
        """Publishes at QoS 1; the PUBACK's reason code, and the port of the broker that sent it (paho
        sends again, once connected again, what had none)."""
        info = self._client.publish(topic, payload, qos=1)
        return await asyncio.to_thread(self._wait, info.mid, within_s)

    def _wait(self, mid: int, timeout: float) -> tuple[int, int]:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, timeout):
                raise TimeoutError(f"no PUBACK for message {mid}")
            reason, port = self._acks.pop(mid)
            return int(reason.value), port

    async def close(self) -> None:
        self._closing = True
        await asyncio.to_thread(self._client.disconnect)
        self._client.loop_stop()
