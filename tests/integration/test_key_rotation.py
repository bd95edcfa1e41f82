"""Rotating the keys that sign tokens, as `make token ARGS="--rotate-key"` and "--retire-keys" do:
while both keys are in the key set, tokens of either are good; once the old key is retired, its
tokens are refused. Envoy takes each change within a second without a restart: a stream open
across both changes goes on, on the same Envoy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from stack import settings as stack_settings
from stack import tokens
from testkit.http import http
from tests import front_door
from tests.conftest import ROOT
from tests.faults import pid_of
from tests.target import Target

# Rewrites the local stack's keys.
pytestmark = pytest.mark.local_stack
# Envoy takes a new key set within this long (docs/security.md).
TAKEN_WITHIN_S = 1.0


async def status_with(target: Target, token: str) -> int:
    status, _ = await http(
        "GET", f"{target.envoy_tls_url}/v1/sensors?pageSize=1",
        headers=front_door.auth(token), tls=front_door.tls_context(target),
    )  # fmt: skip
    return status


async def becomes(target: Target, token: str, wanted: int, since: float) -> None:
    """The token's status is `wanted` a second after `since`: the documented bound of a key set's
    change, waited out, then checked."""
    await asyncio.sleep(max(0.0, since + TAKEN_WITHIN_S - time.monotonic()))
    assert await status_with(target, token) == wanted


async def test_a_rotated_key_keeps_old_tokens_until_it_is_retired_and_nothing_restarts(
    target: Target,
) -> None:
    settings = stack_settings.load()
    envoy = pid_of("envoy")
    old = front_door.token(target, scopes=("read",))
    writer = front_door.token(target, scopes=("ingest",), sensors=("",))
    assert await status_with(target, old) == 200
    sensor = f"rotation-{uuid.uuid4().hex[:10]}"

    async with front_door.channel(target) as channel:
        stream = ReceiverServiceStub(channel).SyncMetrics(metadata=front_door.bearer(writer), timeout=60)
        sequence = 0

        async def batch_taken() -> None:
            nonlocal sequence
            sequence += 1
            metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=float(sequence))
            await stream.write(receiver_service_pb2.SyncMetricsRequest(sequence=sequence, metrics=[metric]))
            assert (await stream.read()).accepted_count == 1

        await batch_taken()
        new_kid = tokens.new_key(settings)
        new = front_door.token(target, scopes=("read",))
        assert front_door.signing_key(target)[1] == new_kid
        await becomes(target, new, 200, time.monotonic())
        assert await status_with(target, old) == 200  # both keys are in the key set
        await batch_taken()

        retired = tokens.retire_keys(settings)
        assert retired and new_kid not in retired
        await becomes(target, old, 401, time.monotonic())
        assert await status_with(target, new) == 200
        await batch_taken()  # the stream opened before both changes goes on
        await stream.done_writing()
    assert pid_of("envoy") == envoy, "Envoy restarted"


def test_a_key_set_change_leaves_the_running_stack_as_it_is(target: Target) -> None:
    # make run after a rotation has nothing to restart: Envoy follows its key set by itself.
    settings = stack_settings.load()
    envoy = pid_of("envoy")
    tokens.new_key(settings)
    result = subprocess.run([sys.executable, "-m", "stack", "up"], cwd=ROOT, capture_output=True, text=True,
                            timeout=150, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert pid_of("envoy") == envoy, "make run restarted Envoy for a new key"
    tokens.retire_keys(settings)
