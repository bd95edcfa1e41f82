"""The OpenAPI 3 document of the HTTP/JSON API, made from protos/ (a descriptor set with source info).

It describes what Envoy's gRPC-JSON transcoder does with the `google.api.http` routes, as
envoy/envoy.yaml configures it, rather than what protobuf's JSON mapping allows in general:
- names are the fields' JSON names (lowerCamelCase, or a `json_name`), as the transcoder prints them;
- 64-bit integers are strings, Timestamps RFC 3339 strings, Durations strings such as "3600s", enums
  their value names;
- `google.api.field_behavior` REQUIRED is `required`, OUTPUT_ONLY is `readOnly`, INPUT_ONLY
  `writeOnly`; in an answer every field is printed (`always_print_primitive_fields`) but an unset
  message or `optional` number, so a field that is always printed is `required` too where only
  answers carry it;
- a client stream's body is a JSON array of its messages; a server stream answers with Server-Sent
  Events (`stream_sse_style_delimited`), each event's data one message (`x-itemSchema`, OpenAPI 3.2's
  `itemSchema`);
- an error is JSON `{"code", "message", "details"}`: a gRPC status from a service, or an HTTP status
  from Envoy's own refusals (envoy/envoy.yaml's local_reply_config).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto
OPENAPI_VERSION = "3.0.3"

# Paths into a FileDescriptorProto (descriptor.proto's field numbers), for the comments.
MESSAGE_TYPE, ENUM_TYPE, SERVICE = 4, 5, 6
FIELD, NESTED_TYPE, NESTED_ENUM, METHOD, ENUM_VALUE = 2, 3, 4, 2, 2

SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    # Strings in JSON: a JavaScript number cannot hold every 64-bit integer.
    F.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    F.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WRAPPERS = {
    "Double": F.TYPE_DOUBLE, "Float": F.TYPE_FLOAT, "Int64": F.TYPE_INT64, "UInt64": F.TYPE_UINT64,
    "Int32": F.TYPE_INT32, "UInt32": F.TYPE_UINT32, "Bool": F.TYPE_BOOL, "String": F.TYPE_STRING,
    "Bytes": F.TYPE_BYTES,
}  # fmt: skip
# Well-known types as the JSON mapping writes them; any other google.protobuf message is refused
# rather than guessed.
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "example": "3600s",
    },
    ".google.protobuf.FieldMask": {"type": "string", "description": "Field paths, comma-separated."},
    ".google.protobuf.Empty": {"type": "object"},
    # The wrappers: their value, or null.
    **{f".google.protobuf.{name}Value": SCALARS[kind] for name, kind in WRAPPERS.items()},
}

ERROR = "Error"
ERROR_DETAIL = "ErrorDetail"
# What a refused request gets, by HTTP status; every other failure is the `default` answer.
ERROR_RESPONSES = {
    "400": "Bad input: the service's INVALID_ARGUMENT (code 3, with google.rpc.BadRequest details "
    "naming each field), or Envoy's refusal of a request it cannot read (code 400: malformed JSON, a "
    "value of the wrong type, an unknown query parameter).",
    "401": "On the TLS port: no token or device certificate, or a token that is not valid (code 401, "
    "from Envoy).",
    "403": "PERMISSION_DENIED (code 7): the token does not cover this sensor or has not the scope.",
    "429": "RESOURCE_EXHAUSTED (code 8), or Envoy's rate limit of the token (code 429, with a "
    "retry-after header): try again later.",
    "503": "UNAVAILABLE (code 14): a server behind the service is down or busy; try again later (a "
    "google.rpc.RetryInfo detail may say when).",
}
SECURITY_SCHEME = "token"


class UnsupportedError(ValueError):
    """protos/ use something this generator does not describe (yet): it says what, rather than
    writing a document that is wrong."""


@dataclass(frozen=True)
class _Message:
    proto: descriptor_pb2.DescriptorProto
    file: _File
    path: tuple[int, ...]
    full_name: str  # with a leading dot, as type_name has it


@dataclass(frozen=True)
class _Enum:
    proto: descriptor_pb2.EnumDescriptorProto
    file: _File
    path: tuple[int, ...]
    full_name: str


class _File:
    """One file's comments, by the path of the element they lead."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.proto = proto
        self._comments = {
            tuple(location.path): location.leading_comments for location in proto.source_code_info.location
        }

    def comment(self, path: tuple[int, ...]) -> str:
        return _clean(self._comments.get(path, ""))


