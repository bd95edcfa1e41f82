"""Checks of SubscriptionsService requests, each problem naming its field (as the request names it)."""

from __future__ import annotations

import uuid

from metrics.v1 import event_pb2, subscription_pb2
from notifier import store
from notifier.destinations import Refused, Url, parse_url
from runtime.errors import InvalidArgument, Violation
from runtime.validation import SENSOR_ID

MIN_SECRET, MAX_SECRET = 16, 256
MAX_PREFIX = 128
KINDS = frozenset(event_pb2.EventKind.values()) - {event_pb2.EVENT_KIND_UNSPECIFIED}
SEVERITIES = frozenset(event_pb2.Severity.values())


def new_subscription(
    has_subscription: bool, subscription: subscription_pb2.Subscription
) -> tuple[store.NewSubscription, Url]:
    """What to store of a CreateSubscription request, and its URL's parts (its host is not
    resolved here); raises InvalidArgument naming every field that is wrong."""
    if not has_subscription:
        raise InvalidArgument([Violation("subscription", "is required")])
    violations: list[Violation] = []
    url: Url | None = None
    try:
        url = parse_url(subscription.url)
    except Refused as exc:
        violations.append(Violation("subscription.url", str(exc)))
    secret = subscription.secret
    if not secret:
        violations.append(Violation("subscription.secret", "is required"))
    elif not MIN_SECRET <= len(secret) <= MAX_SECRET:
        violations.append(Violation(
            "subscription.secret", f"must be {MIN_SECRET} to {MAX_SECRET} characters long, not {len(secret)}"
        ))  # fmt: skip
    elif "\x00" in secret:
        violations.append(Violation("subscription.secret", "must not contain the NUL character (\\x00)"))
    prefix = subscription.sensor_id_prefix
    if prefix and (len(prefix) > MAX_PREFIX or not SENSOR_ID.fullmatch(prefix)):
        violations.append(Violation(
            "subscription.sensor_id_prefix",
            f"must be at most {MAX_PREFIX} of the characters of sensor ids (A-Z a-z 0-9 . _ : -)",
        ))  # fmt: skip
    for i, kind in enumerate(subscription.kinds):
        if kind not in KINDS:
            violations.append(Violation(f"subscription.kinds[{i}]", f"{kind} is not a kind of event"))
    if subscription.minimum_severity not in SEVERITIES:
        violations.append(Violation(
            "subscription.minimum_severity", f"{subscription.minimum_severity} is not a severity"
        ))  # fmt: skip
    if violations:
        raise InvalidArgument(violations)
    assert url is not None
    new = store.NewSubscription(
        url=subscription.url,
        secret=secret,
        sensor_id_prefix=prefix,
        kinds=tuple(sorted(set(subscription.kinds))),
        minimum_severity=subscription.minimum_severity,
    )
    return new, url


def subscription_id(value: str) -> str:
    """The id as the database has it (32 lower-case hex digits); raises InvalidArgument."""
    if not value:
        raise InvalidArgument([Violation("subscription_id", "is required")])
    try:
        return uuid.UUID(value).hex
    except ValueError:
        shown = value[:40] + ("..." if len(value) > 40 else "")
        raise InvalidArgument(
            [Violation("subscription_id", f"{shown!r} is not a subscription id (32 hex digits)")]
        ) from None
