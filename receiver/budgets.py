"""Rate limits of stream messages, per token: Envoy counts a stream once, when it opens; a device
that keeps one open for days is held to its token's tier message by message here."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from runtime.errors import RateLimited
from runtime.identity import Identity

# Buckets of the tokens seen most recently; one evicted starts full again (as Envoy's do).
MAX_BUCKETS = 100_000


class StreamBudgets:
    """A token bucket per token id, filled at its tier's rate up to its burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self._clock = clock
        self._max = max_buckets
        # token id -> (tokens left, when counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, identity: Identity) -> None:
        """Takes one message from the token's bucket; RateLimited when it is empty."""
        now = self._clock()
        tier = identity.tier
        left, then = self._buckets.pop(identity.token_id, (float(tier.burst), now))
        left = min(float(tier.burst), left + (now - then) * tier.rate)
        if left < 1:
            self._buckets[identity.token_id] = (left, now)
            raise RateLimited(
                f"this token may send {tier.rate} messages a second (bursts of {tier.burst}); "
                "slow down and retry"
            )
        self._buckets[identity.token_id] = (left - 1, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