def _clean(comment: str) -> str:
    """A proto comment as Markdown text: no `(-- ... --)` notes for API linters, one space of
    indentation less, paragraphs kept."""
    comment = re.sub(r"\(--.*?--\)", "", comment, flags=re.DOTALL)
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    return "\n".join(lines).strip()


def _summary(text: str) -> str:
    """The first sentence of a comment."""
    first = text.split("\n\n", maxsplit=1)[0].replace("\n", " ")
    match = re.match(r"(.+?\.)(\s|$)", first)
    return (match.group(1) if match else first).rstrip(".")


class _Index:
    """Every message and enum of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = [_File(proto) for proto in files.file]
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, _Enum] = {}
        for file in self.files:
            scope = f".{file.proto.package}" if file.proto.package else ""
            for i, message in enumerate(file.proto.message_type):
                self._add_message(message, file, (MESSAGE_TYPE, i), scope)
            for i, enum in enumerate(file.proto.enum_type):
                name = f"{scope}.{enum.name}"
                self.enums[name] = _Enum(enum, file, (ENUM_TYPE, i), name)

    def _add_message(
        self, message: descriptor_pb2.DescriptorProto, file: _File, path: tuple[int, ...], scope: str
    ) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = _Message(message, file, path, name)
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, file, (*path, NESTED_TYPE, i), name)
        for i, enum in enumerate(message.enum_type):
            enum_name = f"{name}.{enum.name}"
            self.enums[enum_name] = _Enum(enum, file, (*path, NESTED_ENUM, i), enum_name)


def _behaviors(field: descriptor_pb2.FieldDescriptorProto) -> set[int]:
    return set(field.options.Extensions[field_behavior_pb2.field_behavior])


def _is_map(index: _Index, field: descriptor_pb2.FieldDescriptorProto) -> bool:
    message = index.messages.get(field.type_name) if field.type == F.TYPE_MESSAGE else None
    return message is not None and message.proto.options.map_entry


def _always_printed(index: _Index, field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether the transcoder prints the field in every answer (always_print_primitive_fields): a
    list or map (maybe empty), or a scalar without presence (maybe its default)."""
    if field.label == F.LABEL_REPEATED:
        return True
    if field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP):
        return False
    return not field.proto3_optional and not field.HasField("oneof_index")


