"""Who calls: the verified claims of a caller's token, as Envoy passes them to the services.

Envoy's jwt_authn checks the token (signature, expiry, audience) on the TLS port and writes its
payload, base64url-encoded JSON, into IDENTITY_HEADER. A device may instead present a client
certificate of the CA Envoy trusts, whose URI SAN urn:metrics:sensors:<prefix> names the sensors it
writes (`make device-cert`), or urn:metrics:device:<device id>/<credential id> the registered device
it was issued to (DevicesService.IssueCertificate: the device's record says its sensors, and the
receivers refuse it as a token of the device once it is revoked); Envoy passes it in
CLIENT_CERT_HEADER (x-forwarded-client-cert), and such a device may only ingest, at the device
tier. A client can set neither header (Envoy drops or replaces both). A call with neither came
through the local plaintext port, or straight to a service's loopback port: the trusted inside,
allowed everything.

The claims this product reads (stack/tokens.py mints tokens with them):
  scope    space-separated: "ingest" (write readings), "read" (queries), "admin" (both)
  sensors  the sensor-id prefixes the token covers; "" covers every sensor
  tier     the rate-limit class, a key of TIERS
  jti      the token's id: one rate-limit bucket per token
  sub      who holds it (for logs)
  device   optional: the registered device the registry issued the token to (DevicesService.IssueToken,
           its jti the credential's id); the receiver refuses it while that device is disabled or
           not registered, or once the credential is revoked
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runtime.errors import PermissionDenied, Unauthenticated

IDENTITY_HEADER = "x-metrics-identity"
CLIENT_CERT_HEADER = "x-forwarded-client-cert"
DEVICE_URI_PREFIX = "urn:metrics:sensors:"
REGISTERED_DEVICE_URI_PREFIX = "urn:metrics:device:"
SCOPES = ("ingest", "read", "admin")


@dataclass(frozen=True)
class Tier:
    """A token bucket: `rate` calls (or stream messages) a second, up to `burst` at once."""

    rate: int
    burst: int


# Envoy's per-token buckets for calls (stack/envoy_config.py writes them) and the receiver's for
# stream messages. A device sends a reading every few seconds; a gateway speaks for many devices.
TIERS = {"device": Tier(rate=100, burst=200), "gateway": Tier(rate=10_000, burst=20_000)}


@dataclass(frozen=True)
class Identity:
    subject: str
    token_id: str
    scopes: frozenset[str]
    sensor_prefixes: tuple[str, ...]
    tier: Tier
    # The registered device the token or certificate is bound to; "" for none (an operator's token,
    # a certificate of `make device-cert`).
    device: str = ""

    def require(self, scope: str) -> None:
        """Raises PermissionDenied unless the token has `scope` (or admin)."""
        if scope not in self.scopes and "admin" not in self.scopes:
            have = " ".join(sorted(self.scopes)) or "none"
            raise PermissionDenied(f"this token's scopes ({have}) do not include {scope}")

    @property
    def all_sensors(self) -> bool:
        return "" in self.sensor_prefixes

    def covers(self, sensor_id: str) -> bool:
        return any(sensor_id.startswith(p) for p in self.sensor_prefixes)

    def require_sensors(self, sensor_ids: Iterable[str], field: str = "sensor_id") -> None:
        """Raises PermissionDenied naming the first sensor the token does not cover."""
        if self.all_sensors:
            return
        for sensor_id in sorted(sensor_ids):
            if not self.covers(sensor_id):
                covered = ", ".join(repr(p) for p in self.sensor_prefixes) or "none"
                raise PermissionDenied(
                    f"{field}: sensor {sensor_id!r} is not covered by this token "
                    f"(it covers sensor ids starting with {covered})"
                )


def of_metadata(metadata: Iterable[Any] | None) -> Identity | None:
    """The caller's identity from a call's metadata: its token's, else its device certificate's;
    None for the trusted inside."""
    certificate = None
    for key, value in metadata or ():
        if key == IDENTITY_HEADER:
            return parse(value if isinstance(value, str) else value.decode())
        if key == CLIENT_CERT_HEADER:
            certificate = value if isinstance(value, str) else value.decode()
    return None if certificate is None else parse_certificate(certificate)


def caller(metadata: Iterable[Any] | None, scope: str) -> Identity | None:
    """The caller of a call, who must hold `scope` (PermissionDenied); None for the trusted inside."""
    identity = of_metadata(metadata)
    if identity is not None:
        identity.require(scope)
    return identity


@functools.lru_cache(maxsize=65_536)
def parse_certificate(header: str) -> Identity:
    """The identity of a device certificate, from Envoy's x-forwarded-client-cert element
    (Hash=<hex>;URI=<uri>, values quoted when they hold , ; or =)."""
    fields = {}
    for part in header.split(";"):
        key, _, value = part.partition("=")
        fields[key.strip()] = value.strip().strip('"')
    uri = fields.get("URI", "")
    if uri.startswith(REGISTERED_DEVICE_URI_PREFIX):
        device, slash, credential = uri.removeprefix(REGISTERED_DEVICE_URI_PREFIX).partition("/")
        if not device or not slash or not credential:
            raise Unauthenticated(
                f"the client certificate's URI {uri!r} is not "
                f"{REGISTERED_DEVICE_URI_PREFIX}<device>/<credential>"
            )
        return Identity(
            subject=uri,
            token_id=credential,
            scopes=frozenset({"ingest"}),
            sensor_prefixes=("",),  # the device's record says which (runtime/devices.py)
            tier=TIERS["device"],
            device=device,
        )
    if not uri.startswith(DEVICE_URI_PREFIX):
        raise Unauthenticated(
            f"the client certificate names no sensors: its URI is {uri!r}, not {DEVICE_URI_PREFIX}<prefix>"
        )
    return Identity(
        subject=uri,
        token_id=f"certificate:{fields.get('Hash', uri)}",
        scopes=frozenset({"ingest"}),
        sensor_prefixes=(uri.removeprefix(DEVICE_URI_PREFIX),),
        tier=TIERS["device"],
    )


@functools.lru_cache(maxsize=65_536)
def parse(header: str) -> Identity:
    """The identity in IDENTITY_HEADER's value; Unauthenticated names what is wrong with it.
    Cached: a device sends the same token with every call."""
    try:
        claims = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated(f"the token's claims do not decode: {exc}") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("the token's claims are not a JSON object")
    return Identity(
        subject=str(claims.get("sub", "")),
        token_id=_text(claims, "jti"),
        scopes=frozenset(_text(claims, "scope").split()),
        sensor_prefixes=_prefixes(claims),
        tier=_tier(claims),
        device=_text(claims, "device") if "device" in claims else "",
    )


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise Unauthenticated(f"the token has no {name} claim (a non-empty string)")
    return value


def _prefixes(claims: dict[str, Any]) -> tuple[str, ...]:
    value = claims.get("sensors")
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise Unauthenticated(
            'the token has no sensors claim (a list of sensor-id prefixes; [""] for every sensor)'
        )
    return tuple(value)


def _tier(claims: dict[str, Any]) -> Tier:
    name = claims.get("tier")
    if name not in TIERS:
        raise Unauthenticated(f"the token's tier claim is {name!r}, not one of {', '.join(TIERS)}")
    return TIERS[name]
