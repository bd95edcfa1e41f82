"""Checks of protos/ against the API Improvement Proposals (aip.dev) that buf's lint lacks.

buf lint (buf.yaml: STANDARD and COMMENTS) covers names, layout and comments. These are the AIP
rules that fit this API, as Google's api-linter names them, so that an exception is written the
same way for both: a comment `(-- api-linter: core::0141::forbidden-types=disabled ... --)` on the
element, an enclosing message, or the file (above `syntax`), saying why.

- core::0127::http-annotation   every method has a google.api.http route but bidirectional streams
- core::0141::forbidden-types   no unsigned integers (many languages handle them badly)
- core::0141::count-suffix      quantities are `*_count`, not `num_*`
- core::0142::time-field-names  Timestamps are `*_time`; no `created`, `updated`, ...
- core::0142::time-field-type   a field named like a time is a Timestamp
- core::0158::*                 paginated requests: int32 page_size, string page_token; their
                                responses: the page first (repeated), string next_page_token
- core::0203::field-behavior-required  every field of a request and of a resource (any message of
                                the package but an RPC's response) has a google.api.field_behavior
                                of REQUIRED, OPTIONAL or OUTPUT_ONLY
- core::0203::required-and-optional    not both
- core::0203::resource-identifier-only IDENTIFIER only on a resource's `name` field

Not checked, as they do not fit: the resource-oriented rules (AIP-122 resource names, AIP-131 to
135 standard methods' `name`/`parent` fields). Sensors and readings are addressed by sensor_id,
metric type and time, and the routes that say so are the product's contract.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto
UNSIGNED = {
    F.TYPE_UINT32: "uint32",
    F.TYPE_UINT64: "uint64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_FIXED64: "fixed64",
}
TIMESTAMP = ".google.protobuf.Timestamp"
TIME_NAMES = {"created", "expired", "modified", "updated"}
TIME_SUFFIXES = ("_time", "_ts", "_timestamp", "_sec", "_secs", "_seconds", "_ms", "_msec", "_millis",
                 "_us", "_usec", "_micros", "_ns", "_nsec", "_nanos")  # fmt: skip
KIND = {field_behavior_pb2.REQUIRED, field_behavior_pb2.OPTIONAL, field_behavior_pb2.OUTPUT_ONLY}
DISABLED = re.compile(r"api-linter:\s*([\w:-]+)=disabled")

# Paths into a FileDescriptorProto (descriptor.proto's field numbers), for the comments.
MESSAGE_TYPE, FIELD, SERVICE, METHOD, SYNTAX = 4, 2, 6, 2, 12


@dataclass(frozen=True)
class Problem:
    file: str
    element: str
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.file}: {self.element}: {self.text} ({self.rule})"


class _File:
    """One file's comments, by the path of the element they lead."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.proto = proto
        self._comments: dict[tuple[int, ...], str] = {}
        for location in proto.source_code_info.location:
            text = location.leading_comments + "".join(location.leading_detached_comments)
            self._comments[tuple(location.path)] = text

    def disabled(self, rule: str, *paths: tuple[int, ...]) -> bool:
        """Whether `rule` is disabled on an element (its path, then its parents' paths) or the file."""
        return any(rule in DISABLED.findall(self._comments.get(path, "")) for path in (*paths, (SYNTAX,)))


def lint(files: descriptor_pb2.FileDescriptorSet, package: str) -> list[Problem]:
    """The problems of the files of `package` in a descriptor set (made with --include_source_info)."""
    ours = [_File(f) for f in files.file if f.package == package]
    responses = {m.output_type for f in ours for s in f.proto.service for m in s.method}
    requests = {m.input_type for f in ours for s in f.proto.service for m in s.method}
    messages = {f".{package}.{m.name}": m for f in ours for m in f.proto.message_type}
    problems: list[Problem] = []
    for file in ours:
        for found in (*_methods(file, messages), *_fields(file, responses, requests)):
            rule, element, paths, text = found
            if not file.disabled(rule, *paths):
                problems.append(Problem(file.proto.name, element, rule, text))
    return problems


Found = tuple[str, str, tuple[tuple[int, ...], ...], str]


def _methods(file: _File, messages: dict[str, descriptor_pb2.DescriptorProto]) -> Iterator[Found]:
    for s, service in enumerate(file.proto.service):
        for m, method in enumerate(service.method):
            element = f"{service.name}.{method.name}"
            paths = ((SERVICE, s, METHOD, m), (SERVICE, s))
            routed = method.options.HasExtension(annotations_pb2.http)
            bidi = method.client_streaming and method.server_streaming
            if routed == bidi:
                text = "a bidirectional stream has no HTTP route" if bidi else "has no google.api.http route"
                yield "core::0127::http-annotation", element, paths, text
            request, response = messages.get(method.input_type), messages.get(method.output_type)
            if request is None or "page_token" not in {f.name for f in request.field}:
                continue
            types = {f.name: f.type for f in request.field}
            if types.get("page_size") != F.TYPE_INT32:
                yield "core::0158::request-page-size-field", element, paths, "needs int32 page_size"
            if types["page_token"] != F.TYPE_STRING:
                yield "core::0158::request-page-token-field", element, paths, "page_token must be a string"
            fields = sorted(response.field, key=lambda f: f.number) if response else []
            if not any(f.name == "next_page_token" and f.type == F.TYPE_STRING for f in fields):
                yield "core::0158::response-next-page-token-field", element, paths, "needs next_page_token"
            if not fields or fields[0].label != F.LABEL_REPEATED:
                yield "core::0158::response-repeated-first-field", element, paths, "the page comes first"


def _fields(file: _File, responses: set[str], requests: set[str]) -> Iterator[Found]:
    package = file.proto.package
    for i, message in enumerate(file.proto.message_type):
        full = f".{package}.{message.name}"
        needs_behavior = full in requests or full not in responses
        for j, field in enumerate(message.field):
            element = f"{message.name}.{field.name}"
            paths = ((MESSAGE_TYPE, i, FIELD, j), (MESSAGE_TYPE, i))
            for rule, text in _field_problems(field, needs_behavior):
                yield rule, element, paths, text


def _field_problems(
    field: descriptor_pb2.FieldDescriptorProto, needs_behavior: bool
) -> Iterator[tuple[str, str]]:
    if field.type in UNSIGNED:
        yield "core::0141::forbidden-types", f"is {UNSIGNED[field.type]}: use a signed integer"
    if field.name.startswith("num_"):
        yield "core::0141::count-suffix", "a quantity is named *_count"
    is_time = field.type_name == TIMESTAMP
    if (is_time and not field.name.endswith("_time")) or field.name in TIME_NAMES:
        yield "core::0142::time-field-names", "a Timestamp is named *_time (create_time, not created)"
    if not is_time and field.name.endswith(TIME_SUFFIXES):
        yield "core::0142::time-field-type", "a time is a google.protobuf.Timestamp"
    behaviors = set(field.options.Extensions[field_behavior_pb2.field_behavior])
    if needs_behavior and not behaviors & KIND:
        yield (
            "core::0203::field-behavior-required",
            "needs google.api.field_behavior REQUIRED, OPTIONAL or OUTPUT_ONLY",
        )
    if {field_behavior_pb2.REQUIRED, field_behavior_pb2.OPTIONAL} <= behaviors:
        yield "core::0203::required-and-optional", "is both REQUIRED and OPTIONAL"
    if field_behavior_pb2.IDENTIFIER in behaviors and field.name != "name":
        yield "core::0203::resource-identifier-only", "IDENTIFIER belongs on a resource's name field only"
