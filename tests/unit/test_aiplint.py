"""aiplint, the AIP checks of protos/ that buf lacks: clean on protos/, and each rule catches what it
names and honours an api-linter disable comment."""

from __future__ import annotations

import sysconfig
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from aiplint import lint

ROOT = Path(__file__).resolve().parents[2]
SITE = sysconfig.get_paths()["purelib"]
# The well-known types (google/protobuf/*.proto) come with grpcio-tools.
WELL_KNOWN = resources.files("grpc_tools") / "_proto"

HEADER = """syntax = "proto3";
package lint.v1;
import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/timestamp.proto";
"""

SERVICE = """
service BookService {
  rpc ListBooks(ListBooksRequest) returns (ListBooksResponse) {
    option (google.api.http) = {get: "/v1/books"};
  }
}
message ListBooksRequest {
  int32 page_size = 1 [(google.api.field_behavior) = OPTIONAL];
  string page_token = 2 [(google.api.field_behavior) = OPTIONAL];
}
message ListBooksResponse {
  repeated Book books = 1;
  string next_page_token = 2;
}
"""

GOOD_BOOK = """
message Book {
  string title = 1 [(google.api.field_behavior) = REQUIRED];
  int32 page_count = 2 [(google.api.field_behavior) = OUTPUT_ONLY];
  google.protobuf.Timestamp publish_time = 3 [(google.api.field_behavior) = OUTPUT_ONLY];
}
"""


def problems(tmp_path: Path, source: str) -> set[tuple[str, str]]:
    """(element, rule) of each problem of a file lint/v1/book.proto with `source`."""
    (tmp_path / "lint/v1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "lint/v1/book.proto").write_text(source)
    out = tmp_path / "set.binpb"
    code = protoc.main(
        ["protoc", f"-I{tmp_path}", f"-I{SITE}", f"-I{WELL_KNOWN}", "--include_imports", "--include_source_info",
         f"--descriptor_set_out={out}", "lint/v1/book.proto"]
    )  # fmt: skip
    assert code == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {(p.element, p.rule) for p in lint(files, "lint.v1")}


def test_protos_have_no_problems() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen/metrics.binpb").read_bytes())
    assert [str(p) for p in lint(files, "metrics.v1")] == []


def test_a_good_file_has_no_problems(tmp_path: Path) -> None:
    assert problems(tmp_path, HEADER + SERVICE + GOOD_BOOK) == set()


@pytest.mark.parametrize(
    ("book", "expected"),
    [
        ("uint32 page_count = 1 [(google.api.field_behavior) = OUTPUT_ONLY];", "core::0141::forbidden-types"),
        (
            "fixed64 page_count = 1 [(google.api.field_behavior) = OUTPUT_ONLY];",
            "core::0141::forbidden-types",
        ),
        ("int32 num_pages = 1 [(google.api.field_behavior) = OUTPUT_ONLY];", "core::0141::count-suffix"),
        (
            "google.protobuf.Timestamp published = 1 [(google.api.field_behavior) = OUTPUT_ONLY];",
            "core::0142::time-field-names",
        ),
        (
            "int64 publish_time = 1 [(google.api.field_behavior) = OUTPUT_ONLY];",
            "core::0142::time-field-type",
        ),
        ("int64 publish_ms = 1 [(google.api.field_behavior) = OUTPUT_ONLY];", "core::0142::time-field-type"),
        ("string title = 1;", "core::0203::field-behavior-required"),
        (
            "string title = 1 [(google.api.field_behavior) = IMMUTABLE];",
            "core::0203::field-behavior-required",
        ),
        (
            "string title = 1 [(google.api.field_behavior) = REQUIRED, (google.api.field_behavior) = OPTIONAL];",
            "core::0203::required-and-optional",
        ),
        (
            "string title = 1 [(google.api.field_behavior) = IDENTIFIER, (google.api.field_behavior) = REQUIRED];",
            "core::0203::resource-identifier-only",
        ),
    ],
)
def test_a_field_rule_catches_its_problem(tmp_path: Path, book: str, expected: str) -> None:
    name = book.split(" = ", maxsplit=1)[0].rsplit(maxsplit=1)[-1]
    source = HEADER + SERVICE + f"message Book {{\n  {book}\n}}\n"
    assert problems(tmp_path, source) == {(f"Book.{name}", expected)}


def test_a_response_needs_no_field_behavior_but_its_request_does(tmp_path: Path) -> None:
    source = HEADER + SERVICE.replace(" [(google.api.field_behavior) = OPTIONAL]", "", 1) + GOOD_BOOK
    assert problems(tmp_path, source) == {
        ("ListBooksRequest.page_size", "core::0203::field-behavior-required")
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("int32 page_size", "int64 page_size"), "core::0158::request-page-size-field"),
        (("string page_token = 2", "bytes page_token = 2"), "core::0158::request-page-token-field"),
        (
            ("string next_page_token = 2", "string next_token = 2"),
            "core::0158::response-next-page-token-field",
        ),
        (("repeated Book books = 1", "Book books = 1"), "core::0158::response-repeated-first-field"),
        (('option (google.api.http) = {get: "/v1/books"};', ""), "core::0127::http-annotation"),
        (
            (
                "rpc ListBooks(ListBooksRequest) returns (ListBooksResponse)",
                "rpc ListBooks(stream ListBooksRequest) returns (stream ListBooksResponse)",
            ),
            "core::0127::http-annotation",
        ),
    ],
)
def test_a_method_rule_catches_its_problem(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    source = HEADER + SERVICE.replace(*change) + GOOD_BOOK
    assert problems(tmp_path, source) == {("BookService.ListBooks", expected)}


DISABLE = (
    "// (-- api-linter: core::0141::forbidden-types=disabled\n"
    "//     aip.dev/not-precedent: kept for the original clients --)\n"
)
UNSIGNED_BOOK = (
    "message Book {\n"
    "  uint32 page_count = 1 [(google.api.field_behavior) = OUTPUT_ONLY];\n"
    "  uint32 word_count = 2;\n"
    "}\n"
)
WORD_COUNT_BEHAVIOR = ("Book.word_count", "core::0203::field-behavior-required")


def test_a_disable_comment_on_a_field_silences_that_rule_there_only(tmp_path: Path) -> None:
    book = UNSIGNED_BOOK.replace(
        "  uint32 page_count", textwrap.indent(DISABLE, "  ") + "  uint32 page_count"
    )
    assert problems(tmp_path, HEADER + SERVICE + book) == {
        ("Book.word_count", "core::0141::forbidden-types"),
        WORD_COUNT_BEHAVIOR,
    }


@pytest.mark.parametrize("where", ["message", "file"])
def test_a_disable_comment_on_a_message_or_the_file_covers_its_fields(tmp_path: Path, where: str) -> None:
    if where == "file":
        source = DISABLE + "\n" + HEADER + SERVICE + UNSIGNED_BOOK
    else:
        source = HEADER + SERVICE + DISABLE + UNSIGNED_BOOK
    assert problems(tmp_path, source) == {WORD_COUNT_BEHAVIOR}
