"""The simulated sensors: ids, values and reading times."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

from metrics.v1 import metric_pb2


@dataclass
class Fleet:
    """`sensors` sensors reporting `metric_types`; a share `above` of readings is at or above `threshold`.

    Each sensor's readings have strictly increasing times (microseconds), so none is a duplicate.
    With `arrival_times`, readings carry no time (the receiver stamps their arrival) and each sensor
    sends the same values again and again, so making load costs the simulator almost nothing.
    """

    sensors: int
    metric_types: tuple[str, ...] = ("temperature",)
    above: float = 0.01
    threshold: float = 95.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # Sensor ids are "<namespace>-<run_id>-<n>".
    namespace: str = "sim"
    seed: int = 1
    arrival_times: bool = False

    def __post_init__(self) -> None:
        self.ids = [f"{self.prefix}{i}" for i in range(self.sensors)]
        self._rng = random.Random(self.seed)  # noqa: S311 - load, not secrets
        self._last_us = [0] * self.sensors
        self._next = 0
        self._made: dict[tuple[int, int], list[metric_pb2.Metric]] = {}

    @property
    def prefix(self) -> str:
        return f"{self.namespace}-{self.run_id}-"

    def batch(self, size: int) -> list[metric_pb2.Metric]:
        """`size` readings of the next sensor in turn, over its metric types."""
        index = self._next
        self._next = (self._next + 1) % self.sensors
        if self.arrival_times:
            made = self._made.get((index, size))
            if made is None:
                made = self._made[(index, size)] = self._values(self.ids[index], size)
            return made
        sensor = self.ids[index]
        now = max(time.time_ns() // 1000, self._last_us[index] + 1)
        rng, types = self._rng, self.metric_types
        metrics = []
        for i in range(size):
            value = self.threshold + rng.uniform(0, 10) if rng.random() < self.above else rng.gauss(20, 5)
            metric = metric_pb2.Metric(sensor_id=sensor, metric_type=types[i % len(types)], value=value)
            metric.reading_time.FromMicroseconds(now + i)
            metrics.append(metric)
        self._last_us[index] = now + size
        return metrics

    def _values(self, sensor: str, size: int) -> list[metric_pb2.Metric]:
        rng, types = self._rng, self.metric_types
        return [
            metric_pb2.Metric(
                sensor_id=sensor,
                metric_type=types[i % len(types)],
                value=self.threshold + rng.uniform(0, 10) if rng.random() < self.above else rng.gauss(20, 5),
            )
            for i in range(size)
        ]
