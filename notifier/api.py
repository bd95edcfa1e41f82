"""SubscriptionsService: webhook subscriptions, stored in PostgreSQL (notifier/store.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc

from metrics.v1 import event_pb2, notifier_service_pb2_grpc, subscription_pb2
from metrics.v1 import notifier_service_pb2 as pb
from notifier import checks, store
from notifier.destinations import Destinations, Refused
from runtime import paging
from runtime.errors import InvalidArgument, NotFound, Violation, grpc_errors
from runtime.identity import caller

SERVICE = pb.DESCRIPTOR.services_by_name["SubscriptionsService"]

Context = grpc.aio.ServicerContext[Any, Any]


class Subscriptions(notifier_service_pb2_grpc.SubscriptionsServiceServicer):
    def __init__(self, pool: asyncpg.Pool, destinations: Destinations) -> None:
        self._pool = pool
        self._destinations = destinations

    @grpc_errors
    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: Context
    ) -> pb.CreateSubscriptionResponse:
        _admin(context)
        new, url = checks.new_subscription(request.HasField("subscription"), request.subscription)
        try:
            await self._destinations.resolve(url)
        except Refused as exc:
            raise InvalidArgument([Violation("subscription.url", str(exc))]) from None
        row = await store.create(self._pool, new)
        return pb.CreateSubscriptionResponse(subscription=subscription(row))

    @grpc_errors
    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Context
    ) -> pb.ListSubscriptionsResponse:
        _admin(context)
        size = paging.page_size(request.page_size, 50, 1_000)
        digest = paging.filters_digest("subscriptions")
        position = paging.decode(request.page_token, digest, 2)
        if position is not None and not (isinstance(position[0], int) and isinstance(position[1], str)):
            raise InvalidArgument([Violation("page_token", "is not a page token of this API")])
        rows = await store.page(self._pool, (position[0], position[1]) if position else None, size + 1)
        response = pb.ListSubscriptionsResponse(subscriptions=[subscription(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = paging.encode(digest, last["create_time"], last["subscription_id"].hex)
        return response

    @grpc_errors
    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: Context
    ) -> pb.GetSubscriptionResponse:
        _admin(context)
        found = await store.get(self._pool, checks.subscription_id(request.subscription_id))
        return pb.GetSubscriptionResponse(subscription=subscription(_found(found, request.subscription_id)))

    @grpc_errors
    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: Context
    ) -> pb.DeleteSubscriptionResponse:
        _admin(context)
        if not await store.delete(self._pool, checks.subscription_id(request.subscription_id)):
            _found(None, request.subscription_id)
        return pb.DeleteSubscriptionResponse()

    @grpc_errors
    async def ResumeSubscription(
        self, request: pb.ResumeSubscriptionRequest, context: Context
    ) -> pb.ResumeSubscriptionResponse:
        _admin(context)
        found = await store.resume(self._pool, checks.subscription_id(request.subscription_id))
        return pb.ResumeSubscriptionResponse(
            subscription=subscription(_found(found, request.subscription_id))
        )

    @grpc_errors
    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Context
    ) -> pb.ListDeliveriesResponse:
        _admin(context)
        subscription_id = checks.subscription_id(request.subscription_id)
        if request.outcome not in subscription_pb2.DeliveryOutcome.values():
            raise InvalidArgument([Violation("outcome", f"{request.outcome} is not a delivery outcome")])
        _found(await store.get(self._pool, subscription_id), request.subscription_id)
        size = paging.page_size(request.page_size, 50, 1_000)
        digest = paging.filters_digest("deliveries", subscription_id, request.outcome)
        position = paging.decode(request.page_token, digest, 1)
        if position is not None and not isinstance(position[0], int):
            raise InvalidArgument([Violation("page_token", "is not a page token of this API")])
        rows = await store.deliveries(
            self._pool, subscription_id, request.outcome, position[0] if position else None, size + 1
        )
        response = pb.ListDeliveriesResponse(deliveries=[delivery(r) for r in rows[:size]])
        if len(rows) > size:
            response.next_page_token = paging.encode(digest, rows[size - 1]["seq"])
        return response


def _admin(context: Context) -> None:
    """Subscriptions see every sensor's events and reach out of the stack: the admin scope only.
    No identity: the trusted inside (the plaintext port, the service's own port)."""
    caller(context.invocation_metadata(), "admin")


def _found(row: asyncpg.Record | None, requested: str) -> asyncpg.Record:
    if row is None:
        raise NotFound(f"subscription_id: there is no subscription {requested}")
    return row


def subscription(row: asyncpg.Record) -> subscription_pb2.Subscription:
    """A stored subscription as the API shows it: never its secret."""
    out = subscription_pb2.Subscription(
        subscription_id=row["subscription_id"].hex,
        url=row["url"],
        sensor_id_prefix=row["sensor_id_prefix"],
        kinds=row["kinds"],
        minimum_severity=row["minimum_severity"],
    )
    out.create_time.FromMicroseconds(row["create_time"])
    delivery = out.delivery
    delivery.state = row["state"]
    delivery.consecutive_failures = row["consecutive_failures"]
    delivery.last_error = row["last_error"]
    delivery.pending_count = row["pending_count"]
    delivery.dead_lettered_count = row["dead_lettered_count"]
    delivery.delivered_count = row["delivered_count"]
    for name in ("last_failure_time", "last_success_time", "dead_letter_time"):
        if row[name] is not None:
            getattr(delivery, name).FromMicroseconds(row[name])
    return out


def delivery(row: asyncpg.Record) -> subscription_pb2.Delivery:
    """A stored delivery as the API shows it."""
    out = subscription_pb2.Delivery(
        event=event_pb2.Event.FromString(row["event"]), outcome=row["state"], attempts=row["attempts"],
        last_error=row["last_error"],
    )  # fmt: skip
    if row["state"] == subscription_pb2.DELIVERY_OUTCOME_PENDING:
        out.next_attempt_time.FromMicroseconds(row["next_attempt_time"])
    if row["done_time"] is not None and row["state"] == subscription_pb2.DELIVERY_OUTCOME_DELIVERED:
        out.deliver_time.FromMicroseconds(row["done_time"])
    return out
