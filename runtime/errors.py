"""Errors the services answer with, and their one mapping to gRPC statuses.

Service code raises these; `grpc_errors` (a decorator on servicer methods) turns them into a
status with details. A `retriable` error means the client may send the same request again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Violation:
    """One problem with one field of a request, e.g. ("metrics[3].value", "must be finite, got NaN")."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of the errors a service answers with."""

    code = grpc.StatusCode.INTERNAL
    retriable = False

    def status(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code.value[0], message=str(self))


class InvalidArgument(ServiceError):
    """The request is malformed; the violations name each field and its problem."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[Violation], summary: str = "") -> None:
        """`summary`, if given, goes before the first violation in the message."""
        self.violations = tuple(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"{summary + ': ' if summary else ''}{first.field}: {first.description}{more}")

    def status(self) -> status_pb2.Status:
        details = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(details)
        return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(self), details=[packed])


class Unavailable(ServiceError):
    """A dependency (Kafka, PostgreSQL) did not answer in time; nothing was done, retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True
    # Said to the client in a google.rpc.RetryInfo: when trying again is worth it.
    retry_delay_s = 1

    def status(self) -> status_pb2.Status:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.seconds = self.retry_delay_s
        packed = any_pb2.Any()
        packed.Pack(retry)
        return status_pb2.Status(code=self.code.value[0], message=str(self), details=[packed])


class DeadlineExceeded(ServiceError):
    """The answer took longer than the service allows itself (a query past its timeout)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retriable = True


class ResourceExhausted(ServiceError):
    """The service is at its limit of in-flight work; retry later, ideally with backoff."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True


class RateLimited(Unavailable):
    """The caller's token has used its budget for now; the RetryInfo says when more is there."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(ServiceError):
    """Who calls is not known: the token's claims are missing or unusable."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """The caller is known, and this request is outside what its token allows."""

    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(ServiceError):
    """The request names something that does not exist (a rule or subscription id, say)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    """The request would make something that exists already (a device id that is taken)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(ServiceError):
    """A concurrent change got there first (a version that is no longer current): read, then retry."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(ServiceError):
    """The system is not in a state to do this (a feature this deployment has switched off)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Undecodable:
    """A request whose bytes did not parse as its message type; answered with INVALID_ARGUMENT.

    gRPC's own handling of a deserializer error is an UNKNOWN or INTERNAL status with Python's
    exception text, which tells a client to retry; the request is wrong, and says so this way.
    """

    def __init__(self, message_type: str, problem: str, field: Violation | None = None) -> None:
        self.message_type = message_type
        self.problem = problem
        self.field = field

    def error(self) -> InvalidArgument:
        if self.field is not None:
            return InvalidArgument([self.field])
        return InvalidArgument(
            [Violation("(request)", f"is not a valid {self.message_type}: {self.problem}")]
        )


# SQLSTATEs of a database that is down, starting, shutting down or full of connections (class 08
# is every connection exception): a client may retry. 57014 is a statement cancelled by its timeout.
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
QUERY_CANCELED = "57014"


def as_service_error(exc: BaseException) -> ServiceError | None:
    """What a failure of a server the service talks to means to a client, if it is one: a timeout
    is DEADLINE_EXCEEDED, a server that is down or refuses is UNAVAILABLE; else None (a bug)."""
    if isinstance(exc, ServiceError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None)  # PostgreSQL's errors, as asyncpg raises them
    if isinstance(exc, TimeoutError) or sqlstate == QUERY_CANCELED:
        return DeadlineExceeded(
            "the database did not answer within the service's time limit; retry, or ask for less"
        )
    if isinstance(exc, OSError) or (
        isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES)
    ):
        return Unavailable(f"the database is not reachable ({type(exc).__name__}); retry shortly")
    return None


def status_of(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status for an exception (INTERNAL, without internals, for unexpected ones)."""
    if (error := as_service_error(exc)) is not None:
        return error.status()
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the service's log")


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """Ends the call with the status for `exc` (raises, as context.abort does)."""
    error = as_service_error(exc)
    if error is None:
        log.exception("unexpected error", exc_info=exc)
    elif error is not exc:
        log.warning("%s: %s", type(exc).__name__, exc)  # a server the service needs failed
    status = rpc_status.to_status(status_of(exc))
    await context.abort(status.code, status.details, status.trailing_metadata)


def _checked(request: Any) -> Any:
    """The request, or for a stream its messages, with an undecodable one raised as InvalidArgument
    and one refused unparsed (add_servicer's shed) raised as its error."""
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    if isinstance(request, Undecodable):
        raise request.error()
    if isinstance(request, ServiceError):
        raise request  # refused before it was parsed
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


def grpc_errors(method: F) -> F:
    """Maps ServiceErrors raised by a unary-response servicer method to gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: object, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, _checked(request), context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status; abort() raises
            await abort(context, exc)

    return cast(F, wrapper)


def grpc_stream_errors(method: F) -> F:
    """Like grpc_errors, for servicer methods that stream their responses."""

    @functools.wraps(method)
    async def wrapper(
        self: object, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in method(self, _checked(request), context):
                yield item
        except Exception as exc:  # noqa: BLE001 - every error becomes a status; abort() raises
            await abort(context, exc)

    return cast(F, wrapper)
