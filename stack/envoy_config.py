"""Renders envoy/envoy.yaml for a deployment: listeners, admin, upstreams and the files it reads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.identity import TIERS
from stack.settings import ROOT

TEMPLATE = ROOT / "envoy" / "envoy.yaml"
# The jwt_authn filter's configuration, a file of its own that Envoy watches (ECDS).
JWT_AUTHN_TEMPLATE = ROOT / "envoy" / "jwt_authn.yaml"
# Upstreams a deployment may not have: without an address, their routes are left out.
OPTIONAL_UPSTREAMS = {"prometheus"}
# Envoy's token buckets refill this often (its minimum is 50 ms): small steps, not a jump a second.
FILL_INTERVAL_S = 0.05

# The type of a file Envoy serves, by its extension; a file of another extension is refused (render
# raises) rather than served with a guessed type.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".yaml": "application/yaml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# Envoy answers these routes itself, before any filter but the router: no transcoding, and no token
# on the TLS port (the files hold no data; what they fetch from the API still needs one).
STATIC_FILTERS_OFF = (
    "envoy.filters.http.buffer",
    "envoy.filters.http.grpc_web",
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.rbac",
    "envoy.filters.http.local_ratelimit",
    "envoy.filters.http.decompressor",
    "envoy.filters.http.grpc_json_transcoder",
)
# Envoy has no conditional answers for its direct responses (no ETag, no 304): a browser asks again
# each time, and a page never runs with a stale script after an upgrade.
STATIC_HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
# Envoy refuses a configuration with a direct response larger than this, unless the route
# configuration's max_direct_response_body_size_bytes allows more.
DIRECT_RESPONSE_DEFAULT_MAX = 4096


@dataclass(frozen=True)
class StaticSite:
    """A directory of files that Envoy serves itself, read into memory when it starts.

    Every file under `directory` is served at `prefix` + its path there; each of `pages` (a path, or
    a prefix when it ends in `*`) is answered with one of those files, named by that path. `headers`
    go with every answer. `served_from` is where Envoy finds the directory when it is not where it is
    listed (in an image).
    """

    directory: Path
    prefix: str
    pages: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    served_from: Path | None = None


# The web console (console/): its scripts, styles and vendored uPlot under /console/, and the paths
# of its pages, which all load index.html (the page's script reads the path). None of these clashes
# with the API's (/v1/, /api/v1/, /metrics.v1.*, /grpc.*), /prometheus/ or the API's page (/docs).
CONSOLE = StaticSite(
    directory=ROOT / "console" / "site",
    prefix="/console/",
    pages={
        "/": "index.html",
        "/alarms": "index.html",
        "/devices": "index.html",
        "/events": "index.html",
        "/groups": "index.html",
        "/rules": "index.html",
        "/rules/*": "index.html",
        "/health": "index.html",
        "/sensors/*": "index.html",
        "/subscriptions": "index.html",
    },
    # Its own scripts, styles and images only, and only its own origin's API: no CDN, no inline code.
    headers={
        "content-security-policy": "default-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'",
        "referrer-policy": "no-referrer",
    },
)


# The HTTP API's page (apidocs/): Swagger UI at /docs over the OpenAPI document that `make proto`
# writes (gen/openapi.yaml, put in the site by `make run`), which is also /openapi.yaml.
API_DOCS = StaticSite(
    directory=ROOT / "apidocs" / "site",
    prefix="/docs/",
    pages={"/docs": "index.html", "/docs/": "index.html", "/openapi.yaml": "openapi.yaml"},
    # As the console's, but Swagger UI's stylesheet draws its icons from data: URLs.
    headers={
        "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        "referrer-policy": "no-referrer",
    },
)


def render(
    *,
    tls: tuple[str, int],
    plaintext: tuple[str, int] | None,
    admin: tuple[str, int],
    upstreams: Mapping[str, Sequence[tuple[str, int]]],
    descriptor: Path | str,
    certificate: Path | str,
    private_key: Path | str,
    jwt_authn: Path | str,
    client_ca: Path | str | None,
    sites: Sequence[StaticSite] = (),
    template: Path = TEMPLATE,
) -> str:
    """envoy/envoy.yaml with the given addresses and files; upstreams maps a service to the (host,
    port) of each of its instances (Envoy balances over them, checks their health and ejects a dead one).
    `plaintext` None leaves out the plaintext listener; `client_ca` None, device certificates;
    an optional upstream left out of `upstreams`, its routes; `sites` are served on both listeners,
    without a token.

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
            typed = http_filter.get("typed_config", {})
            if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
                typed["proto_descriptor"] = str(descriptor)
            elif http_filter["name"] == "envoy.filters.http.jwt_authn":
                # Its configuration is the file jwt_authn_resource renders; Envoy watches its folder.
                source = http_filter["config_discovery"]["config_source"]["path_config_source"]
                source["path"] = str(jwt_authn)
                source["watched_directory"] = {"path": str(Path(jwt_authn).parent)}
            elif http_filter["name"] == "envoy.filters.http.local_ratelimit":
                typed["descriptors"] = _tier_descriptors()
    _add_static_routes(listeners, sites)
    clusters = config["static_resources"]["clusters"]
    services = {c["name"].partition("-")[0] for c in clusters}
    if not services - OPTIONAL_UPSTREAMS <= set(upstreams) <= services:
        raise ValueError(f"upstreams {sorted(upstreams)} do not match services {sorted(services)}")
    clusters = _without_upstreams(listeners, clusters, services - set(upstreams))
    config["static_resources"]["clusters"] = clusters
    for cluster in clusters:
        _point(cluster, upstreams[cluster["name"].partition("-")[0]])
    return yaml.dump(config, Dumper=_NoAliases, sort_keys=False)


