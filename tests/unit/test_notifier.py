"""The notifier's pure logic: the body and its signature, the backoff, where webhooks may go, and
the checks of a subscription."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random

import pytest

from metrics.v1 import event_pb2, subscription_pb2
from notifier import checks
from notifier.destinations import Destinations, Refused, parse_url
from notifier.dispatch import backoff
from notifier.webhook import _status, body, signature
from runtime.errors import InvalidArgument
from runtime.settings import SettingsError

SECRET = "s3cret-of-sixteen-chars"


def event() -> event_pb2.Event:
    out = event_pb2.Event(
        event_id="0f" * 16, kind=event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, sensor_id="plant-7-a",
        metric_type="temperature", value=99.5, threshold=95, count=3,
    )  # fmt: skip
    out.reading_time.FromMicroseconds(1_790_000_000_000_000)
    out.detect_time.FromMicroseconds(1_790_000_000_250_000)
    return out


def test_the_body_is_the_notification_in_protobufs_json_mapping() -> None:
    payload = body("ab" * 16, event(), 2, 1_790_000_001_000_000_000)
    decoded = json.loads(payload)
    assert decoded == {
        "subscriptionId": "ab" * 16,
        "event": {
            "eventId": "0f" * 16, "kind": "EVENT_KIND_THRESHOLD_EXCEEDED", "sensorId": "plant-7-a",
            "metricType": "temperature", "value": 99.5, "readingTime": "2026-09-21T14:13:20Z",
            "threshold": 95.0, "count": 3, "detectTime": "2026-09-21T14:13:20.250Z",
            "severity": "SEVERITY_UNSPECIFIED", "ruleId": "", "alarmId": "",
        },
        "sendTime": "2026-09-21T14:13:21Z",
        "attempt": 2,
    }  # fmt: skip
    assert b" " not in payload  # compact
    # Any protobuf library reads it back as the same message.
    from google.protobuf import json_format  # noqa: PLC0415

    parsed = json_format.Parse(payload, subscription_pb2.Notification())
    assert parsed.event == event()


def test_the_signature_is_the_hmac_sha256_of_the_exact_body() -> None:
    payload = body("ab" * 16, event(), 1, 0)
    expected = hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()
    assert signature(SECRET, payload) == f"sha256={expected}"
    assert signature(SECRET, payload + b" ") != signature(SECRET, payload)
    assert signature("another-secret-16", payload) != signature(SECRET, payload)


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (500, 300.0)):
        waits = [backoff(failures, 1.0, 300.0, rng) for _ in range(500)]
        assert all(0.0 <= w <= ceiling for w in waits), failures
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling, failures


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "is required"),
        ("ftp://example.com/x", "http or https"),
        ("example.com/hook", "http or https"),
        ("http://user:pw@example.com/", "user name or password"),
        ("http:///path", "has no host"),
        ("http://example.com/a#b", "fragment"),
        ("http://example.com/a b", "without spaces"),
        ("http://example.com/\r\nX-Injected: 1", "control characters"),
        ("http://bücher.example/", "ASCII"),
        ("http://example.com:99999/", "is not a URL"),
        ("http://example.com/" + "a" * 2100, "more than 2048"),
    ],
)
def test_a_url_of_the_wrong_form_is_refused_saying_why(url: str, problem: str) -> None:
    with pytest.raises(Refused, match=problem):
        parse_url(url)


def test_a_url_gives_what_the_request_needs() -> None:
    url = parse_url("https://hooks.example.com:8443/in/metrics?team=7")
    assert (url.host, url.port, url.target, url.tls) == (
        "hooks.example.com",
        8443,
        "/in/metrics?team=7",
        True,
    )
    assert url.host_header == "hooks.example.com:8443"
    assert parse_url("http://127.0.0.1").target == "/"
    assert parse_url("http://127.0.0.1").host_header == "127.0.0.1"
    ipv6 = parse_url("http://[::1]:9000/x")
    assert (ipv6.host, ipv6.host_header) == ("::1", "[::1]:9000")


@pytest.mark.parametrize(
    ("address", "default", "loopback_allowed"),
    [
        ("93.184.215.14", True, True),  # public
        ("2606:4700::6810:84e5", True, True),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("::ffff:127.0.0.1", False, True),  # the same, mapped into IPv6
        ("10.1.2.3", False, False),
        ("192.168.0.10", False, False),
        ("169.254.169.254", False, False),  # a cloud's metadata service
        ("100.64.0.1", False, False),  # shared address space
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
        ("fd00::1", False, False),
    ],
)
def test_only_public_addresses_unless_a_network_is_allowed(
    address: str, default: bool, loopback_allowed: bool
) -> None:
    ip = ipaddress.ip_address(address)
    assert Destinations((), public=True).allows(ip) is default
    assert Destinations(("127.0.0.0/8", "::1/128"), public=True).allows(ip) is loopback_allowed
    # Public addresses switched off: the allowed networks only.
    assert Destinations(("127.0.0.0/8",), public=False).allows(ip) is (
        (ip.version == 4 and ip.is_loopback) or address == "::ffff:127.0.0.1"
    )


async def test_a_host_is_resolved_and_every_address_checked() -> None:
    loopback = Destinations(("127.0.0.0/8", "::1/128"), public=False)
    assert await loopback.resolve(parse_url("http://127.0.0.1:9/")) == ["127.0.0.1"]
    assert set(await loopback.resolve(parse_url("http://localhost:9/"))) <= {"127.0.0.1", "::1"}
    with pytest.raises(
        Refused, match=r"^10\.0\.0\.1 outside what the notifier may deliver to: 127\.0\.0\.0/8, ::1/128 \("
    ):
        await loopback.resolve(parse_url("http://10.0.0.1/"))
    with pytest.raises(
        Refused,
        match=r"^localhost resolves to .+, outside what the notifier may deliver to: public addresses \(",
    ):
        await Destinations((), public=True).resolve(parse_url("http://localhost/"))
    with pytest.raises(Refused, match="does not resolve"):
        await loopback.resolve(parse_url("http://no-such-host.invalid/"))


def test_a_bad_network_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="allowed_networks"):
        Destinations(("10.0.0.0/33",), public=True)


def subscription(**fields: object) -> subscription_pb2.Subscription:
    defaults: dict[str, object] = {"url": "http://127.0.0.1:9/hook", "secret": SECRET}
    return subscription_pb2.Subscription(**{**defaults, **fields})


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def test_a_subscription_is_checked_field_by_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        checks.new_subscription(
            True,
            subscription(url="gopher://x", secret="short", sensor_id_prefix="a b", kinds=[1, 0, 9],
                         minimum_severity=7),
        )  # fmt: skip
    found = violations(error)
    assert set(found) == {
        "subscription.url", "subscription.secret", "subscription.sensor_id_prefix",
        "subscription.kinds[1]", "subscription.kinds[2]", "subscription.minimum_severity",
    }  # fmt: skip
    assert "16 to 256 characters" in found["subscription.secret"]
    with pytest.raises(InvalidArgument) as error:
        checks.new_subscription(False, subscription_pb2.Subscription())
    assert violations(error) == {"subscription": "is required"}
    with pytest.raises(InvalidArgument) as error:
        checks.new_subscription(True, subscription_pb2.Subscription())
    assert set(violations(error)) == {"subscription.url", "subscription.secret"}


def test_a_good_subscription_is_what_is_stored() -> None:
    new, url = checks.new_subscription(
        True,
        subscription(sensor_id_prefix="plant-7-", kinds=[3, 1, 3], minimum_severity=event_pb2.SEVERITY_MAJOR),
    )
    assert (new.sensor_id_prefix, new.kinds, new.minimum_severity) == ("plant-7-", (1, 3), 2)
    assert (new.url, new.secret, url.port) == ("http://127.0.0.1:9/hook", SECRET, 9)


def test_a_subscription_id_is_32_hex_digits() -> None:
    assert checks.subscription_id("AB" * 16) == "ab" * 16
    for bad in ("", "42", "z" * 32):
        with pytest.raises(InvalidArgument, match="subscription_id"):
            checks.subscription_id(bad)


@pytest.mark.parametrize(
    ("line", "status"), [(b"HTTP/1.1 204 No Content\r\n", 204), (b"HTTP/1.0 500\r\n", 500)]
)
def test_the_status_of_an_answer(line: bytes, status: int) -> None:
    assert _status(line) == status


@pytest.mark.parametrize("line", [b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/2 200\r\n", b"HTTP/1.1 OK\r\n"])
def test_what_is_not_an_http_answer_fails_the_attempt(line: bytes) -> None:
    from notifier.webhook import AttemptFailed  # noqa: PLC0415

    with pytest.raises(AttemptFailed, match="not an HTTP answer"):
        _status(line)


def test_settings_that_cannot_work_are_refused_by_name() -> None:
    from notifier.settings import NotifierSettings  # noqa: PLC0415
    from runtime import settings  # noqa: PLC0415

    assert settings.load(NotifierSettings, "notifier", {}).dead_letter_after == 10
    for name, value in (
        ("DEAD_LETTER_AFTER", "0"),
        ("DELIVERY_TIMEOUT_S", "-1"),
        ("MAX_RECORDS_PER_ROUND", "70000"),
    ):
        with pytest.raises(SettingsError, match=name.lower()):
            settings.load(NotifierSettings, "notifier", {f"METRICS_NOTIFIER_{name}": value})
