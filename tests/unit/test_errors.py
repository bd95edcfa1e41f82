"""What a failing server means to a client: a timeout is DEADLINE_EXCEEDED, an outage UNAVAILABLE."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from runtime.errors import DeadlineExceeded, Unavailable, as_service_error, status_of


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), DeadlineExceeded),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), DeadlineExceeded),
        (ConnectionRefusedError(111, "Connection refused"), Unavailable),
        (
            asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            Unavailable,
        ),
        (asyncpg.CannotConnectNowError("the database system is starting up"), Unavailable),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), Unavailable),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), Unavailable),
    ],
)
def test_a_servers_failure_is_told_as_retriable(exc: BaseException, kind: type) -> None:
    error = as_service_error(exc)
    assert isinstance(error, kind)
    assert error.retriable


def test_a_bug_stays_internal() -> None:
    assert as_service_error(KeyError("x")) is None
    assert as_service_error(asyncpg.UndefinedColumnError("column x does not exist")) is None
    assert status_of(KeyError("x")).code == grpc.StatusCode.INTERNAL.value[0]


def test_unavailable_says_when_to_retry() -> None:
    status = status_of(ConnectionRefusedError())
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 1
