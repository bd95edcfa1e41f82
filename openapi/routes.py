"""The google.api.http routes as OpenAPI operations: a route's path and verb, its parameters (path and
query), its request body and its answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from openapi.descriptors import FIELD, F, File, Message, field_behaviors, is_map, summary
from openapi.errors import error_refs
from openapi.schemas import WELL_KNOWN, Generator
from openapi.unsupported import UnsupportedError

PATH_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(=\*)?\}")


def _http_rules(method: descriptor_pb2.MethodDescriptorProto) -> list[http_pb2.HttpRule]:
    if not method.options.HasExtension(annotations_pb2.http):
        return []
    rule = method.options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind in (None, "custom"):
        raise UnsupportedError(f"an HTTP rule of kind {kind}")
    return kind, getattr(rule, kind)


def _path(template: str, request: Message) -> tuple[str, list[descriptor_pb2.FieldDescriptorProto]]:
    """The OpenAPI path of a route's template, and the request's fields it binds."""
    fields = {f.name: f for f in request.proto.field}
    bound = []
    for variable in re.findall(r"\{[^}]*\}", template):
        match = PATH_VARIABLE.fullmatch(variable)
        if match is None or match.group(1) not in fields:
            raise UnsupportedError(f"path variable {variable} in {template}: only {{field}} of the request")
        bound.append(fields[match.group(1)])
    path = PATH_VARIABLE.sub(lambda m: "{" + fields[m.group(1)].json_name + "}", template)
    return path, bound


def operations(
    generator: Generator,
    file: File,
    path: tuple[int, ...],
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, verb, operation) of each HTTP route of a method; `path` locates the method in its file."""
    rules = _http_rules(method)
    if rules and method.client_streaming and method.server_streaming:
        raise UnsupportedError(f"{service.name}.{method.name}: a bidirectional stream over HTTP")
    request = generator.index.messages[method.input_type]
    description = file.comment(path)
    for n, rule in enumerate(rules):
        verb, template = _verb_and_template(rule)
        openapi_path, bound = _path(template, request)
        operation: dict[str, Any] = {
            "tags": [service.name],
            "operationId": f"{service.name}_{method.name}" + (f"_{n + 1}" if n else ""),
            "summary": summary(description),
            "description": description,
        }
        parameters = [_parameter(generator, request, field, "path") for field in bound]
        bound_names = frozenset(field.name for field in bound)
        if rule.body == "*":
            body = generator.ref(method.input_type, bound_names)
        elif rule.body:
            (field,) = [f for f in request.proto.field if f.name == rule.body]
            # A google.api.HttpBody field is the raw body, passed on as it comes.
            body = RAW_BODY if field.type_name == HTTP_BODY else generator.field_schema(field)
            bound_names |= {field.name}
        else:
            body = None
        if body is None or rule.body != "*":
            parameters += [
                parameter
                for field in request.proto.field
                if field.name not in bound_names
                for parameter in _query_parameters(generator, request, field, "")
            ]
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = _request_body(generator, method, body)
        operation["responses"] = {"200": _answer(generator, method, rule), **error_refs()}
        yield openapi_path, verb, operation


HTTP_BODY = ".google.api.HttpBody"
RAW_BODY: dict[str, Any] = {"type": "string"}
# The raw bodies that are not text: Prometheus's messages, snappy-compressed (docs/prometheus.md).
PROTOBUF_BODIES = frozenset({".metrics.v1.WritePrometheusRequest", ".metrics.v1.ReadPrometheusRequest"})
PROTOBUF = {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}}


def _request_body(
    generator: Generator, method: descriptor_pb2.MethodDescriptorProto, body: dict[str, Any]
) -> dict[str, Any]:
    name = generator.schema_name(method.input_type)
    if method.client_streaming:
        return {
            "required": True,
            "description": f"A client stream: a JSON array of {name}, each element one message of the "
            "stream, sent on as it arrives. A single object is refused (400).",
            "content": {"application/json": {"schema": {"type": "array", "items": body}}},
        }
    if body is RAW_BODY and method.input_type in PROTOBUF_BODIES:
        return {"required": True, "content": PROTOBUF}
    if body is RAW_BODY:
        return {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"required": True, "content": {"application/json": {"schema": body}}}


def _answer(
    generator: Generator, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule
) -> dict[str, Any]:
    output = generator.index.messages[method.output_type]
    if method.output_type == HTTP_BODY:  # the raw answer, as the method's comment describes it
        return {"description": "OK", "content": PROTOBUF}
    if rule.response_body:
        (field,) = [f for f in output.proto.field if f.name == rule.response_body]
        schema = generator.field_schema(field)
    else:
        schema = generator.ref(method.output_type)
    description = output.file.comment(output.path) or "OK"
    if method.server_streaming:
        return {
            "description": f"{description}\n\nA server stream, as Server-Sent Events: each message of "
            f"the stream is one event, `data: <{generator.schema_name(method.output_type)} as JSON>` and "
            "a blank line, sent as it happens, until the client goes away or the service ends the stream.",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "x-itemSchema": schema}},
        }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _parameter(
    generator: Generator, request: Message, field: descriptor_pb2.FieldDescriptorProto, where: str
) -> dict[str, Any]:
    i = list(request.proto.field).index(field)
    parameter: dict[str, Any] = {"name": field.json_name, "in": where}
    if description := request.file.comment((*request.path, FIELD, i)):
        parameter["description"] = description
    if where == "path" or field_behavior_pb2.REQUIRED in field_behaviors(field):
        parameter["required"] = True
    parameter["schema"] = generator.field_schema(field)
    return parameter


def _query_parameters(
    generator: Generator, request: Message, field: descriptor_pb2.FieldDescriptorProto, prefix: str
) -> Iterator[dict[str, Any]]:
    """A query parameter per field; a message's fields (not a well-known type's) as `field.sub`."""
    is_message = field.type == F.TYPE_MESSAGE and field.type_name not in WELL_KNOWN
    if is_map(generator.index, field) or (is_message and field.label == F.LABEL_REPEATED):
        raise UnsupportedError(f"{request.full_name}.{field.name}: a map or list of messages in a query")
    if is_message:
        inner = generator.index.messages[field.type_name]
        for sub in inner.proto.field:
            yield from _query_parameters(generator, inner, sub, f"{prefix}{field.json_name}.")
        return
    parameter = _parameter(generator, request, field, "query")
    parameter["name"] = prefix + parameter["name"]
    yield parameter
