"""Rotating the keys that sign tokens: while both keys are in the JWKS, tokens of either are good;
once the old key is retired, its tokens are refused. `make run` gives Envoy the new key set."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stack import settings as stack_settings
from stack import tokens
from testkit.http import http
from tests import front_door
from tests.conftest import ROOT
from tests.target import Target

# Rewrites the local stack's keys and restarts its Envoy.
pytestmark = [pytest.mark.local_stack, pytest.mark.timeout(180)]


def make_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stack", "up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def status_with(target: Target, token: str) -> int:
    status, _ = await http(
        "GET", f"{target.envoy_tls_url}/v1/sensors?pageSize=1",
        headers=front_door.auth(token), tls=front_door.tls_context(target),
    )  # fmt: skip
    return status


async def test_a_rotated_key_keeps_old_tokens_until_it_is_retired(target: Target) -> None:
    settings = stack_settings.load()
    old = front_door.token(target, scopes=("read",))
    assert await status_with(target, old) == 200
    new_kid = tokens.new_key(settings)
    make_run()
    new = front_door.token(target, scopes=("read",))
    assert front_door.signing_key(target)[1] == new_kid
    assert await status_with(target, new) == 200
    assert await status_with(target, old) == 200  # both keys are in the JWKS
    retired = tokens.retire_keys(settings)
    assert retired and new_kid not in retired
    make_run()
    assert await status_with(target, new) == 200
    assert await status_with(target, old) == 401
