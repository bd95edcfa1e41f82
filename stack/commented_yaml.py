"""YAML for people to read: block mappings with comments, anchors and merge keys, scripts as literal
blocks, short lists on one line. What a generated file that people open (docker-compose.yml) needs
and yaml.safe_dump lacks: comments, and anchors named and placed by the generator.

A document is made of dicts, lists, scalars and the wrappers below; `plain` gives what a YAML loader
reads back (but merges), `variant` writes one mapping as a merge of another plus its differences.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

MERGE = "<<"
# Lines that fit (a list on one line), comments that read well.
WIDTH, COMMENT_WIDTH = 110, 100


@dataclass(frozen=True)
class Note:
    """A value with the comment written above its key (or list item): why it is so."""

    comment: str
    value: object


@dataclass(frozen=True)
class Anchor:
    """A mapping that others merge (`&name`)."""

    name: str
    value: Mapping[str, object]


@dataclass(frozen=True)
class Alias:
    """The mapping anchored as `name` (`*name`), as the value of a merge key."""

    name: str


def unwrapped(value: object) -> object:
    """The value without its comment and anchor."""
    while isinstance(value, Note | Anchor):
        value = value.value
    return value


def plain(value: object) -> object:
    """The data a loader reads (a merge key is kept as is: only a loader knows its anchors)."""
    value = unwrapped(value)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def variant(name: str, base: Mapping[str, object], full: Mapping[str, object]) -> dict[str, object]:
    """`full` as the merge of `base` (anchored as `name`) and the entries that differ from it; an entry
    whose base is anchored too is itself such a merge. A merge adds and replaces, never removes: every
    key of `base` must be in `full`."""
    if missing := set(base) - set(full):
        raise ValueError(f"a merge of {name} cannot remove {sorted(missing)}")
    merged: dict[str, object] = {MERGE: Alias(name)}
    for key, value in full.items():
        if key in base and plain(value) == plain(base[key]):
            continue
        inner, base_inner = unwrapped(value), base.get(key)
        while isinstance(base_inner, Note):
            base_inner = base_inner.value
        if isinstance(base_inner, Anchor) and isinstance(inner, Mapping):
            inner = variant(base_inner.name, base_inner.value, inner)
        merged[key] = Note(value.comment, inner) if isinstance(value, Note) else inner
    return merged


def dump(document: Mapping[str, object], header: str, spaced: Sequence[str] = ()) -> str:
    """The document after its header comment (lines as given), a blank line between its top-level
    entries and between the entries of those named in `spaced`."""
    lines = comment(header)
    for key, value in document.items():
        lines.append("")
        if key not in spaced:
            lines += _entry(key, value, 0)
            continue
        lines += [*_comment(value, 0), f"{key}:"]
        for number, (inner_key, inner) in enumerate(_mapping(unwrapped(value)).items()):
            lines += [""] * (number > 0) + _entry(inner_key, inner, 2)
    return "\n".join(lines) + "\n"


def _mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise TypeError(f"a mapping expected, not {value!r}")
    return value


def comment(text: str, indent: int = 0) -> list[str]:
    """Comment lines: each line of `text` a paragraph, wrapped to COMMENT_WIDTH columns (but those
    that start with a space: commands to type)."""
    pad = " " * indent
    lines = []
    for paragraph in text.splitlines():
        wrapped = (
            [paragraph] if paragraph.startswith(" ") else textwrap.wrap(paragraph, COMMENT_WIDTH - indent - 2)
        )
        lines += [f"{pad}# {line}".rstrip() for line in wrapped or [""]]
    return lines


def _comment(value: object, indent: int) -> list[str]:
    """The comments of a Note (and of the Notes it wraps)."""
    if not isinstance(value, Note):
        return []
    return comment(value.comment, indent) + _comment(value.value, indent)


def _entry(key: str, value: object, indent: int) -> list[str]:
    pad = " " * indent
    lines = _comment(value, indent)
    while isinstance(value, Note):
        value = value.value
    anchor = ""
    if isinstance(value, Anchor):
        anchor, value = f" &{value.name}", value.value
    name = key if key == MERGE else _scalar(key)
    if isinstance(value, Alias):
        return [*lines, f"{pad}{name}: *{value.name}"]
    if isinstance(value, Mapping) and value:
        lines.append(f"{pad}{name}:{anchor}")
        for inner_key, inner in value.items():
            lines += _entry(inner_key, inner, indent + 2)
        return lines
    if anchor:
        raise TypeError(f"{key}: only a mapping is anchored")
    if isinstance(value, list | tuple) and value:
        flow = _flow(value)
        if flow is not None and len(f"{pad}{name}: {flow}") <= WIDTH:
            return [*lines, f"{pad}{name}: {flow}"]
        lines.append(f"{pad}{name}:")
        for item in value:
            lines += _item(item, indent + 2)
        return lines
    if isinstance(value, str) and _is_block(value):
        return [*lines, f"{pad}{name}: {_block(value, indent + 2)}"]
    return [*lines, f"{pad}{name}:" if value is None else f"{pad}{name}: {_scalar(value)}"]


def _item(item: object, indent: int) -> list[str]:
    """A list item: a scalar, or a script as a literal block."""
    pad = " " * indent
    lines = _comment(item, indent)
    item = unwrapped(item)
    if isinstance(item, Mapping | list | tuple):
        raise TypeError(f"list items are scalars here, not {item!r}")
    if isinstance(item, str) and _is_block(item):
        return [*lines, f"{pad}- {_block(item, indent + 2)}"]
    return [*lines, f"{pad}- {_scalar(item)}"]


def _flow(items: Sequence[object]) -> str | None:
    """The list on one line ([a, b]), when its items are one-line scalars without comments."""
    if any(
        isinstance(i, Note | Mapping | list | tuple) or (isinstance(i, str) and _is_block(i)) for i in items
    ):
        return None
    return _scalar(list(items))


def _is_block(text: str) -> bool:
    """Written as a literal block: a script of several lines, or one with backslashes (which a quoted
    scalar would have to escape)."""
    return "\n" in text.rstrip("\n") or "\\" in text


def _block(text: str, indent: int) -> str:
    """A literal block scalar (`|`, or `|-` without the last newline), its lines indented."""
    if (
        text.startswith((" ", "\n"))
        or text.endswith("\n\n")
        or any(line != line.rstrip() for line in text.split("\n"))
    ):
        raise ValueError(f"a literal block cannot keep the spaces of {text!r}")
    pad = " " * indent
    body = [f"{pad}{line}" if line else "" for line in text.removesuffix("\n").split("\n")]
    return "\n".join(["|" if text.endswith("\n") else "|-", *body])


def _scalar(value: object) -> str:
    """A scalar (or a list of scalars) in flow style, quoted only where YAML needs it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=sys.maxsize, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...")
