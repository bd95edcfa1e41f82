"""The processor's Redis: one server, or a Redis Cluster (METRICS_PROCESSOR_REDIS_CLUSTER).

Ordinary commands go through `client` (redis-py's plain client, or its cluster client, which routes
each command to the node serving its key's slot and follows MOVED/ASK). Scripts do not: a round's
scripts go to each node in one pipeline, on a plain connection to that node, every key a script
touches declared. On a single server one script takes the whole round. On a cluster a script may
declare keys of one hash slot only (Redis refuses declared keys of several slots with CROSSSLOT,
whatever the script's flags; `allow-cross-slot-keys` admits only undeclared keys, which a slot
migration could make fail half-way through a script), so a node gets one script per slot of the
round's sensors, all in one pipeline. `group` tells which sensors a node serves, from the cluster
client's slot map.

With `replicas` > 0, a write is confirmed only once that many replicas of its node have it: the
script and a `WAIT <replicas> <timeout>` go in one pipeline, on one connection (WAIT counts the
writes of its own connection). Fewer acknowledgements are an error like a lost connection, so the
caller does not commit; a replica promoted after its master was killed then holds everything the
processor committed. The cost: while a node has fewer replicas than that, its sensors' rounds fail
(and are read again) until a replica is back.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as errors
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

log = logging.getLogger(__name__)

# Errors after which the slot map may be stale or a node gone: refresh the map and try again.
TOPOLOGY_ERRORS = (
    errors.MovedError,
    errors.AskError,
    errors.TryAgainError,
    errors.ClusterDownError,
    errors.MasterDownError,
    errors.ReadOnlyError,  # a master demoted to a replica
    errors.ConnectionError,
    errors.TimeoutError,
)
T = TypeVar("T")
# The group of every sensor on a single server.
SINGLE = ""


class NotReplicated(errors.RedisError):
    """Fewer replicas than required acknowledged a write within the timeout: it may be lost in a
    failover, so it is not confirmed."""


class RedisNodes:
    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        url: str,
        password: str | None,
        replicas: int = 0,
        replica_timeout_ms: int = 2000,
        **options: Any,
    ) -> None:
        self.client = client
        self._url = url
        self._password = password
        self._options = options
        self.replicas = replicas
        self._replica_timeout_ms = replica_timeout_ms
        self._nodes: dict[str, aioredis.Redis] = {}

    @classmethod
    def connect(
        cls,
        url: str,
        password: str | None,
        cluster: bool = False,
        replicas: int = 0,
        replica_timeout_ms: int = 2000,
        **options: Any,
    ) -> RedisNodes:
        """`url` names the server, or with `cluster` one node of the cluster (the client learns the
        others from it); the user is the URL's, the password `password`."""
        client: aioredis.Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, password=password, **options)
        else:
            client = aioredis.Redis.from_url(url, password=password, **options)
        return cls(client, url, password, replicas, replica_timeout_ms, **options)

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    async def start(self) -> None:
        """Connects (learns the slot map of a cluster); raises while the server does not answer."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
        await self.client.ping()

    async def aclose(self) -> None:
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()
        await self.client.aclose()

    def group(self, sensors: Iterable[str]) -> dict[str, list[list[str]]]:
        """The sensors by the node that serves their keys and, on a cluster, by hash slot (a
        sensor's keys share the slot of `{<sensor>}`): a script declares keys of one slot only."""
        if not isinstance(self.client, RedisCluster):
            return {SINGLE: [list(sensors)]}
        manager = self.client.nodes_manager
        slots: dict[int, list[str]] = {}
        for sensor in sensors:
            slots.setdefault(key_slot(sensor.encode()), []).append(sensor)
        groups: dict[str, list[list[str]]] = {}
        for slot, members in slots.items():
            groups.setdefault(manager.get_node_from_slot(slot).name, []).append(members)
        return groups

    def node_of(self, key: str) -> str:
        """The node that serves `key`."""
        return next(iter(self.group([_hash_tag(key)])))

    async def refresh(self, reason: BaseException) -> None:
        """Reads the slot map again (after MOVED, a failover, a node gone)."""
        if isinstance(self.client, RedisCluster):
            log.warning("Redis Cluster: %s: %s; reading the slot map again", type(reason).__name__, reason)
            await self.client.nodes_manager.initialize()

    async def run_scripts(
        self, node: str, script: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Runs a script once per (keys, args) on `node`, in one pipeline (loading the script there
        first if it is not); with `replicas`, returns once that many replicas have their writes
        (else raises NotReplicated). Each call is atomic; a failed one fails the whole."""
        sha = script_sha(script)
        commands = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
        try:
            return await self._write(node, commands)
        except errors.NoScriptError:  # then no call ran
            await self._connection(node).script_load(script)
            return await self._write(node, commands)

    async def script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """A script on keys of one slot, on the node that serves them (as run_scripts)."""
        [reply] = await self.retried(lambda: self.run_scripts(self.node_of(keys[0]), script, [(keys, args)]))
        return reply

    async def write(self, key: str, *command: Any) -> Any:
        """Runs a command that writes `key` (only), as `script` does."""
        [reply] = await self.retried(lambda: self._write(self.node_of(key), [command]))
        return reply

    async def retried(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, and after a topology error on a cluster, once more with the slot map read
        again (a script is all or nothing: what it had applied is skipped the second time)."""
        try:
            return await attempt()
        except TOPOLOGY_ERRORS as exc:
            if not self.cluster:
                raise
            await self.refresh(exc)
            return await attempt()

    async def _write(self, node: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        connection = self._connection(node)
        if not self.replicas and len(commands) == 1:
            return [await connection.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
        async with connection.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            if self.replicas:
                pipe.execute_command("WAIT", self.replicas, self._replica_timeout_ms)
            replies = await pipe.execute()
        if self.replicas and (acknowledged := replies.pop()) < self.replicas:
            raise NotReplicated(
                f"{acknowledged} of {self.replicas} replica(s) of {node or 'the server'} acknowledged "
                f"the write within {self._replica_timeout_ms} ms"
            )
        return replies

    async def masters(self) -> list[aioredis.Redis]:
        """A plain client of every master (of the one server)."""
        if not isinstance(self.client, RedisCluster):
            return [self.client]
        return [self._connection(node.name) for node in self.client.get_primaries()]

    def _connection(self, node: str) -> aioredis.Redis:
        if node == SINGLE and not isinstance(self.client, RedisCluster):
            return self.client
        connection = self._nodes.get(node)
        if connection is None:
            parts = urlsplit(self._url)
            user = parts.netloc.rpartition("@")[0]
            netloc = f"{user}@{node}" if user else node
            connection = aioredis.Redis.from_url(
                urlunsplit(parts._replace(netloc=netloc)), password=self._password, **self._options
            )
            self._nodes[node] = connection
        return connection


@functools.cache
def script_sha(script: str) -> str:
    """What EVALSHA names a script by."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def _hash_tag(key: str) -> str:
    """What Redis hashes of `key`: the text between its first `{` and the next `}` if not empty."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


async def gather_all(*calls: Any) -> list[Any]:
    """Awaits every call, then raises the first failure (so none is left running)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