class _Generator:
    def __init__(self, index: _Index, package: str) -> None:
        self.index = index
        self.package = package
        self.schemas: dict[str, dict[str, Any]] = {}
        # Messages whose fields only answers carry; the others are (also) sent by clients.
        self.answer_only: set[str] = set()
        # A message's schema drops the fields a route takes from its path; one message, one schema.
        self.trimmed: dict[str, frozenset[str]] = {}

    def schema_name(self, full_name: str) -> str:
        prefix = f".{self.package}."
        return full_name.removeprefix(prefix) if full_name.startswith(prefix) else full_name.lstrip(".")

    def ref(self, full_name: str, leave_out: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A reference to the schema of a message or enum, made on first use."""
        name = self.schema_name(full_name)
        if full_name in self.index.enums:
            if name not in self.schemas:
                self.schemas[name] = self.enum_schema(self.index.enums[full_name])
            return {"$ref": f"#/components/schemas/{name}"}
        if self.trimmed.setdefault(full_name, leave_out) != leave_out:
            raise UnsupportedError(f"{full_name} is a body with different fields taken from the path")
        if name in (ERROR, ERROR_DETAIL):
            raise UnsupportedError(f"{full_name}: its schema's name is the error's")
        if name not in self.schemas:
            self.schemas[name] = {}  # taken: a message that holds itself refers to it
            self.schemas[name] = self.message_schema(self.index.messages[full_name], leave_out)
        return {"$ref": f"#/components/schemas/{name}"}

    def enum_schema(self, enum: _Enum) -> dict[str, Any]:
        lines = [enum.file.comment(enum.path)]
        for i, value in enumerate(enum.proto.value):
            lines.append(f"- `{value.name}`: {enum.file.comment((*enum.path, ENUM_VALUE, i))}")
        return {"type": "string", "enum": [v.name for v in enum.proto.value], "description": "\n".join(lines)}

    def message_schema(self, message: _Message, leave_out: frozenset[str]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        for i, field in enumerate(message.proto.field):
            if field.name in leave_out:
                continue
            property_schema = self.field_schema(field)
            behaviors = _behaviors(field)
            output_only = field_behavior_pb2.OUTPUT_ONLY in behaviors
            if output_only:
                property_schema["readOnly"] = True
            if field_behavior_pb2.INPUT_ONLY in behaviors:  # never in an answer (a secret)
                property_schema["writeOnly"] = True
            if description := message.file.comment((*message.path, FIELD, i)):
                property_schema["description"] = description
            properties[field.json_name] = _described(property_schema)
            answered = output_only or message.full_name in self.answer_only
            if field_behavior_pb2.REQUIRED in behaviors or (answered and _always_printed(self.index, field)):
                required.append(field.json_name)
        schema: dict[str, Any] = {"type": "object"}
        if description := message.file.comment(message.path):
            schema["description"] = description
        if required:
            schema["required"] = required
        schema["properties"] = properties
        return schema

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if _is_map(self.index, field):
            _, value = self.index.messages[field.type_name].proto.field
            return {"type": "object", "additionalProperties": self.single_schema(value)}
        single = self.single_schema(field)
        return {"type": "array", "items": single} if field.label == F.LABEL_REPEATED else single

    def single_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == F.TYPE_ENUM:
            return self.ref(field.type_name)
        if field.type == F.TYPE_MESSAGE:
            if field.type_name in WELL_KNOWN:
                return dict(WELL_KNOWN[field.type_name])
            if field.type_name.startswith(".google.protobuf."):
                raise UnsupportedError(f"{field.name}: {field.type_name} is not described (yet)")
            return self.ref(field.type_name)
        if field.type not in SCALARS:
            raise UnsupportedError(f"{field.name}: field type {F.Type.Name(field.type)}")
        return dict(SCALARS[field.type])

    def note_answers(self, services: list[descriptor_pb2.ServiceDescriptorProto]) -> None:
        """Finds the messages only answers carry (reachable from an output, from no input)."""
        sent = self._reachable(m.input_type for s in services for m in s.method)
        answered = self._reachable(m.output_type for s in services for m in s.method)
        self.answer_only = answered - sent

    def _reachable(self, roots: Iterator[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in seen or name not in self.index.messages:
                continue
            seen.add(name)
            todo += [f.type_name for f in self.index.messages[name].proto.field if f.type == F.TYPE_MESSAGE]
        return seen


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """A reference with a description or readOnly beside it: OpenAPI 3.0 ignores what stands beside a
    $ref, so the reference goes into an allOf."""
    if "$ref" in schema and len(schema) > 1:
        ref = schema.pop("$ref")
        return {"allOf": [{"$ref": ref}], **schema}
    return schema


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


PATH_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(=\*)?\}")


def _path(template: str, request: _Message) -> tuple[str, list[descriptor_pb2.FieldDescriptorProto]]:
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


def generate(files: descriptor_pb2.FileDescriptorSet, package: str, title: str) -> dict[str, Any]:
    """The OpenAPI document of every service of `package` in a descriptor set (made with
    --include_source_info, which holds the comments)."""
    index = _Index(files)
    generator = _Generator(index, package)
    services = [
        (file, i, service)
        for file in index.files
        if file.proto.package == package
        for i, service in enumerate(file.proto.service)
    ]
    services.sort(key=lambda item: item[2].name)
    generator.note_answers([service for _, _, service in services])
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for file, i, service in services:
        operations = [
            operation
            for j, method in enumerate(service.method)
            for operation in _operations(generator, file, (SERVICE, i, METHOD, j), service, method)
        ]
        if not operations:
            continue
        tags.append({"name": service.name, "description": file.comment((SERVICE, i))})
        for path, verb, operation in operations:
            if verb in paths.setdefault(path, {}):
                raise UnsupportedError(f"{verb.upper()} {path} is routed twice")
            paths[path][verb] = operation
    schemas = {**dict(sorted(generator.schemas.items())), **_error_schemas()}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": package.rpartition(".")[2], "description": INTRODUCTION},
        "servers": [{"url": "/", "description": "This front door (the address the document came from)"}],
        "security": [{}, {SECURITY_SCHEME: []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                status: {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}},
                }
                for status, text in {**ERROR_RESPONSES, "default": "Any other failure."}.items()
            },
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token from `make token`, on the TLS port (8443); a device may "
                    "present a client certificate instead. The local plaintext port (8080) takes none.",
                }
            },
        },
    }


def _operations(
    generator: _Generator,
    file: _File,
    path: tuple[int, ...],
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
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
            "summary": _summary(description),
            "description": description,
        }
        parameters = [_parameter(generator, request, field, "path") for field in bound]
        bound_names = frozenset(field.name for field in bound)
        if rule.body == "*":
            body = generator.ref(method.input_type, bound_names)
        elif rule.body:
            (field,) = [f for f in request.proto.field if f.name == rule.body]
            body = generator.field_schema(field)
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
        operation["responses"] = {"200": _answer(generator, method, rule), **_errors()}
        yield openapi_path, verb, operation


def _request_body(
    generator: _Generator, method: descriptor_pb2.MethodDescriptorProto, body: dict[str, Any]
) -> dict[str, Any]:
    name = generator.schema_name(method.input_type)
    if method.client_streaming:
        return {
            "required": True,
            "description": f"A client stream: a JSON array of {name}, each element one message of the "
            "stream, sent on as it arrives. A single object is refused (400).",
            "content": {"application/json": {"schema": {"type": "array", "items": body}}},
        }
    return {"required": True, "content": {"application/json": {"schema": body}}}


def _answer(
    generator: _Generator, method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule
) -> dict[str, Any]:
    output = generator.index.messages[method.output_type]
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


def _errors() -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{status}"} for status in (*ERROR_RESPONSES, "default")}


def _parameter(
    generator: _Generator, request: _Message, field: descriptor_pb2.FieldDescriptorProto, where: str
) -> dict[str, Any]:
    i = list(request.proto.field).index(field)
    parameter: dict[str, Any] = {"name": field.json_name, "in": where}
    if description := request.file.comment((*request.path, FIELD, i)):
        parameter["description"] = description
    if where == "path" or field_behavior_pb2.REQUIRED in _behaviors(field):
        parameter["required"] = True
    parameter["schema"] = generator.field_schema(field)
    return parameter


def _query_parameters(
    generator: _Generator, request: _Message, field: descriptor_pb2.FieldDescriptorProto, prefix: str
) -> Iterator[dict[str, Any]]:
    """A query parameter per field; a message's fields (not a well-known type's) as `field.sub`."""
    is_message = field.type == F.TYPE_MESSAGE and field.type_name not in WELL_KNOWN
    if _is_map(generator.index, field) or (is_message and field.label == F.LABEL_REPEATED):
        raise UnsupportedError(f"{request.full_name}.{field.name}: a map or list of messages in a query")
    if is_message:
        inner = generator.index.messages[field.type_name]
        for sub in inner.proto.field:
            yield from _query_parameters(generator, inner, sub, f"{prefix}{field.json_name}.")
        return
    parameter = _parameter(generator, request, field, "query")
    parameter["name"] = prefix + parameter["name"]
    yield parameter


def _error_schemas() -> dict[str, Any]:
    return {
        ERROR: {
            "type": "object",
            "description": "Why a request failed: a gRPC status from the service (google.rpc.Status "
            "in JSON), or Envoy's own refusal.",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "integer",
                    "format": "int32",
                    "description": "The gRPC status code when the service answered (3 INVALID_ARGUMENT, "
                    "5 NOT_FOUND, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE, "
                    "4 DEADLINE_EXCEEDED, 13 INTERNAL); the HTTP status when Envoy refused the request "
                    "itself (400, 401, 404, 429).",
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
                "details": {
                    "type": "array",
                    "description": "Details for programs (the service's errors only).",
                    "items": {"$ref": f"#/components/schemas/{ERROR_DETAIL}"},
                },
            },
        },
        ERROR_DETAIL: {
            "type": "object",
            "description": "A google.protobuf.Any in JSON: `@type` names the message, its fields follow. "
            "`type.googleapis.com/google.rpc.BadRequest` (`fieldViolations`: `field`, `description`) "
            "with INVALID_ARGUMENT; `type.googleapis.com/google.rpc.RetryInfo` (`retryDelay`, e.g. "
            '"1s") with UNAVAILABLE.',
            "required": ["@type"],
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": True,
        },
    }


INTRODUCTION = """\
The HTTP/JSON API of Metrics, an IoT metrics pipeline: sensors send readings, the system stores
them, raises events when a sensor stays above a threshold, and answers queries. Every route is a
gRPC method of `protos/` (package metrics.v1) that Envoy transcodes; this document is generated from
them by `make proto`. The same API is native gRPC on the same ports (reflection lists it).

**Where.** Port 8443 (TLS) needs a bearer token (`make token`) or a device certificate on every
request; port 8080 (plaintext, this machine only) needs none. Answers are HTTP/1.1 or HTTP/2.

**JSON.** Field names are lowerCamelCase. 64-bit integers are strings (`"count": "8"`; requests may
send numbers), times RFC 3339 (`2026-11-28T09:00:00Z`), durations seconds (`"3600s"`), enums their
names. An answer carries every field, with its default value when unset (`0`, `""`, `[]`), but a
message or an `optional` number that is unset. Unknown query parameters are refused (400); unknown
fields of a body are ignored.

**Errors** are JSON `{"code", "message", "details"}` with the HTTP status of the gRPC status (see
`Error`)."""
