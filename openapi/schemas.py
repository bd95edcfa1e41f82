"""Messages and enums as JSON schemas, as Envoy's transcoder prints them: the document's components,
made as the routes refer to them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from openapi.descriptors import ENUM_VALUE, FIELD, Enum, F, Index, Message, field_behaviors, is_map
from openapi.errors import ERROR, ERROR_DETAIL
from openapi.unsupported import UnsupportedError

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


def _always_printed(index: Index, field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether the transcoder prints the field in every answer (always_print_primitive_fields): a
    list or map (maybe empty), or a scalar without presence (maybe its default)."""
    if field.label == F.LABEL_REPEATED:
        return True
    if field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP):
        return False
    return not field.proto3_optional and not field.HasField("oneof_index")


class Generator:
    """The schemas of one package's messages and enums, each made the first time it is referred to."""

    def __init__(self, index: Index, package: str) -> None:
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

    def enum_schema(self, enum: Enum) -> dict[str, Any]:
        lines = [enum.file.comment(enum.path)]
        for i, value in enumerate(enum.proto.value):
            lines.append(f"- `{value.name}`: {enum.file.comment((*enum.path, ENUM_VALUE, i))}")
        return {"type": "string", "enum": [v.name for v in enum.proto.value], "description": "\n".join(lines)}

    def message_schema(self, message: Message, leave_out: frozenset[str]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        for i, field in enumerate(message.proto.field):
            if field.name in leave_out:
                continue
            property_schema = self.field_schema(field)
            behaviors = field_behaviors(field)
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
        if is_map(self.index, field):
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
