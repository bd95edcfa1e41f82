"""The cluster topology's Redis Cluster: its nodes made one cluster of masters with a replica each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from stack import access, credentials
from stack.settings import StackSettings
from stack.system import SetupError, say

# Every master has one replica: 6 nodes are 3 masters, the 16,384 slots in three ranges.
REPLICAS_PER_MASTER = 1


async def form(settings: StackSettings, deadline_s: float = 60) -> None:
    """Joins the nodes into one cluster unless they are one already; returns once every node says
    the cluster is ok (every slot served)."""
    ports = [node.port for node in settings.redis_nodes]
    states = await asyncio.gather(*(_cluster_info(settings, port) for port in ports))
    if all(int(s["cluster_known_nodes"]) == 1 for s in states):
        say(f"Making the Redis Cluster ({len(ports)} nodes, {REPLICAS_PER_MASTER} replica per master)")
        admin = credentials.REDIS_ADMIN
        result = await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "--user", admin.user, "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in ports),
             "--cluster-replicas", str(REPLICAS_PER_MASTER), "--cluster-yes"],
            # The password by environment, not in the arguments that `ps` shows.
            env={**os.environ, "REDISCLI_AUTH": access.password(settings, admin)},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise SetupError(f"making the Redis Cluster failed:\n{result.stdout}{result.stderr}")
    elif any(int(s["cluster_known_nodes"]) != len(ports) for s in states):
        known = ", ".join(
            f"{port}: {s['cluster_known_nodes']}" for port, s in zip(ports, states, strict=True)
        )
        raise SetupError(
            f"the Redis nodes know different clusters (nodes each knows: {known}); "
            f"`make stop`, then remove {settings.state_dir / 'redis'} to make it again (its data is lost)"
        )
    until = time.monotonic() + deadline_s
    while True:
        states = await asyncio.gather(*(_cluster_info(settings, port) for port in ports))
        if all(s["cluster_state"] == "ok" and int(s["cluster_known_nodes"]) == len(ports) for s in states):
            return
        if time.monotonic() > until:
            raise SetupError(f"the Redis Cluster is not ok after {deadline_s:.0f} s (make logs)")
        await asyncio.sleep(0.2)


async def _cluster_info(settings: StackSettings, port: int) -> dict[str, str]:
    client = access.redis_node(settings, port, socket_timeout=5, socket_connect_timeout=2)
    try:
        text = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
    text = text.decode() if isinstance(text, bytes) else str(text)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
