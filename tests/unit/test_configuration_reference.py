"""docs/configuration.md: every setting of every settings class, with its description, and up to date."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.settings import secret
from stack import generated
from stack.configuration_reference import SECTIONS, Section, Undocumented, render, section_text
from stack.settings import ROOT

DOCUMENT = Path("docs/configuration.md")


@dataclass(frozen=True)
class Documented:
    # How many, a count.
    size: int = 3
    # Where it is.
    place: Path = ROOT / "state"
    # Who may come in.
    token: str = secret("")


@dataclass(frozen=True)
class Override(Documented):
    size: int = 5


@dataclass(frozen=True)
class Unsaid(Documented):
    # Said.
    said: str = ""
    # Cut off from its field by a blank line, a comment documents nothing.

    unsaid: float = 1.5


def test_every_field_of_every_class_is_in_the_document() -> None:
    document = render()
    for section in SECTIONS:
        for field in dataclasses.fields(section.settings):
            assert f"| `{section.variable(field.name)}` |" in document, (section.service, field.name)


def test_names_are_the_service_specific_ones_but_the_stacks() -> None:
    names = {s.service: s for s in SECTIONS}
    assert names["saver"].variable("postgres_password") == "METRICS_SAVER_POSTGRES_PASSWORD"
    assert names["stack"].variable("envoy_port") == "METRICS_ENVOY_PORT"


def test_a_row_has_the_type_default_and_comment() -> None:
    text = section_text(Section("Example", "example", Documented, "About."))
    assert "| `METRICS_EXAMPLE_SIZE` | int | `3` | How many, a count. |" in text
    assert "| `METRICS_EXAMPLE_PLACE` | path | `<checkout>/state` | Where it is. |" in text
    assert '| `METRICS_EXAMPLE_TOKEN` | str, secret | `""` | Who may come in. |' in text


def test_an_override_without_a_comment_keeps_the_bases() -> None:
    text = section_text(Section("Example", "example", Override, "About."))
    assert "| `METRICS_EXAMPLE_SIZE` | int | `5` | How many, a count. |" in text


def test_an_undocumented_field_is_an_error() -> None:
    with pytest.raises(Undocumented, match=r"Unsaid: no comment above unsaid;"):
        section_text(Section("Example", "example", Unsaid, "About."))


def test_the_document_does_not_depend_on_where_the_checkout_is() -> None:
    assert str(ROOT) not in render()


def test_the_committed_document_is_what_the_generator_writes() -> None:
    files = generated.generated()
    assert DOCUMENT in files
    assert generated.check({DOCUMENT: files[DOCUMENT]}) == []
