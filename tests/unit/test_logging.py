"""The rate limit on a chatty library's log records."""

from __future__ import annotations

import logging

import pytest

from runtime.logging import OncePer


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, None, None)


def test_repeats_are_dropped_and_counted() -> None:
    once = OncePer(60.0)
    assert once.filter(record("Unable connect to node %s"))
    assert not once.filter(record("Unable connect to node %s"))
    assert not once.filter(record("Unable connect to node %s"))
    assert once.filter(record("Unable to update metadata"))


def test_the_next_one_after_the_window_says_how_many_were_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("runtime.logging.time.monotonic", lambda: now[0])
    once = OncePer(10.0)
    assert once.filter(record("x"))
    for _ in range(3):
        now[0] += 1
        assert not once.filter(record("x"))
    now[0] += 10
    later = record("x")
    assert once.filter(later)
    assert later.msg == "x (and 3 more like it in the last 10 s)"
