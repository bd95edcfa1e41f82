"""The descriptor set read: its messages and enums by full name, their fields' behaviours, and the
comments of every element as Markdown."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto

# Paths into a FileDescriptorProto (descriptor.proto's field numbers), for the comments.
MESSAGE_TYPE, ENUM_TYPE, SERVICE = 4, 5, 6
FIELD, NESTED_TYPE, NESTED_ENUM, METHOD, ENUM_VALUE = 2, 3, 4, 2, 2


@dataclass(frozen=True)
class Message:
    proto: descriptor_pb2.DescriptorProto
    file: File
    path: tuple[int, ...]
    full_name: str  # with a leading dot, as type_name has it


@dataclass(frozen=True)
class Enum:
    proto: descriptor_pb2.EnumDescriptorProto
    file: File
    path: tuple[int, ...]
    full_name: str


class File:
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


def summary(text: str) -> str:
    """The first sentence of a comment."""
    first = text.split("\n\n", maxsplit=1)[0].replace("\n", " ")
    match = re.match(r"(.+?\.)(\s|$)", first)
    return (match.group(1) if match else first).rstrip(".")


class Index:
    """Every message and enum of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = [File(proto) for proto in files.file]
        self.messages: dict[str, Message] = {}
        self.enums: dict[str, Enum] = {}
        for file in self.files:
            scope = f".{file.proto.package}" if file.proto.package else ""
            for i, message in enumerate(file.proto.message_type):
                self._add_message(message, file, (MESSAGE_TYPE, i), scope)
            for i, enum in enumerate(file.proto.enum_type):
                name = f"{scope}.{enum.name}"
                self.enums[name] = Enum(enum, file, (ENUM_TYPE, i), name)

    def _add_message(
        self, message: descriptor_pb2.DescriptorProto, file: File, path: tuple[int, ...], scope: str
    ) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = Message(message, file, path, name)
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, file, (*path, NESTED_TYPE, i), name)
        for i, enum in enumerate(message.enum_type):
            enum_name = f"{name}.{enum.name}"
            self.enums[enum_name] = Enum(enum, file, (*path, NESTED_ENUM, i), enum_name)


def field_behaviors(field: descriptor_pb2.FieldDescriptorProto) -> set[int]:
    return set(field.options.Extensions[field_behavior_pb2.field_behavior])


def is_map(index: Index, field: descriptor_pb2.FieldDescriptorProto) -> bool:
    message = index.messages.get(field.type_name) if field.type == F.TYPE_MESSAGE else None
    return message is not None and message.proto.options.map_entry
