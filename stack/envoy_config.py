"""Renders envoy/envoy.yaml for a deployment: listener, admin and upstream addresses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stack.settings import ROOT

TEMPLATE = ROOT / "envoy" / "envoy.yaml"


def render(
    *,
    listen: tuple[str, int],
    admin: tuple[str, int],
    upstreams: Mapping[str, tuple[str, int]],
    descriptor: Path | str,
    template: Path = TEMPLATE,
) -> str:
    """envoy/envoy.yaml with the given addresses; upstreams maps a service to (host, port).

    A cluster named after a service (`receiver`), or after it and a role (`receiver-calls`), gets
    that service's address.
    """
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["admin"]["address"]["socket_address"] = {"address": admin[0], "port_value": admin[1]}
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": listen[0], "port_value": listen[1]}
    for http_filter in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
            http_filter["typed_config"]["proto_descriptor"] = str(descriptor)
    clusters = config["static_resources"]["clusters"]
    services = {c["name"].partition("-")[0] for c in clusters}
    if set(upstreams) != services:
        raise ValueError(f"upstreams {sorted(upstreams)} do not match services {sorted(services)}")
    for cluster in clusters:
        host, port = upstreams[cluster["name"].partition("-")[0]]
        cluster["type"] = "STATIC" if _is_ip(host) else "STRICT_DNS"
        endpoint = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [endpoint]}]
    return yaml.safe_dump(config, sort_keys=False)


def _is_ip(host: str) -> bool:
    return all(part.isdigit() for part in host.split(".")) and host.count(".") == 3