def jwt_authn_resource(jwks: str) -> str:
    """The jwt_authn filter's configuration (envoy/jwt_authn.yaml) with this key set (JWKS JSON)."""
    resource: dict[str, Any] = yaml.safe_load(JWT_AUTHN_TEMPLATE.read_text())
    for provider in resource["resources"][0]["typed_config"]["providers"].values():
        provider["local_jwks"] = {"inline_string": jwks}
    return yaml.dump(resource, Dumper=_NoAliases, sort_keys=False)


def write_jwt_authn(path: Path, jwks: str) -> None:
    """Writes the filter's configuration for `jwks` where Envoy watches it: a new file moved into
    place (Envoy reads a file only once it is whole), and only when it changes."""
    text = jwt_authn_resource(jwks)
    if path.exists() and path.read_text() == text:
        return
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.chmod(new, 0o644)
    new.replace(path)


def _point(cluster: dict[str, Any], instances: Sequence[tuple[str, int]]) -> None:
    """Makes the cluster's endpoints the service's instances."""
    if not instances:
        raise ValueError(f"upstreams: {cluster['name']} has no instance")
    cluster["type"] = "STATIC" if all(_is_ip(host) for host, _ in instances) else "STRICT_DNS"
    endpoints = [{"endpoint": {"address": {"socket_address": _address(a)}}} for a in instances]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": endpoints}]


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


def _add_static_routes(listeners: Mapping[str, dict[str, Any]], sites: Sequence[StaticSite]) -> None:
    """Puts the routes of `sites` first on every listener, with room for their largest file."""
    routes: list[dict[str, Any]] = []
    largest = 0
    for site in sites:
        # Hidden files (a stamp, an editor's) are not served.
        files = sorted(
            relative.as_posix()
            for relative in (p.relative_to(site.directory) for p in site.directory.rglob("*") if p.is_file())
            if not any(part.startswith(".") for part in relative.parts)
        )
        if not files:
            raise ValueError(f"{site.directory}: no files to serve")
        missing = set(site.pages.values()) - set(files)
        if missing:
            raise ValueError(f"{site.directory}: pages name files it lacks: {sorted(missing)}")
        largest = max([largest, *((site.directory / name).stat().st_size for name in files)])
        served = site.served_from or site.directory
        headers = {**STATIC_HEADERS, **site.headers}
        paths = {site.prefix + name: name for name in files} | dict(site.pages)
        routes += [_static_route(path, served / name, headers) for path, name in paths.items()]
    for listener in listeners.values():
        route_config = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        (host,) = route_config["virtual_hosts"]
        # The listeners share one list of routes (a YAML anchor): a new list each, not the static
        # routes twice in the shared one.
        host["routes"] = [*routes, *host["routes"]]
        if largest > DIRECT_RESPONSE_DEFAULT_MAX:
            route_config["max_direct_response_body_size_bytes"] = largest


def _static_route(path: str, file: Path, headers: Mapping[str, str]) -> dict[str, Any]:
    """GET or HEAD of `path` (a prefix if it ends in `*`) answered with `file` by Envoy itself."""
    match: dict[str, Any] = {"prefix": path[:-1]} if path.endswith("*") else {"path": path}
    match["headers"] = [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}]
    add = {"content-type": _content_type(file.name), **headers}
    off = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    return {
        "match": match,
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in add.items()
        ],
        "typed_per_filter_config": dict.fromkeys(STATIC_FILTERS_OFF, off),
    }


def _content_type(name: str) -> str:
    suffix = Path(name).suffix
    if suffix not in CONTENT_TYPES:
        raise ValueError(f"{name}: no content type for {suffix or 'a file without an extension'}")
    return CONTENT_TYPES[suffix]


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
