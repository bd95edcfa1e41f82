"""The identity the services read from Envoy's header, and the receiver's per-token stream budget."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from receiver.budgets import StreamBudgets
from runtime.errors import PermissionDenied, RateLimited, Unauthenticated
from runtime.identity import (
    CLIENT_CERT_HEADER,
    DEVICE_URI_PREFIX,
    IDENTITY_HEADER,
    TIERS,
    of_metadata,
    parse,
    parse_certificate,
)


def header(**overrides: Any) -> str:
    claims = {"sub": "t", "jti": "id-1", "scope": "ingest read", "sensors": ["plant-7-"], "tier": "device"}
    payload = json.dumps({**claims, **overrides}).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()  # as Envoy writes it: no padding


def test_claims_become_an_identity() -> None:
    identity = parse(header())
    assert identity.scopes == {"ingest", "read"}
    assert identity.sensor_prefixes == ("plant-7-",)
    assert identity.tier == TIERS["device"]
    assert identity.covers("plant-7-a") and not identity.covers("plant-8-a")


def test_no_header_is_the_trusted_inside_and_other_metadata_is_ignored() -> None:
    assert of_metadata((("authorization", "x"),)) is None
    assert of_metadata(None) is None
    assert of_metadata(((IDENTITY_HEADER, header()),)) == parse(header())


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("!!!", "do not decode"),
        (base64.urlsafe_b64encode(b"[1]").decode(), "not a JSON object"),
        (header(jti=""), "jti"),
        (header(scope=3), "scope"),
        (header(sensors="plant-7-"), "sensors"),
        (header(sensors=[]), "sensors"),
        (header(tier="platinum"), "tier"),
    ],
)
def test_unusable_claims_are_unauthenticated_naming_the_claim(raw: str, says: str) -> None:
    with pytest.raises(Unauthenticated, match=says):
        parse(raw)


def test_scopes_and_admin() -> None:
    parse(header(scope="ingest")).require("ingest")
    parse(header(scope="admin")).require("read")
    with pytest.raises(PermissionDenied, match="do not include read"):
        parse(header(scope="ingest")).require("read")


def test_sensors_outside_the_prefixes_are_named() -> None:
    identity = parse(header(sensors=["a-", "b-"]))
    identity.require_sensors(["a-1", "b-2"])
    with pytest.raises(PermissionDenied, match="metrics: sensor 'c-3' is not covered"):
        identity.require_sensors(["a-1", "c-3"], "metrics")
    parse(header(sensors=[""])).require_sensors(["anything"])


def test_a_stream_budget_gives_a_burst_then_the_rate() -> None:
    now = [0.0]
    budgets = StreamBudgets(clock=lambda: now[0])
    identity = parse(header())
    tier = identity.tier
    for _ in range(tier.burst):
        budgets.take(identity)
    with pytest.raises(RateLimited) as refused:
        budgets.take(identity)
    assert refused.value.status().details  # RetryInfo: when to try again
    now[0] += 1.0
    for _ in range(tier.rate):
        budgets.take(identity)
    with pytest.raises(RateLimited):
        budgets.take(identity)
    # Another token has a bucket of its own.
    budgets.take(parse(header(jti="id-2")))


def test_budgets_forget_the_least_recent_tokens() -> None:
    budgets = StreamBudgets(clock=lambda: 0.0, max_buckets=2)
    first = parse(header(jti="first"))
    for _ in range(first.tier.burst):
        budgets.take(first)
    budgets.take(parse(header(jti="second")))
    budgets.take(parse(header(jti="third")))  # evicts "first": it starts full again
    budgets.take(first)


def test_a_device_certificate_may_ingest_its_sensors_at_the_device_tier() -> None:
    identity = parse_certificate(f'Hash=ab12;URI="{DEVICE_URI_PREFIX}plant-7-"')
    assert identity.sensor_prefixes == ("plant-7-",)
    assert identity.scopes == {"ingest"} and identity.tier == TIERS["device"]
    assert identity.token_id == "certificate:ab12"
    with pytest.raises(PermissionDenied):
        identity.require("read")
    # A token sent with the certificate is the identity.
    both = of_metadata(((CLIENT_CERT_HEADER, f"URI={DEVICE_URI_PREFIX}x-"), (IDENTITY_HEADER, header())))
    assert both == parse(header())
    assert of_metadata(((CLIENT_CERT_HEADER, f"URI={DEVICE_URI_PREFIX}x-"),)) == parse_certificate(
        f"URI={DEVICE_URI_PREFIX}x-"
    )


def test_a_certificate_without_the_sensors_uri_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated, match="names no sensors"):
        parse_certificate("Hash=ab12;URI=spiffe://example/device")
