"""The OpenAPI document of the HTTP/JSON API (openapi/, written by `make proto` to gen/openapi.yaml): a
valid OpenAPI 3.0 document with every google.api.http route of protos/, and the JSON as Envoy's
transcoder writes it. What each route answers is checked through Envoy by
tests/integration/test_openapi_routes.py."""

from __future__ import annotations

import sysconfig
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from openapi_spec_validator import validate

from metrics.v1 import (
    alarms_service_pb2,
    assessor_service_pb2,
    devices_service_pb2,
    event_pb2,
    notifier_service_pb2,
    receiver_service_pb2,
    rules_service_pb2,
)
from openapi.__main__ import dump
from openapi.document import generate
from openapi.unsupported import UnsupportedError

ROOT = Path(__file__).resolve().parents[2]
SITE = sysconfig.get_paths()["purelib"]
WELL_KNOWN = resources.files("grpc_tools") / "_proto"
DESCRIPTOR_SET = ROOT / "gen" / "metrics.binpb"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return generate(descriptor_set(), "metrics.v1", "Metrics")


def schemas(document: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"]
    return found


def parameters(document: dict[str, Any], path: str, verb: str = "get") -> dict[str, Any]:
    return {p["name"]: p for p in document["paths"][path][verb].get("parameters", [])}


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.0.3"
    # As written to the file, too (YAML with literal blocks reads back the same).
    assert yaml.safe_load(dump(document)) == document


def test_make_proto_wrote_what_the_generator_makes_now(document: dict[str, Any]) -> None:
    assert yaml.safe_load((ROOT / "gen" / "openapi.yaml").read_text()) == document


def test_every_http_route_of_the_protos_is_in_the_document_and_nothing_else(document: dict[str, Any]) -> None:
    routes = set()
    for module in (
        receiver_service_pb2, assessor_service_pb2, rules_service_pb2, alarms_service_pb2, notifier_service_pb2,
        devices_service_pb2,
    ):  # fmt: skip
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if options.HasExtension(annotations_pb2.http):
                    first = options.Extensions[annotations_pb2.http]
                    for n, rule in enumerate([first, *first.additional_bindings]):
                        verb = rule.WhichOneof("pattern")
                        suffix = f"_{n + 1}" if n else ""
                        routes.add((verb, getattr(rule, verb), f"{service.name}_{method.name}{suffix}"))
    documented = {
        (verb, path, operation["operationId"])
        for path, item in document["paths"].items()
        for verb, operation in item.items()
    }
    # Paths name their variables by JSON name: {sensor_id} is {sensorId}.
    assert {(v, p.replace("_id}", "Id}").replace("_uuid}", "Uuid}"), o) for v, p, o in routes} == documented
    assert len(documented) == 42  # every method but the bidirectional SyncMetrics, and /api/v2/write


def test_field_behavior_is_required_and_read_only(document: dict[str, Any]) -> None:
    metric = schemas(document)["Metric"]
    assert metric["required"] == ["sensorId", "metricType", "value"]  # REQUIRED; the rest OPTIONAL
    event = schemas(document)["Event"]
    assert all(p.get("readOnly") for p in event["properties"].values())  # OUTPUT_ONLY
    # Output only and printed in every answer: required (in answers only, as readOnly says). Unset
    # Timestamps are not printed.
    assert "eventId" in event["required"] and "readingTime" not in event["required"]
    listing = parameters(document, "/v1/events")
    assert listing["startTime"]["required"] and listing["endTime"]["required"]
    assert "required" not in listing["sensorId"]
    # A field the route takes from the path is not in the body.
    legacy = schemas(document)["RecordLegacyMeasurementRequest"]
    assert set(legacy["properties"]) == {"temperature", "at"} and legacy["required"] == ["temperature"]
    assert (
        parameters(document, "/api/v1/sensors/{sensorUuid}/measurements", "post")["sensorUuid"]["in"]
        == "path"
    )


def test_json_is_as_the_transcoder_writes_it(document: dict[str, Any]) -> None:
    found = schemas(document)
    # Names: lowerCamelCase, or the field's json_name.
    assert set(found["LegacyEvent"]["properties"]) == {"temperature", "at", "type"}
    assert "averageLast7Days" in found["GetLegacyMeasurementsResponse"]["properties"]
    stats = found["SensorStats"]["properties"]
    assert stats["startTime"]["format"] == "date-time" and stats["startTime"]["type"] == "string"
    assert stats["count"] == {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$", "readOnly": True,
                              "description": "Number of readings in the range."}  # fmt: skip
    assert found["PushMetricsResponse"]["properties"]["acceptedCount"]["type"] == "integer"  # int32
    width = parameters(document, "/v1/sensors/{sensorId}/stats")["bucketWidth"]["schema"]
    assert width["type"] == "string" and width["example"] == "3600s"
    assert found["EventKind"]["enum"] == list(event_pb2.EventKind.keys())  # by name, all of them
    assert found["Metric"]["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    # An `optional` number is absent when unset: not required even in an answer.
    assert found["GetLegacyMeasurementsResponse"]["required"] == ["sensorUuid"]


def test_streams_are_a_json_array_in_and_server_sent_events_out(document: dict[str, Any]) -> None:
    stream = document["paths"]["/v1/metrics:stream"]["post"]["requestBody"]["content"]["application/json"]
    assert stream["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/StreamMetricsRequest"},
    }
    watch = document["paths"]["/v1/events:watch"]["get"]["responses"]["200"]["content"]
    assert set(watch) == {"text/event-stream"}
    assert watch["text/event-stream"]["x-itemSchema"] == {"$ref": "#/components/schemas/WatchEventsResponse"}


def test_every_route_documents_the_json_error(document: dict[str, Any]) -> None:
    for item in document["paths"].values():
        for operation in item.values():
            assert {"400", "default"} <= set(operation["responses"])
    error = schemas(document)["Error"]
    assert error["required"] == ["code", "message"]
    assert set(error["properties"]) == {"code", "message", "details"}


def test_envoy_transcodes_as_the_document_says() -> None:
    """The transcoder's options the document describes (envoy/envoy.yaml)."""
    config = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    (listener, *_) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (transcoder,) = [f for f in manager["http_filters"] if f["name"].endswith("grpc_json_transcoder")]
    typed = transcoder["typed_config"]
    assert typed["print_options"] == {
        "always_print_primitive_fields": True,
        "stream_sse_style_delimited": True,
    }
    assert "preserve_proto_field_names" not in typed["print_options"]
    assert typed["convert_grpc_status"] is True
    assert typed["request_validation_options"]["reject_unknown_query_parameters"] is True


PROTO = """syntax = "proto3";
package t.v1;
import "google/api/annotations.proto";
import "google/protobuf/struct.proto";
service Things {
  // Gets a thing.
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {ROUTE};
  }
}
// Which thing. (-- api-linter: core::0131::request-name-field=disabled
//     aip.dev/not-precedent: a note for linters only. --)
message GetThingRequest {
  string thing_id = 1;
  Filter filter = 2;
}
// A filter.
message Filter {
  string colour = 1;
}
// A thing.
message Thing {
  string thing_id = 1;
  google.protobuf.Struct extra = 2;
}
"""


def generated(tmp_path: Path, route: str, proto: str = PROTO) -> dict[str, Any]:
    (tmp_path / "t/v1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "t/v1/thing.proto").write_text(proto.replace("ROUTE", route))
    out = tmp_path / "set.binpb"
    code = protoc.main(
        ["protoc", f"-I{tmp_path}", f"-I{SITE}", f"-I{WELL_KNOWN}", "--include_imports", "--include_source_info",
         f"--descriptor_set_out={out}", "t/v1/thing.proto"]
    )  # fmt: skip
    assert code == 0
    return generate(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()), "t.v1", "T")


def test_a_message_in_a_query_is_flattened_and_linter_notes_are_left_out(tmp_path: Path) -> None:
    proto = PROTO.replace("google.protobuf.Struct extra = 2;", "")
    document = generated(tmp_path, 'get: "/v1/things/{thing_id}"', proto)
    operation = document["paths"]["/v1/things/{thingId}"]["get"]
    assert [(p["name"], p["in"]) for p in operation["parameters"]] == [
        ("thingId", "path"),
        ("filter.colour", "query"),
    ]
    assert document["components"]["schemas"].get("GetThingRequest") is None  # a query is no schema
    validate(document)


def test_what_it_cannot_describe_is_refused_not_guessed(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="Struct"):
        generated(tmp_path, 'get: "/v1/things/{thing_id}"')
    proto = PROTO.replace("google.protobuf.Struct extra = 2;", "")
    with pytest.raises(UnsupportedError, match="custom"):
        generated(tmp_path, 'custom: {kind: "HEAD", path: "/v1/things"}', proto)
    with pytest.raises(UnsupportedError, match="path variable"):
        generated(tmp_path, 'get: "/v1/{thing_id=things/*}"', proto)


def test_comments_become_descriptions_without_linter_notes(tmp_path: Path) -> None:
    proto = PROTO.replace("google.protobuf.Struct extra = 2;", "")
    document = generated(tmp_path, 'post: "/v1/things:get" body: "*"', proto)
    body = document["components"]["schemas"]["GetThingRequest"]
    assert body["description"] == "Which thing."
    assert document["paths"]["/v1/things:get"]["post"]["summary"] == "Gets a thing"
