"""The cluster topology of `make run-cluster`: its parts, their ports, and what points at them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from runtime.settings import SettingsError
from stack import mosquitto, prometheus_config
from stack.parts import parts
from stack.settings import ROOT, SERVICES, StackSettings, load

CLUSTER = load("cluster")
SINGLE = load("single")


def test_the_cluster_has_its_own_state_and_the_single_node_keeps_its_own() -> None:
    assert (SINGLE.state_dir, CLUSTER.state_dir) == (ROOT / ".stack", ROOT / ".stack-cluster")


def test_an_unknown_topology_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOPOLOGY", "mesh")
    with pytest.raises(SettingsError, match="METRICS_TOPOLOGY: 'mesh' is not one of single, cluster"):
        load()


def test_every_part_of_either_topology_has_a_port_of_its_own() -> None:
    for settings in (SINGLE, CLUSTER):
        ports = Counter(settings.ports)
        assert [p for p, n in ports.items() if n > 1] == []
        assert {p.port for p in parts(settings)} <= set(ports)


def test_the_cluster_runs_three_brokers_six_redis_nodes_a_replica_and_two_of_each_service() -> None:
    kinds = Counter(p.what for p in parts(CLUSTER))
    assert (kinds["kafka"], kinds["redis"], kinds["postgres"], kinds["mosquitto"]) == (3, 6, 2, 2)
    assert {s: kinds[s] for s in SERVICES} == {
        "receiver": 2, "processor": 2, "saver": 2, "assessor": 2, "notifier": 1, "bridge": 2, "registry": 1,
    }  # fmt: skip
    assert Counter(p.what for p in parts(SINGLE)) == dict.fromkeys(
        ["postgres", "redis", "kafka", "mosquitto", *SERVICES, "envoy", "prometheus", "pg-exporter",
         "redis-exporter"], 1,
    )  # fmt: skip


def test_the_single_node_keeps_its_part_names() -> None:
    names = {p.name for p in parts(SINGLE)}
    assert {"postgres", "redis", "kafka", *SERVICES} <= names


def test_redis_nodes_are_clustered_with_bus_ports_below_65536() -> None:
    for part in (p for p in parts(CLUSTER) if p.what == "redis"):
        command = list(part.command)
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert int(command[command.index("--cluster-port") + 1]) < 65536
    assert "--cluster-enabled" not in next(p for p in parts(SINGLE) if p.name == "redis").command


def test_the_services_use_every_broker_and_the_assessor_the_replica() -> None:
    by_name = {p.name: p for p in parts(CLUSTER)}
    bootstrap = by_name["receiver-2"].env["METRICS_KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert bootstrap == [f"127.0.0.1:{b.port}" for b in CLUSTER.kafka_brokers]
    replica = by_name["assessor-1"].env["METRICS_ASSESSOR_REPLICA_DSN"]
    assert f":{CLUSTER.postgres_replica_port}/" in replica
    assert "METRICS_ASSESSOR_REPLICA_DSN" not in next(p for p in parts(SINGLE) if p.name == "assessor").env
    assert by_name["postgres-replica"].stage == "replica"
    processor = by_name["processor-2"].env
    assert (processor["METRICS_PROCESSOR_REDIS_CLUSTER"], processor["METRICS_PROCESSOR_REDIS_REPLICAS"]) == (
        "true", "1",
    )  # fmt: skip
    assert (
        "METRICS_PROCESSOR_REDIS_CLUSTER" not in next(p for p in parts(SINGLE) if p.name == "processor").env
    )


def test_every_bridge_subscribes_to_both_mqtt_brokers_each_with_its_own_listeners_and_state() -> None:
    by_name = {p.name: p for p in parts(CLUSTER)}
    first, second = CLUSTER.mqtt_brokers
    for bridge in ("bridge-1", "bridge-2"):
        brokers = by_name[bridge].env["METRICS_BRIDGE_BROKERS"].split(",")
        assert brokers == [f"127.0.0.1:{first.internal_port}", f"127.0.0.1:{second.internal_port}"]
    confs = [mosquitto.conf_path(CLUSTER, b) for b in (first, second)]
    assert [by_name[f"mosquitto-{n}"].command[-1] for n in (1, 2)] == [str(c) for c in confs]
    assert confs[0].parent != confs[1].parent
    for broker in (first, second):
        where = mosquitto.files(CLUSTER, broker)
        listeners = [
            line for line in mosquitto.render(broker, True, where).splitlines() if line.startswith("listener")
        ]
        assert listeners == [
            f"listener {p} 127.0.0.1" for p in (broker.tls_port, broker.internal_port, broker.port)
        ]
        assert f"persistence_location {where.state}/" in mosquitto.render(broker, True, where)
    assert second.tls_port == first.tls_port + 10


def test_brokers_are_one_quorum_replicating_three_times(tmp_path: Path) -> None:
    text = (ROOT / "stack" / "kafka" / "server.properties.in").read_text()
    voters = ",".join(f"{b.node_id}@127.0.0.1:{b.controller_port}" for b in CLUSTER.kafka_brokers)
    filled = text.format(node_id=2, voters=voters, port=1, proxied_port=3, proxy_port=4, controller_port=2, data_dir=tmp_path,
                         admin_password="x", replication_factor=3, min_insync_replicas=2)  # fmt: skip
    lines = dict(
        line.split("=", 1) for line in filled.splitlines() if "=" in line and not line.startswith("#")
    )
    assert lines["controller.quorum.voters"].count("@") == 3
    assert (lines["default.replication.factor"], lines["min.insync.replicas"]) == ("3", "2")


def test_prometheus_scrapes_every_instance_broker_and_redis_node() -> None:
    config = yaml.safe_load(prometheus_config.render(CLUSTER))
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert len(targets["processor"]) == 2 and len(targets["notifier"]) == 1
    assert len(targets["kafka"]) == 3 and len(targets["redis"]) == 6


def test_the_default_settings_are_the_single_node() -> None:
    assert StackSettings().topology == "single"
    assert len(StackSettings().kafka_brokers) == 1
