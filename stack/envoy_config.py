"""Renders envoy/envoy.yaml for a deployment: listeners, admin, upstreams and the files it reads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from runtime.identity import TIERS
from stack.settings import ROOT

TEMPLATE = ROOT / "envoy" / "envoy.yaml"
# Upstreams a deployment may not have: without an address, their routes are left out.
OPTIONAL_UPSTREAMS = {"prometheus"}
# Envoy's token buckets refill this often (its minimum is 50 ms): small steps, not a jump a second.
FILL_INTERVAL_S = 0.05


def render(
    *,
    tls: tuple[str, int],
    plaintext: tuple[str, int] | None,
    admin: tuple[str, int],
    upstreams: Mapping[str, tuple[str, int]],
    descriptor: Path | str,
    certificate: Path | str,
    private_key: Path | str,
    jwks: Path | str,
    client_ca: Path | str | None,
    template: Path = TEMPLATE,
) -> str:
    """envoy/envoy.yaml with the given addresses and files; upstreams maps a service to (host, port).
    `plaintext` None leaves out the plaintext listener; `client_ca` None, device certificates; an
    optional upstream left out of `upstreams`, its routes.

    A cluster named after a service (`receiver`), or after it and a role (`receiver-calls`), gets
    that service's address.
    """
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["admin"]["address"]["socket_address"] = _address(admin)
    listeners = {listener["name"]: listener for listener in config["static_resources"]["listeners"]}
    listeners["tls"]["address"]["socket_address"] = _address(tls)
    if plaintext is None:
        del listeners["plaintext"]
    else:
        listeners["plaintext"]["address"]["socket_address"] = _address(plaintext)
    config["static_resources"]["listeners"] = list(listeners.values())
    (chain,) = listeners["tls"]["filter_chains"]
    tls_context = chain["transport_socket"]["typed_config"]["common_tls_context"]
    (certificates,) = tls_context["tls_certificates"]
    certificates["certificate_chain"] = {"filename": str(certificate)}
    certificates["private_key"] = {"filename": str(private_key)}
    if client_ca is None:
        del tls_context["validation_context"]
    else:
        tls_context["validation_context"]["trusted_ca"] = {"filename": str(client_ca)}
    for listener in listeners.values():
        for http_filter in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]:
            typed = http_filter["typed_config"]
            if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
                typed["proto_descriptor"] = str(descriptor)
            elif http_filter["name"] == "envoy.filters.http.jwt_authn":
                for provider in typed["providers"].values():
                    provider["local_jwks"] = {"filename": str(jwks)}
            elif http_filter["name"] == "envoy.filters.http.local_ratelimit":
                typed["descriptors"] = _tier_descriptors()
    clusters = config["static_resources"]["clusters"]
    services = {c["name"].partition("-")[0] for c in clusters}
    if not services - OPTIONAL_UPSTREAMS <= set(upstreams) <= services:
        raise ValueError(f"upstreams {sorted(upstreams)} do not match services {sorted(services)}")
    clusters = _without_upstreams(listeners, clusters, services - set(upstreams))
    config["static_resources"]["clusters"] = clusters
    for cluster in clusters:
        host, port = upstreams[cluster["name"].partition("-")[0]]
        cluster["type"] = "STATIC" if _is_ip(host) else "STRICT_DNS"
        endpoint = {"endpoint": {"address": {"socket_address": _address((host, port))}}}
        cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [endpoint]}]
    return yaml.dump(config, Dumper=_NoAliases, sort_keys=False)


def _without_upstreams(
    listeners: Mapping[str, dict[str, Any]], clusters: list[dict[str, Any]], absent: set[str]
) -> list[dict[str, Any]]:
    """The clusters but those of `absent` services, whose routes go from every listener too."""
    gone = {c["name"] for c in clusters if c["name"].partition("-")[0] in absent}
    for listener in listeners.values():
        route_config = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        (host,) = route_config["virtual_hosts"]
        host["routes"] = [r for r in host["routes"] if r.get("route", {}).get("cluster") not in gone]
    return [c for c in clusters if c["name"] not in gone]


def _tier_descriptors() -> list[dict[str, Any]]:
    """A bucket per token (the empty value: one per distinct token id), sized by its tier."""
    return [
        {
            "entries": [{"key": "tier", "value": name}, {"key": "token", "value": ""}],
            "token_bucket": {
                "max_tokens": tier.burst,
                "tokens_per_fill": max(1, round(tier.rate * FILL_INTERVAL_S)),
                "fill_interval": f"{FILL_INTERVAL_S}s",
            },
        }
        for name, tier in TIERS.items()
    ]


def _address(host_port: tuple[str, int]) -> dict[str, Any]:
    return {"address": host_port[0], "port_value": host_port[1]}


def _is_ip(host: str) -> bool:
    return all(part.isdigit() for part in host.split(".")) and host.count(".") == 3


class _NoAliases(yaml.SafeDumper):
    """The listeners share parts of the template (YAML anchors); written out in full, each reads alone."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
