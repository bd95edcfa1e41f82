"""Every HTTP route of the OpenAPI document (gen/openapi.yaml, which Envoy serves at /openapi.yaml)
answers as documented through Envoy: a request made from the document's parameters and schemas
gets 200 and a body whose fields are exactly those of the documented schema (no field it does not
name, every field it requires, each of its type), and a malformed one gets 400 with the documented
JSON error."""

from __future__ import annotations

import asyncio
import copy
import json
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from testkit import prometheus
from testkit.http import http, http_bytes, http_full
from tests.helpers import eventually, only_alarm, rules_in_force, send
from tests.target import Target

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT: dict[str, Any] = yaml.safe_load((ROOT / "gen" / "openapi.yaml").read_text())
OPERATIONS = [(path, verb) for path, item in DOCUMENT["paths"].items() for verb in item]
# The sensor's readings: three warnings (a threshold event) within the last minutes, so that every
# query has something to answer (the original system's windows end now).
SEEDED = (100.0, 101.0, 102.0)
DISCARD_WEBHOOK = "http://127.0.0.1:9/webhook"


def resolved(schema: Any, answer: bool = True) -> Any:
    """`schema` with its $refs replaced by what they name, and every object schema closed
    (additionalProperties false unless it says otherwise): an answer may hold no field the document
    does not name."""
    if isinstance(schema, list):
        return [resolved(item, answer) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return resolved(DOCUMENT["components"]["schemas"][name], answer)
    out = {key: resolved(value, answer) for key, value in schema.items()}
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
        # OpenAPI 3.0: a required writeOnly property is required in requests only, readOnly in answers only.
        absent = "writeOnly" if answer else "readOnly"
        required = [name for name in out.get("required", []) if not out["properties"][name].get(absent)]
        out.pop("required", None)
        if required:
            out["required"] = required
    return out


def check(schema: dict[str, Any], body: Any, answer: bool = True) -> None:
    validator = jsonschema.Draft4Validator(
        resolved(schema, answer), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, (errors, body)


class Request:
    """A well-formed request of one operation, its values taken from the document and the test's sensor."""

    def __init__(
        self,
        path: str,
        verb: str,
        sensor_id: str,
        now: datetime,
        rule_id: str = "x",
        subscription_id: str = "x",
        alarm_id: str = "0" * 32,
        device_id: str = "x",
        credential_id: str = "x",
    ) -> None:
        self.operation = DOCUMENT["paths"][path][verb]
        self.verb = verb.upper()
        self.sensor_id = sensor_id
        self.now = now
        self.rule_id = rule_id
        self.subscription_id = subscription_id
        self.alarm_id = alarm_id
        self.device_id = device_id
        self.credential_id = credential_id
        self.values: dict[str, str] = {}
        query = {}
        for parameter in self.operation.get("parameters", []):
            value = self.parameter_value(parameter)
            if value is None:
                assert not parameter.get("required"), f"no value for the required {parameter['name']}"
                continue
            self.values[parameter["name"]] = value
            if parameter["in"] == "query":
                query[parameter["name"]] = value
        self.path = path
        self.query = query
        content = self.operation.get("requestBody", {}).get("content", {})
        body = content.get("application/json")
        self.body = None if body is None else self.example(resolved(body["schema"], answer=False), "")
        # A raw body: line protocol, or Prometheus's remote write or read, of the test's sensor.
        at_s = int((self.now - timedelta(minutes=1)).timestamp())
        self.raw: bytes | None = None
        if "text/plain" in content:
            self.raw = f"temperature,sensor={sensor_id} value=21.5 {at_s * 1_000_000_000}".encode()
        elif "application/x-protobuf" in content and path == "/api/v1/write":
            self.raw = prometheus.write_body(
                [({"__name__": "temperature", "sensor": sensor_id}, [(21.5, at_s * 1000)])]
            )
        elif "application/x-protobuf" in content:
            self.raw = prometheus.read_body(
                (at_s - 3600) * 1000, (at_s + 3600) * 1000, ("sensor", "=", sensor_id)
            )

    def parameter_value(self, parameter: dict[str, Any]) -> str | None:
        name = parameter["name"]
        known = {
            "sensorId": self.sensor_id, "sensorUuid": self.sensor_id, "sensorIdPrefix": self.sensor_id,
            "metricType": "temperature", "kind": "EVENT_KIND_THRESHOLD_EXCEEDED", "pageSize": "50",
            "startTime": _rfc3339(self.now - timedelta(hours=1)), "endTime": _rfc3339(self.now + timedelta(minutes=5)),
            "bucketWidth": "600s", "ruleId": self.rule_id, "subscriptionId": self.subscription_id,
            "alarmId": self.alarm_id, "deviceId": self.device_id, "deviceIdPrefix": self.sensor_id,
            "credentialId": self.credential_id,
        }  # fmt: skip
        return known.get(name)

    def example(self, schema: dict[str, Any], name: str) -> Any:
        """A value of `schema` for a field called `name`: the required fields of objects, one item of
        lists, the readings of the test's sensor."""
        if "allOf" in schema:
            return self.example(schema["allOf"][0], name)
        kind = schema.get("type")
        if kind == "object":
            required = schema.get("required", [])
            example = {key: self.example(schema["properties"][key], key) for key in required}
            if (
                "sensorIdPrefix" in schema["properties"]
            ):  # a rule or a subscription: of the test's sensor only
                example["sensorIdPrefix"] = self.sensor_id
            if "silence" in schema["properties"]:  # a threshold rule (a silence rule has no type)
                example["metricType"] = "temperature"
            return example
        if kind == "array":
            return [self.example(schema["items"], name)]
        named = {
            "sensorId": self.sensor_id, "metricType": "temperature", "value": 21.5, "temperature": 21.5,
            # A webhook on the discard port of this machine (the local stack allows loopback).
            "url": DISCARD_WEBHOOK, "secret": "s" * 32,
            # A device of a batch: of the test's sensor, and not the one the routes name.
            "deviceId": f"{self.sensor_id}-batch",
        }  # fmt: skip
        if name in named:
            return named[name]
        if schema.get("format") == "date-time":
            return _rfc3339(self.now - timedelta(minutes=1))
        if schema.get("format") == "int64":
            return str(
                int((self.now - timedelta(minutes=1)).timestamp() * 1000)
            )  # an epoch-milliseconds time
        return {"string": "x", "number": 1.5, "integer": 1, "boolean": True}[kind]

    @property
    def url_path(self) -> str:
        path = self.path
        for name, value in self.values.items():
            path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
        return path + (f"?{urllib.parse.urlencode(self.query)}" if self.query else "")

    def malformed(self) -> tuple[str, bytes | None]:
        """(path and query, raw body) of the same request made wrong: a body that is not JSON, else
        a typed parameter that is not of its type, else a required path parameter left empty (at the
        path's end: a query parameter the route does not take)."""
        if self.body is not None:
            raw = json.dumps(self.body).encode()
            return self.url_path, raw[:-2] if len(raw) > 2 else b"{"  # an empty body is a valid {}
        if self.raw is not None:
            return self.url_path, b"not line protocol, not snappy"
        for parameter in self.operation.get("parameters", []):
            schema = resolved(parameter["schema"])
            if parameter["in"] == "query" and (
                schema.get("format") or schema.get("enum") or schema.get("pattern")
            ):
                self.query = {**self.query, parameter["name"]: "not-a-" + schema.get("format", "value")}
                return self.url_path, None
        (name, *_) = [p["name"] for p in self.operation["parameters"] if p["in"] == "path"]
        if self.path.endswith("{" + name + "}"):
            # Left empty at the end, the path is another route's (or none): a query parameter the
            # route does not take, which Envoy refuses.
            self.query = {**self.query, "unknownParameter": "1"}
            return self.url_path, None
        self.values[name] = ""
        return self.url_path, None


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def seed(
    target: Target, sensor_id: str, now: datetime, values: tuple[float, ...], first: int = 0
) -> None:
    """Readings of the sensor, a second apart from `first` seconds after ten minutes ago."""
    start = now - timedelta(minutes=10)
    metrics = [
        {"sensorId": sensor_id, "metricType": "temperature", "value": value, "unit": "celsius",
         "labels": {"site": "plant-7"}, "readingTime": _rfc3339(start + timedelta(seconds=first + i))}
        for i, value in enumerate(values)
    ]  # fmt: skip
    assert await http("POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": metrics}) == (
        200,
        {"acceptedCount": len(values)},
    )


async def events_stored(target: Target, sensor_id: str, count: int, now: datetime) -> None:
    window = urllib.parse.urlencode(
        {"startTime": _rfc3339(now - timedelta(hours=1)), "endTime": _rfc3339(now + timedelta(minutes=5))}
    )

    async def stored() -> None:
        status, body = await http(
            "GET", f"{target.envoy_url}/v1/events?sensorId={sensor_id}&metricType=temperature&{window}"
        )
        assert status == 200 and len(body["events"]) == count, body

    await eventually(stored)


async def test_envoy_serves_the_document_and_its_page(target: Target) -> None:
    status, headers, body = await asyncio.to_thread(http_bytes, "GET", f"{target.envoy_url}/openapi.yaml")
    assert status == 200 and headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(body) == DOCUMENT
    status, headers, page = await asyncio.to_thread(http_bytes, "GET", f"{target.envoy_url}/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/docs/vendor/swagger-ui-bundle.js"' in page


@pytest.fixture
async def rule_id(target: Target, sensor_id: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A rule for the test's sensor alone (a higher threshold than its readings reach), for the
    routes that name one; for the alarms' routes, the rule of their alarm (a "pressure" rule that its
    first reading raises). Every rule of the sensor is deleted afterwards."""
    rule = {"metricType": "temperature", "threshold": 1000, "sensorIdPrefix": sensor_id}
    if request.node.callspec.params["path"].startswith("/v1/alarms"):
        rule = {"metricType": "pressure", "threshold": 0, "sensorIdPrefix": sensor_id}
    status, body = await http("POST", f"{target.envoy_url}/v1/rules", rule)
    assert status == 200, body
    yield body["ruleId"]
    status, listed = await http("GET", f"{target.envoy_url}/v1/rules?pageSize=1000")
    for made in listed["rules"]:
        if made["sensorIdPrefix"] == sensor_id:
            await http("DELETE", f"{target.envoy_url}/v1/rules/{made['ruleId']}")


@pytest.fixture
async def subscription_id(target: Target, sensor_id: str) -> AsyncIterator[str]:
    """A subscription to the test's sensor's events alone, for the routes that name one; every
    subscription of the sensor is deleted afterwards."""
    subscription = {"url": DISCARD_WEBHOOK, "secret": "s" * 32, "sensorIdPrefix": sensor_id}
    status, body = await http("POST", f"{target.envoy_url}/v1/subscriptions", subscription)
    assert status == 200, body
    yield body["subscription"]["subscriptionId"]
    status, listed = await http("GET", f"{target.envoy_url}/v1/subscriptions?pageSize=1000")
    for made in listed["subscriptions"]:
        if made["sensorIdPrefix"] == sensor_id:
            await http("DELETE", f"{target.envoy_url}/v1/subscriptions/{made['subscriptionId']}")


@pytest.fixture
async def alarm_id(target: Target, sensor_id: str, rule_id: str, request: pytest.FixtureRequest) -> str:
    """An alarm of the test's sensor, for the alarms' routes (raised by the rule_id rule); a
    well-formed id of none elsewhere."""
    if not request.node.callspec.params["path"].startswith("/v1/alarms"):
        return "0" * 32
    await rules_in_force(target)
    await send(target.envoy_url, sensor_id, "pressure", 1.0)
    return await only_alarm(target.envoy_url, sensor_id)


@pytest.fixture
async def device_id(target: Target, sensor_id: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A device named after the test's sensor: made beforehand for the routes that name or list
    one, not for the one that creates it; every device of the sensor is deleted afterwards."""
    made = f"{sensor_id}-device"
    params = request.node.callspec.params
    if (params["path"], params["verb"]) != ("/v1/devices", "post"):
        status, body = await http("POST", f"{target.envoy_url}/v1/devices?deviceId={made}", {})
        assert status == 200, body
    yield made
    status, listed = await http("GET", f"{target.envoy_url}/v1/devices?deviceIdPrefix={sensor_id}")
    for device in listed["devices"]:
        await http("DELETE", f"{target.envoy_url}/v1/devices/{device['deviceId']}")


@pytest.fixture
async def credential_id(target: Target, device_id: str, request: pytest.FixtureRequest) -> str:
    """A token's credential of the test's device, for the route that revokes one."""
    if "{credentialId}" not in request.node.callspec.params["path"]:
        return "x"
    status, body = await http("POST", f"{target.envoy_url}/v1/devices/{device_id}:issueToken", {})
    assert status == 200, body
    return str(body["credential"]["credentialId"])


@pytest.mark.parametrize(("path", "verb"), OPERATIONS, ids=[f"{v.upper()} {p}" for p, v in OPERATIONS])
async def test_the_route_answers_as_documented(
    target: Target, sensor_id: str, rule_id: str, subscription_id: str, alarm_id: str, device_id: str,
    credential_id: str, path: str, verb: str,
) -> None:  # fmt: skip
    now = datetime.now(UTC)
    await seed(target, sensor_id, now, SEEDED)
    await events_stored(target, sensor_id, 1, now)
    request = Request(
        path, verb, sensor_id, now, rule_id, subscription_id, alarm_id, device_id, credential_id
    )
    answer = request.operation["responses"]["200"]["content"]
    if "text/event-stream" in answer:
        events = await read_events(target, request, sensor_id, now)
        check(answer["text/event-stream"]["x-itemSchema"], events[0])
        assert sensor_id in json.dumps(events[0])
        return
    url = target.envoy_url + request.url_path
    if "application/x-protobuf" in answer:  # remote read: the seeded readings, as Prometheus reads them
        status, headers, raw = await asyncio.to_thread(http_bytes, request.verb, url, raw=request.raw)
        assert (status, headers["content-type"]) == (200, "application/x-protobuf"), raw[:300]
        [series] = prometheus.read_answer(raw)
        assert {labels["sensor"] for labels, _ in series} == {sensor_id}, series
        return
    status, headers, body = await (
        http_full(request.verb, url, raw=request.raw)
        if request.raw
        else http_full(request.verb, url, request.body)
    )
    assert status == 200, (request.url_path, request.body, body)
    assert headers["content-type"].startswith("application/json")
    check(answer["application/json"]["schema"], body)
    if request.verb == "GET":
        assert sensor_id in json.dumps(body), f"an answer about another sensor, or none: {body}"


@pytest.mark.parametrize(("path", "verb"), OPERATIONS, ids=[f"{v.upper()} {p}" for p, v in OPERATIONS])
async def test_a_malformed_request_gets_the_documented_error(
    target: Target, sensor_id: str, rule_id: str, subscription_id: str, alarm_id: str, device_id: str,
    credential_id: str, path: str, verb: str,
) -> None:  # fmt: skip
    request = Request(
        path, verb, sensor_id, datetime.now(UTC), rule_id, subscription_id, alarm_id, device_id, credential_id
    )
    url_path, raw = request.malformed()
    status, headers, body = await http_full(request.verb, target.envoy_url + url_path, raw=raw)
    assert status == 400, (url_path, raw, body)
    assert headers["content-type"].startswith("application/json")
    error = request.operation["responses"]["400"]["$ref"].removeprefix("#/components/responses/")
    check(DOCUMENT["components"]["responses"][error]["content"]["application/json"]["schema"], body)


async def read_events(target: Target, request: Request, sensor_id: str, now: datetime) -> list[Any]:
    """Opens the stream, raises one more event of the sensor, and returns the events' data."""
    host, port = target.envoy.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {request.url_path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert b" 200 " in await asyncio.wait_for(reader.readline(), 10)
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["content-type"] == "text/event-stream"
        # The counter is at 3: a reading below the threshold resets it, three warnings raise an event.
        await seed(target, sensor_id, now, (10.0, 100.0, 100.0, 100.0), first=len(SEEDED))
        while True:
            line = (await asyncio.wait_for(reader.readline(), 30)).decode()
            # Chunked transfer: chunk sizes and SSE lines interleave; the events are the data lines.
            if line.startswith("data:"):
                return [json.loads(line.removeprefix("data:"))]
    finally:
        writer.close()


def test_every_documented_schema_is_reachable_from_a_route() -> None:
    """A schema no route uses would be checked by no test here."""
    text = json.dumps({"paths": DOCUMENT["paths"], "responses": DOCUMENT["components"]["responses"]})
    used: set[str] = set()
    todo = [text]
    while todo:
        chunk = todo.pop()
        for name in DOCUMENT["components"]["schemas"]:
            if f'"#/components/schemas/{name}"' in chunk and name not in used:
                used.add(name)
                todo.append(json.dumps(DOCUMENT["components"]["schemas"][name]))
    assert used == set(DOCUMENT["components"]["schemas"])


def test_examples_follow_the_document() -> None:
    """The requests this file makes are what the document describes (request schemas validate)."""
    for path, verb in OPERATIONS:
        request = Request(path, verb, "s-1", datetime.now(UTC))
        body = request.operation.get("requestBody")
        if body is not None and (
            "text/plain" in body["content"] or "application/x-protobuf" in body["content"]
        ):
            assert request.raw, path  # the raw body: line protocol, Prometheus's protobuf
        elif body is not None:
            schema = copy.deepcopy(body["content"]["application/json"]["schema"])
            check(schema, request.body, answer=False)
