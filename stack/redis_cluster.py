"""A Redis Cluster on this machine: N redis-server processes, a master and its replicas per shard.

The cluster topology's (`make run-cluster`: supervisord runs the nodes, `form` makes them a cluster)
and the tests' (tests/redis_cluster.py: LocalCluster runs its own nodes). Each node has its own
folder (config, nodes.conf, append-only file) and an explicit bus port (`cluster-port`: port + 10000,
Redis's default, overflows above 55535), then `redis-cli --cluster create` gives the shards their
slots and replicas, and the cluster is ready once every node says `cluster_state:ok` and every
master's replicas have made their first sync (WAIT counts only those). With `users` (ACL lines) the
default user is off, and the nodes replicate and are administered as `admin_user`, whose password is
`admin_password`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stack import access, credentials, prepare
from stack.settings import StackSettings
from stack.system import SetupError, say

# The cluster topology's: 6 nodes are 3 masters with a replica each, the 16,384 slots in three ranges.
REPLICAS_PER_MASTER = 1


@dataclass
class Node:
    port: int
    bus_port: int
    folder: Path
    # The node's process when LocalCluster started it; None for a node something else runs.
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is None or self.process.poll() is None


@dataclass
class LocalCluster:
    """`ports`: one per node; masters = len(ports) // (replicas + 1)."""

    ports: Sequence[int]
    folder: Path
    replicas: int = 1
    # How long a master may not answer before its replica takes over.
    node_timeout_ms: int = 2000
    # ACL lines ("user admin on #<sha256> ~* &* +@all"); empty: no ACL, no password.
    users: Sequence[str] = ()
    admin_user: str = "admin"
    admin_password: str = ""
    # The bus port of a node: its port minus this (port + 10000 overflows above 55535).
    bus_offset: int = -10000
    nodes: list[Node] = field(default_factory=list)

    def start(self, timeout: float = 60) -> None:
        """Starts every node, creates the cluster, and returns once every node says it is ok."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.nodes = [Node(p, p + self.bus_offset, self.folder / str(p)) for p in self.ports]
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self._wait(lambda n=node: self.cli(n, "PING", check=False).strip() == "PONG", timeout, "PONG")
        self.create(timeout)

    def create(self, timeout: float = 60) -> None:
        """Makes the running nodes one cluster; returns once it is ok and the replicas are in sync."""
        create = ["--cluster", "create", *(n.address for n in self.nodes)]
        self._cli_run(self.nodes[0], [*create, "--cluster-replicas", str(self.replicas), "--cluster-yes"])
        self.ready(timeout)

    def ready(self, timeout: float = 60) -> None:
        """Returns once every node says the cluster is ok and every master's replicas are in sync."""
        self.wait_ok(timeout)
        for master in self.masters():
            self.wait_replicas(master, timeout)

    def start_node(self, node: Node) -> None:
        """Starts (or restarts, with its nodes.conf and data) one node."""
        node.folder.mkdir(parents=True, exist_ok=True)
        config = [
            "bind 127.0.0.1",
            f"port {node.port}",
            f"cluster-port {node.bus_port}",
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self.node_timeout_ms}",
            f"dir {node.folder}",
            "appendonly yes",
            "save ''",
            f"logfile {node.folder / 'redis.log'}",
        ]
        if self.users:
            (node.folder / "users.acl").write_text("".join(line + "\n" for line in self.users))
            config += [
                f"aclfile {node.folder / 'users.acl'}",
                f"masteruser {self.admin_user}",
                f"masterauth {self.admin_password}",
            ]
        conf = node.folder / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(line + "\n" for line in config))
        node.process = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)

    def kill(self, node: Node) -> None:
        """kill -9 of one node."""
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(10)

    def stop(self) -> None:
        """Stops every node it started (SIGTERM by PID, then SIGKILL after 10 s)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(10)

    def wait_ok(self, timeout: float = 60) -> None:
        """Returns once every running node says cluster_state:ok."""
        for node in self.nodes:
            if node.running:
                self._wait(lambda n=node: "cluster_state:ok" in self.cli(n, "CLUSTER", "INFO", check=False),
                           timeout, f"{node.address}: cluster_state:ok")  # fmt: skip

    def wait_replicas(self, master: Node, timeout: float = 60) -> None:
        """Returns once `master` has `replicas` replicas in sync (state online; a replica that has
        just joined is not until its first sync is done), so that WAIT can be satisfied."""

        def synced() -> bool:
            info = self.cli(master, "INFO", "replication", check=False)
            return info.count("state=online") >= self.replicas

        self._wait(synced, timeout, f"{master.address}: {self.replicas} replica(s) in sync")

    def info(self, node: Node) -> dict[str, str]:
        """CLUSTER INFO of a node."""
        text = self.cli(node, "CLUSTER", "INFO")
        return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)

    def role(self, node: Node) -> str:
        """master or slave, as the node says."""
        return self.cli(node, "ROLE").split("\n", 1)[0].strip()

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.running and self.role(n) == "master"]

    def replica_of(self, master: Node) -> Node:
        """The running replica of `master`."""
        node_id = self.cli(master, "CLUSTER", "MYID").strip()
        for line in self.cli(master, "CLUSTER", "REPLICAS", node_id).splitlines():
            address = line.split()[1].split("@")[0]
            for node in self.nodes:
                if node.address == address and node.running:
                    return node
        raise LookupError(f"{master.address} has no running replica")

    def wait_master(self, node: Node, timeout: float = 60) -> None:
        """Returns once `node` is a master (a replica promoted in a failover) and the cluster is ok."""
        self._wait(lambda: self.role(node) == "master", timeout, f"{node.address} to be a master")
        self.wait_ok(timeout)

    def cli(self, node: Node, *command: str, check: bool = True) -> str:
        return self._cli_run(node, list(command), check=check)

    def _cli_run(self, node: Node, args: list[str], check: bool = True) -> str:
        env = dict(os.environ)
        auth = []
        if self.admin_password:
            auth = ["--user", self.admin_user]
            env["REDISCLI_AUTH"] = self.admin_password
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(node.port), *auth, *args],
            capture_output=True, text=True, env=env, check=False, timeout=60,
        )  # fmt: skip
        if check and (result.returncode != 0 or result.stdout.startswith(("ERR", "NOPERM", "WRONGPASS"))):
            command = " ".join(args)
            raise RuntimeError(f"redis-cli {command} on {node.address}: {result.stdout}{result.stderr}")
        return result.stdout

    @staticmethod
    def _wait(condition: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: no {what} within {timeout:.0f} s")
            time.sleep(0.05)


def form(settings: StackSettings, timeout: float = 60) -> None:
    """The cluster topology's nodes (run by supervisord) made one cluster, unless they are one already;
    returns once it is ready."""
    admin = credentials.REDIS_ADMIN
    cluster = LocalCluster(
        [n.port for n in settings.redis_nodes], settings.state_dir / "redis",
        replicas=REPLICAS_PER_MASTER, admin_user=admin.user, admin_password=access.password(settings, admin),
    )  # fmt: skip
    cluster.nodes = [
        Node(n.port, n.bus_port, prepare.redis_node_dir(settings, n)) for n in settings.redis_nodes
    ]
    known = [int(cluster.info(node)["cluster_known_nodes"]) for node in cluster.nodes]
    if all(k == 1 for k in known):
        say(f"Making the Redis Cluster ({len(known)} nodes, {REPLICAS_PER_MASTER} replica per master)")
        cluster.create(timeout)
    elif any(k != len(known) for k in known):
        each = ", ".join(f"{n.port}: {k}" for n, k in zip(cluster.nodes, known, strict=True))
        raise SetupError(
            f"the Redis nodes know different clusters (nodes each knows: {each}); `make stop`, then "
            f"remove {settings.state_dir / 'redis'} to make it again (its data is lost)"
        )
    else:
        cluster.ready(timeout)
