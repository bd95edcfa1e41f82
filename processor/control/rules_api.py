"""RulesService: the rules the processors apply, changed at run time (routed by Envoy to here)."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.protobuf import empty_pb2

from metrics.v1 import rule_pb2, rules_service_pb2, rules_service_pb2_grpc
from processor.control import rule_checks
from processor.control.rule_store import MUTABLE, RuleStore
from runtime import paging
from runtime.errors import FailedPrecondition, InvalidArgument, Violation, grpc_errors
from runtime.identity import caller

SERVICE = rules_service_pb2.DESCRIPTOR.services_by_name["RulesService"]
# What UpdateRule may change of a silence rule.
SILENCE_MUTABLE = ("silence", "severity", "enabled")
Context = grpc.aio.ServicerContext[Any, Any]


class RulesApi(rules_service_pb2_grpc.RulesServiceServicer):
    """`store` None: this processor applies the environment's rules only (no rules topic)."""

    def __init__(self, store: RuleStore | None) -> None:
        self._store = store

    @grpc_errors
    async def CreateRule(
        self, request: rules_service_pb2.CreateRuleRequest, context: Context
    ) -> rule_pb2.Rule:
        store = self._writer(context)
        _check(request.rule)
        rule = rule_pb2.Rule()
        rule.CopyFrom(request.rule)
        if not rule.HasField("silence"):  # a silence rule's alarm clears at the device's next reading
            rule.clear_count = rule.clear_count or 1
        return await store.create(rule)

    @grpc_errors
    async def GetRule(self, request: rules_service_pb2.GetRuleRequest, context: Context) -> rule_pb2.Rule:
        store = self._reader(context)
        return await store.get(_rule_id(request.rule_id, "rule_id"))

    @grpc_errors
    async def ListRules(
        self, request: rules_service_pb2.ListRulesRequest, context: Context
    ) -> rules_service_pb2.ListRulesResponse:
        store = self._reader(context)
        size = paging.page_size(request.page_size, 100, 1_000)
        digest = paging.filters_digest("rules", request.metric_type)
        position = paging.decode(request.page_token, digest, 2)
        rules = await store.page(request.metric_type, tuple(position) if position else None, size + 1)
        response = rules_service_pb2.ListRulesResponse(rules=rules[:size])
        if len(rules) > size:
            last = rules[size - 1]
            response.next_page_token = paging.encode(digest, last.create_time.ToMicroseconds(), last.rule_id)
        return response

    @grpc_errors
    async def UpdateRule(
        self, request: rules_service_pb2.UpdateRuleRequest, context: Context
    ) -> rule_pb2.Rule:
        store = self._writer(context)
        rule = request.rule
        rule_id = _rule_id(request.rule_id, "rule_id")
        paths = list(request.update_mask.paths) or _set_fields(rule)
        # A rule's kind stays what it was made: a silence rule changes its silence, a threshold rule
        # the rest (severity and enabled both).
        silence = (await store.get(rule_id)).HasField("silence")
        mutable = SILENCE_MUTABLE if silence else tuple(m for m in MUTABLE if m != "silence")
        unknown = [p for p in paths if p not in mutable]
        if unknown:
            kind = "a silence rule's" if silence else "a threshold rule's"
            raise InvalidArgument(
                [
                    Violation("update_mask", f"{p!r} cannot be changed; {kind} can: {', '.join(mutable)}")
                    for p in unknown
                ]
            )
        if not paths:
            raise InvalidArgument([Violation("rule", "changes nothing: set the fields to change")])
        checked = rule if silence else _completed(rule)
        problems = [
            v
            for v in rule_checks.violations(checked)
            if re.split(r"[.\[]", v.field.removeprefix("rule."))[0] in paths
        ]
        if problems:
            raise InvalidArgument(problems)
        changes = {path: _value(rule, path) for path in paths}
        return await store.update(rule_id, changes, rule.version)

    @grpc_errors
    async def DeleteRule(
        self, request: rules_service_pb2.DeleteRuleRequest, context: Context
    ) -> empty_pb2.Empty:
        store = self._writer(context)
        await store.delete(_rule_id(request.rule_id, "rule_id"))
        return empty_pb2.Empty()

    def _reader(self, context: Context) -> RuleStore:
        caller(context.invocation_metadata(), "read")
        return self._available()

    def _writer(self, context: Context) -> RuleStore:
        # A rule looks at every sensor it names: changing one is an operator's (admin) act.
        caller(context.invocation_metadata(), "admin")
        return self._available()

    def _available(self) -> RuleStore:
        if self._store is None:
            raise FailedPrecondition(
                "this processor applies only the rules of its configuration "
                "(METRICS_PROCESSOR_RULES_TOPIC is empty)"
            )
        return self._store


def _check(rule: rule_pb2.Rule) -> None:
    if problems := rule_checks.violations(rule):
        raise InvalidArgument(problems)


def _rule_id(rule_id: str, field: str) -> str:
    if not rule_id:
        raise InvalidArgument([Violation(field, "is required, e.g. r-0123456789abcdef")])
    return rule_id


def _set_fields(rule: rule_pb2.Rule) -> list[str]:
    """AIP-134: without an update mask, the fields the request sets (not their defaults)."""
    return [field.name for field, _ in rule.ListFields() if field.name in MUTABLE]


def _completed(rule: rule_pb2.Rule) -> rule_pb2.Rule:
    """The rule with a metric type where it has none, so that checks of the other fields can run."""
    checked = rule_pb2.Rule()
    checked.CopyFrom(rule)
    checked.metric_type = checked.metric_type or "x"
    return checked


def _value(rule: rule_pb2.Rule, path: str) -> Any:
    if path == "enabled":
        return rule.enabled if rule.HasField("enabled") else True
    if path == "duration":
        return rule.duration.ToMicroseconds()
    if path == "clear_count":
        return rule.clear_count or 1
    if path == "silence":
        return rule.silence.SerializeToString(deterministic=True)
    return getattr(rule, path)
