"""Bad input, generated with hypothesis, against the running deployment: over protobuf (native gRPC
through Envoy) and over JSON (HTTP through Envoy's transcoder).

Every bad request gets a client error that says what is wrong: HTTP 4xx with a JSON body whose message
or field violations name the offending field, or gRPC INVALID_ARGUMENT with google.rpc.BadRequest field
violations. Never a 5xx, never another status, and the services keep serving.

Nothing of a refused batch is written. Each generated batch carries valid readings of a marker sensor
that nothing else uses; the last test sends a sentinel batch, waits until the saver has consumed
everything, and checks that no marker of a refused batch has a row in PostgreSQL or a record in Kafka,
and that every marker of an accepted batch has exactly its rows.

Cases are derandomized (the same examples on every run) and counted: `pytest -s` prints one line per
test and the total. The stack may be shared with tests that kill its processes, so a request answered
UNAVAILABLE (HTTP 503) or refused at the socket is sent again: by contract nothing of it was done.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import re
import string
import struct
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from metrics.v1 import metric_pb2
from metrics.v1 import receiver_service_pb2 as rs
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from tests.helpers import end_offsets, eventually, past_us, read_topic, wait_consumed
from tests.target import Target

T = TypeVar("T")

# --- the rules, as docs/api.md documents them --------------------------------------------------

SENSOR_ID_RULE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
METRIC_TYPE_RULE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
ID_CHARS = string.ascii_letters + string.digits + "._:-"
TYPE_CHARS = string.ascii_lowercase + string.digits + "_."
MAX_BATCH = 10_000
MAX_UNIT = 32
MAX_LABELS = 16
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256
SKEW_S = 300  # readings may be at most 5 minutes ahead
ENVOY_BODY_LIMIT = 16 * 1024 * 1024
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TS_MIN_S = -62_135_596_800
TS_MAX_S = 253_402_300_799
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The earliest reading time the receiver takes: 2000-01-01T00:00:00Z (earlier: an unset sensor clock).
EARLIEST_S = 946_684_800
BASE_S = past_us(20) // 1_000_000  # valid readings are one second apart from here
NOW_S = int(time.time())  # strategies keep hours of margin from the receiver's clock

JSON_NAMES = {
    "sensor_id": "sensorId",
    "metric_type": "metricType",
    "value": "value",
    "reading_time": "readingTime",
    "unit": "unit",
    "labels": "labels",
}
SQL = (
    "'; DROP TABLE readings;--",
    "x'; DROP TABLE readings;--",
    "' OR '1'='1",
    '"; DELETE FROM events; --',
    "1; SELECT pg_sleep(10)",
    "s-1' UNION SELECT * FROM readings --",
    "$1",
    "%s%s%s",
    "\\'",
    "s-1;--",
)
# Odd but storable: anything but U+0000 (PostgreSQL text cannot hold it) and lone surrogates (not UTF-8).
TEXT_CHAR = st.characters(exclude_categories=["Cs"])
STORABLE_CHAR = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a field left out of the request


# --- what ran, and which marker sensors must (not) have rows --------------------------------------


@dataclass
class Ledger:
    refused: dict[str, str] = field(default_factory=dict)  # marker sensor → the case that was refused
    accepted: dict[str, tuple[set[int], str]] = field(default_factory=dict)  # marker → its times (µs), case
    unsure: dict[str, str] = field(default_factory=dict)  # marker → case: written or not, both allowed
    cases: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    test: str = ""
    start_offsets: dict[Any, int] = field(default_factory=dict)


LEDGER = Ledger()


# What Envoy's gRPC-JSON transcoder (its JSON parser) does, not this project's code, and no option of
# it changes: known, written down in docs/api.md, and still checked: strict, so each test fails again
# (XPASS) the day the behaviour changes.
TRANSCODER_QUIRKS = {
    "test_http_metrics_must_be_a_list_of_reading_objects": (
        "the transcoder drops null elements of a repeated field and flattens nested arrays into it; "
        "the readings around them are written"
    ),
    "test_http_a_json_array_for_a_single_value_is_refused_naming_the_field": (
        "the transcoder refuses a JSON array in a singular field, but its message names the enclosing "
        "element (metrics[0]) or nothing (legacy route), not the field"
    ),
    "test_http_json_only_a_lenient_parser_accepts_is_refused": (
        "the transcoder's JSON parser accepts trailing commas, single-quoted and unquoted keys, raw "
        "control characters in strings and unknown escapes; such bodies are written"
    ),
}


def transcoder_quirk(test: Any) -> Any:
    return pytest.mark.xfail(strict=True, reason=TRANSCODER_QUIRKS[test.__name__])(test)


def new_case() -> None:
    LEDGER.cases[LEDGER.test] += 1


def short(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def refused(case: object, sensor: str | None = None) -> str:
    """A marker sensor (new unless given) of which nothing may be stored."""
    sensor = sensor if sensor is not None else f"bad-{uuid.uuid4().hex[:24]}"
    LEDGER.refused[sensor] = f"{LEDGER.test}: {short(case)}"
    return sensor


def unsure(case: object) -> str:
    """A marker sensor that may or may not get its rows (not checked; counted)."""
    sensor = f"bad-maybe-{uuid.uuid4().hex[:24]}"
    LEDGER.unsure[sensor] = f"{LEDGER.test}: {short(case)}"
    return sensor


def accepted(sensor: str, times_us: Iterable[int], case: object) -> None:
    """`sensor` must end up with exactly these readings."""
    LEDGER.refused.pop(sensor, None)
    LEDGER.accepted[sensor] = (set(times_us), f"{LEDGER.test}: {short(case)}")


@pytest.fixture(scope="module", autouse=True)
async def _ledger(target: Target) -> AsyncIterator[None]:
    LEDGER.start_offsets = await end_offsets(target.kafka_bootstrap_servers, target.metrics_topic)
    yield
    total = sum(LEDGER.cases.values())
    print(
        f"\n[bad-input] total: {total} cases in {len(LEDGER.cases)} tests, "
        f"{sum(LEDGER.retries.values())} resent after UNAVAILABLE, {sum(LEDGER.seconds.values()):.1f} s"
    )


@pytest.fixture(autouse=True)
def _count(request: pytest.FixtureRequest) -> Iterator[None]:
    name = request.node.name
    LEDGER.test = name
    started = time.monotonic()
    yield
    LEDGER.seconds[name] = time.monotonic() - started
    request.node.user_properties.append(("cases", LEDGER.cases[name]))
    print(
        f"\n[bad-input] {name}: {LEDGER.cases[name]} cases, "
        f"{LEDGER.retries[name]} resent after UNAVAILABLE, {LEDGER.seconds[name]:.1f} s"
    )


def examples(n: int, *, shrink: bool = True) -> Callable[[T], T]:
    """Hypothesis settings of these tests: n cases, the same ones on every run."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] if shrink else [])]
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=phases,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# --- talking to the deployment ------------------------------------------------------------------

RESEND_FOR_S = 30.0


@dataclass(frozen=True)
class Envoy:
    """The front door (a short repr for hypothesis's reports)."""

    address: str


@pytest.fixture(scope="module")
def envoy(target: Target) -> Envoy:
    return Envoy(target.envoy)


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def __str__(self) -> str:
        return f"HTTP {self.status} ({self.content_type or 'no content-type'}) {self.body[:600]!r}"

    def json(self) -> Any:
        return json.loads(self.body)


def _exchange(address: str, method: str, path: str, body: bytes | None, timeout: float) -> Reply | None:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.getheader("content-type") or "", response.read())
    except ConnectionError:
        return None  # Envoy is being restarted
    finally:
        connection.close()


async def call_http(
    envoy: Envoy, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
) -> Reply:
    """The reply to one request; sent again while the answer is 503 or the connection is refused."""
    deadline = time.monotonic() + RESEND_FOR_S
    while True:
        reply = await asyncio.to_thread(_exchange, envoy.address, method, path, body, timeout)
        if reply is not None and reply.status != 503:
            return reply
        if time.monotonic() > deadline:
            assert reply is not None, f"Envoy at {envoy.address} refused connections for {RESEND_FOR_S} s"
            return reply
        LEDGER.retries[LEDGER.test] += 1
        await asyncio.sleep(0.2)


async def post_json(envoy: Envoy, path: str, body: Any, *, ascii_only: bool = True) -> Reply:
    return await call_http(envoy, "POST", path, json.dumps(body, ensure_ascii=ascii_only).encode())


async def grpc_patiently(call: Callable[[], Awaitable[T]]) -> T:
    """The result of `call()`; called again while it fails with UNAVAILABLE."""
    deadline = time.monotonic() + RESEND_FOR_S
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        LEDGER.retries[LEDGER.test] += 1
        await asyncio.sleep(0.2)


def field_violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            out.extend((v.field, v.description) for v in bad_request.field_violations)
    return out


async def grpc_refusal(
    call: Callable[[], Awaitable[Any]], *, violations: bool = True
) -> list[tuple[str, str]]:
    """The field violations of the INVALID_ARGUMENT that `call()` must fail with."""
    try:
        reply = await grpc_patiently(call)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"expected INVALID_ARGUMENT, got {error.code().name}: {error.details()!r}"
        )
        assert (error.details() or "").strip(), "INVALID_ARGUMENT without a message"
        if not violations:
            return []
        status = rpc_status.from_call(error)
        assert status is not None, f"no google.rpc.Status in the trailers: {error.details()!r}"
        found = field_violations(status)
        assert found, f"INVALID_ARGUMENT without google.rpc.BadRequest field violations: {status}"
        return found
    raise AssertionError(f"accepted: {short(reply)}")


def json_error(reply: Reply, statuses: Iterable[int] = (400,)) -> dict[str, Any]:
    """The JSON body of a refusal with one of `statuses`."""
    expected = sorted(statuses)
    assert reply.status in expected, f"expected HTTP {expected}, got {reply}"
    assert reply.content_type.startswith("application/json"), f"the error is not JSON: {reply}"
    body = reply.json()
    assert isinstance(body, dict), f"the error is not a JSON object: {reply}"
    assert isinstance(body.get("message"), str) and body["message"].strip(), (
        f"the error has no message: {reply}"
    )
    return body


def violations_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (v.get("field", ""), v.get("description", ""))
        for detail in body.get("details") or []
        for v in detail.get("fieldViolations") or []
    ]


def error_text(body: dict[str, Any]) -> str:
    return " ".join([body["message"], *(f"{f} {d}" for f, d in violations_of(body))])


def assert_names(body: dict[str, Any], names: Iterable[str]) -> None:
    """The error's message or field violations name one of `names`."""
    names = list(names)
    assert any(name in error_text(body) for name in names), (
        f"the error names none of {names}: {short(body, 800)}"
    )


def mentions(name: str) -> list[str]:
    """How an error names a top-level field `name` (as a whole word, "at" being a short one)."""
    return [f"{name}:", f'"{name}"', f"type {name}", f"field '{name}'"]


def assert_names_reading_field(body: dict[str, Any], index: int, name: str) -> None:
    """The error names field `name` of reading `index`: "metrics[2].value: …", or "metrics[2]: … for
    type value" / "… for field 'labels'" as the transcoder puts it."""
    text = error_text(body)
    names = (name, JSON_NAMES[name])
    direct = any(f"metrics[{index}].{n}" in text for n in names)
    indirect = f"metrics[{index}]" in text and re.search(rf"(type|field) '?({'|'.join(names)})\b", text)
    assert direct or indirect, f"the error does not name metrics[{index}].{name}: {short(body, 800)}"


def normalized(fields: Iterable[str]) -> set[str]:
    """Field paths with a label's key left out: metrics[2].labels['k'] → metrics[2].labels."""
    return {re.sub(r"\.labels\[.*\]$", ".labels", f) for f in fields}


# --- readings ------------------------------------------------------------------------------------


def valid_reading(sensor: str, i: int) -> dict[str, Any]:
    return {
        "sensor_id": sensor,
        "metric_type": "temperature",
        "value": float(i % 90),
        "reading_time": (BASE_S + i, 0),
    }


def times_of(readings: Iterable[dict[str, Any]]) -> list[int]:
    return [r["reading_time"][0] * 1_000_000 + r["reading_time"][1] // 1000 for r in readings]


def iso(seconds: int, nanos: int = 0) -> str:
    return (EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_proto(fields: dict[str, Any]) -> metric_pb2.Metric:
    metric = metric_pb2.Metric()
    for name, value in fields.items():
        if value is MISSING:
            continue
        if name == "reading_time":
            metric.reading_time.seconds, metric.reading_time.nanos = value
        elif name == "labels":
            metric.labels.update(value)
        else:
            setattr(metric, name, value)
    return metric


def to_json(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is MISSING:
            continue
        out[JSON_NAMES[name]] = iso(*value) if name == "reading_time" and isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class Plan:
    """A batch: valid readings of a marker sensor with bad readings among them."""

    valid: int
    bad: tuple[dict[str, Any], ...]  # per bad reading: the fields that are wrong, with their values
    order: tuple[int, ...]  # -1: the next valid reading; k: bad reading k

    def readings(self, sensor: str) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        """The readings, and (index, field) of each planted problem."""
        out: list[dict[str, Any]] = []
        problems: list[tuple[int, str]] = []
        valid = 0
        for k in self.order:
            if k < 0:
                out.append(valid_reading(sensor, valid))
                valid += 1
            else:
                problems += [(len(out), name) for name in self.bad[k]]
                out.append(valid_reading(sensor, 100_000 + k) | self.bad[k])
        return out, problems


def expected_fields(problems: Iterable[tuple[int, str]], prefix: str = "metrics") -> set[str]:
    return {f"{prefix}[{i}].{name}" for i, name in problems}


@st.composite
def plans(
    draw: st.DrawFn, problems: dict[str, st.SearchStrategy[Any]], max_valid: int = 20, max_bad: int = 3
) -> Plan:
    valid = draw(st.integers(1, max_valid))
    bad = []
    for _ in range(draw(st.integers(1, max_bad))):
        names = draw(st.lists(st.sampled_from(sorted(problems)), min_size=1, max_size=2, unique=True))
        bad.append({name: draw(problems[name]) for name in names})
    order = draw(st.permutations([-1] * valid + list(range(len(bad)))))
    return Plan(valid, tuple(bad), tuple(order))


def _not_id(s: str) -> bool:
    return SENSOR_ID_RULE.fullmatch(s) is None


def _not_type(s: str) -> bool:
    return METRIC_TYPE_RULE.fullmatch(s) is None


BAD_SENSOR_IDS = st.one_of(
    st.just(""),
    st.text(st.sampled_from(ID_CHARS), min_size=129, max_size=2_000),
    st.builds(
        lambda a, c, b: a + c + b,
        st.text(st.sampled_from(ID_CHARS), max_size=40),
        TEXT_CHAR.filter(lambda c: c not in ID_CHARS),
        st.text(TEXT_CHAR, max_size=40),
    ),
    st.sampled_from(SQL),
    # control and invisible characters, look-alikes
    st.sampled_from(
        ["s-1\x00", "s\n1", "\t", "s-1\x7f", "s\u200b1", "\u202es-1", "\uff53-1", "s-1\ufeff", "s\u03011"]
    ),
).filter(_not_id)
BAD_METRIC_TYPES = st.one_of(
    st.just(""),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(string.ascii_lowercase),
        st.text(st.sampled_from(TYPE_CHARS), min_size=64, max_size=500),
    ),
    st.builds(
        lambda c, b: c + b,
        st.sampled_from(string.ascii_uppercase + string.digits + "_."),
        st.text(st.sampled_from(TYPE_CHARS), max_size=20),
    ),
    st.builds(
        lambda a, c, b: a + c + b,
        st.sampled_from(string.ascii_lowercase),
        TEXT_CHAR.filter(lambda c: c not in TYPE_CHARS),
        st.text(TEXT_CHAR, max_size=20),
    ),
    st.sampled_from(SQL),
).filter(_not_type)


def _float_of(bits: int) -> float:
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


NON_FINITE = st.one_of(
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf]),
    # NaNs with payloads, quiet and signalling, both signs
    st.tuples(st.booleans(), st.integers(1, 2**52 - 1)).map(
        lambda t: _float_of((0xFFF0000000000000 if t[0] else 0x7FF0000000000000) | t[1])
    ),
)
NANOS = st.integers(0, 999_999_999)
FUTURE_S = NOW_S + SKEW_S + 86_400
BAD_PROTO_TIMES = st.one_of(
    st.tuples(st.integers(-(2**63), EARLIEST_S - 1), NANOS),  # before 2000, down to far outside the range
    st.tuples(st.integers(FUTURE_S, 2**63 - 1), NANOS),  # ahead by more than a day, up to far outside it
    st.tuples(st.integers(0, BASE_S), st.integers(-(2**31), -1) | st.integers(10**9, 2**31 - 1)),  # bad nanos
)
LONG_UNITS = st.text(STORABLE_CHAR, min_size=MAX_UNIT + 1, max_size=1_000)
LABEL_KEYS = st.text(STORABLE_CHAR, min_size=1, max_size=20)
LABEL_VALUES = st.text(STORABLE_CHAR, max_size=20)
BAD_LABELS = st.one_of(
    st.dictionaries(LABEL_KEYS, LABEL_VALUES, min_size=MAX_LABELS + 1, max_size=40),
    st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3).map(lambda d: {**d, "": "v"}),
    st.tuples(st.text(STORABLE_CHAR, min_size=MAX_LABEL_KEY + 1, max_size=500), LABEL_VALUES).map(
        lambda kv: {kv[0]: kv[1]}
    ),
    st.tuples(LABEL_KEYS, st.text(STORABLE_CHAR, min_size=MAX_LABEL_VALUE + 1, max_size=3_000)).map(
        lambda kv: {kv[0]: kv[1]}
    ),
)


def rfc3339(local_s: int, offset_min: int | None, nanos: int = 0, digits: int = 0) -> str:
    """A time as written by a client in zone `offset_min` (None: Z), with `digits` fractional digits."""
    local = EPOCH + timedelta(seconds=local_s)
    fraction = "." + f"{nanos:09d}"[:digits] if digits else ""
    if offset_min is None:
        zone = "Z"
    else:
        sign = "-" if offset_min < 0 else "+"
        zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local:%H:%M:%S}{fraction}{zone}"


@st.composite
def out_of_policy_times(draw: st.DrawFn) -> str:
    """Valid RFC 3339 times in the Timestamp range that the receiver refuses: before 2000 or ahead."""
    past = draw(st.booleans())
    utc_s = draw(
        st.integers(TS_MIN_S + 86_400, EARLIEST_S - 86_400)
        if past
        else st.integers(FUTURE_S, TS_MAX_S - 86_400)
    )
    offset = draw(st.none() | st.integers(-1439, 1439))
    return rfc3339(utc_s + (offset or 0) * 60, offset, draw(NANOS), draw(st.sampled_from([0, 3, 6, 9])))


# What can be wrong with a reading in a way only the receiver can tell (every value has the right type).
GRPC_PROBLEMS: dict[str, st.SearchStrategy[Any]] = {
    "sensor_id": BAD_SENSOR_IDS,
    "metric_type": BAD_METRIC_TYPES,
    "value": NON_FINITE,
    "reading_time": BAD_PROTO_TIMES,
    "unit": LONG_UNITS,
    "labels": BAD_LABELS,
}
JSON_PROBLEMS: dict[str, st.SearchStrategy[Any]] = {
    "sensor_id": BAD_SENSOR_IDS | st.just(MISSING),
    "metric_type": BAD_METRIC_TYPES | st.just(MISSING),
    "value": st.sampled_from(["NaN", "Infinity", "-Infinity"]),  # proto3 JSON's spelling of non-finite
    "reading_time": out_of_policy_times(),
    "unit": LONG_UNITS,
    "labels": BAD_LABELS,
}


# --- gRPC: PushMetrics, StreamMetrics, SyncMetrics -----------------------------------------------


@examples(100)
@given(plan=plans(GRPC_PROBLEMS))
async def test_grpc_push_refuses_bad_readings_naming_each(receiver: ReceiverServiceStub, plan: Plan) -> None:
    new_case()
    sensor = refused(plan)
    readings, problems = plan.readings(sensor)
    request = rs.PushMetricsRequest(metrics=[to_proto(r) for r in readings])

    violations = await grpc_refusal(lambda: receiver.PushMetrics(request, timeout=30))

    assert normalized(f for f, _ in violations) == expected_fields(problems), violations


@st.composite
def batch_size_problems(draw: st.DrawFn) -> tuple[str, int]:
    kind = draw(st.sampled_from(["empty", "too many readings", "sensor_id", "metric_type", "unit", "labels"]))
    if kind == "empty":
        return kind, 0
    if kind == "too many readings":
        return kind, MAX_BATCH + draw(st.integers(1, 200))
    # one huge string, from just over the field's limit to 15 MB (under Envoy's body limit and the
    # services' message limit)
    limit = {"sensor_id": 128, "metric_type": 64, "unit": MAX_UNIT, "labels": MAX_LABEL_VALUE}[kind]
    return kind, draw(st.integers(limit + 1, 15_000_000))


def size_problem_batch(sensor: str, kind: str, n: int) -> tuple[list[dict[str, Any]], set[str]]:
    if kind == "empty":
        return [], {"metrics"}
    if kind == "too many readings":
        return [valid_reading(sensor, i) for i in range(n)], {"metrics"}
    huge = {"sensor_id": "s" * n, "metric_type": "t" * n, "unit": "u" * n, "labels": {"k": "v" * n}}[kind]
    bad = valid_reading(sensor, 100_000) | {kind: huge}
    return [valid_reading(sensor, 0), bad, valid_reading(sensor, 1)], {f"metrics[1].{kind}"}


@examples(12, shrink=False)
@given(problem=batch_size_problems())
async def test_grpc_push_refuses_empty_oversized_and_huge(
    receiver: ReceiverServiceStub, problem: tuple[str, int]
) -> None:
    new_case()
    kind, n = problem
    sensor = refused(problem)
    readings, expected = size_problem_batch(sensor, kind, n)
    request = rs.PushMetricsRequest(metrics=[to_proto(r) for r in readings])

    violations = await grpc_refusal(lambda: receiver.PushMetrics(request, timeout=60))

    assert normalized(f for f, _ in violations) == expected, short(violations)


def bad_batch_or_empty(problems: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Plan | None]:
    """A planned bad batch, or None for an empty one."""
    return st.one_of(st.none(), plans(problems, max_valid=5))


def planned_batch(sensor: str, plan: Plan | None, prefix: str) -> tuple[list[dict[str, Any]], set[str]]:
    if plan is None:
        return [], {prefix}
    readings, problems = plan.readings(sensor)
    return readings, expected_fields(problems, prefix)


@examples(60)
@given(before=st.integers(0, 3), plan=bad_batch_or_empty(GRPC_PROBLEMS), after=st.integers(0, 3))
async def test_grpc_stream_stops_at_the_bad_batch(
    receiver: ReceiverServiceStub, before: int, plan: Plan | None, after: int
) -> None:
    # Documented: the batches before a bad one are written; it and those after it are not.
    new_case()
    written = [f"bad-ok-{uuid.uuid4().hex[:24]}" for _ in range(before)]
    sensor = refused(plan)
    later = [refused(f"after {plan}") for _ in range(after)]
    bad, expected = planned_batch(sensor, plan, f"[{before}].metrics")
    batches = (
        [[valid_reading(s, i) for i in range(3)] for s in written]
        + [bad]
        + [[valid_reading(s, i) for i in range(3)] for s in later]
    )

    async def requests() -> AsyncIterator[rs.StreamMetricsRequest]:
        for batch in batches:
            yield rs.StreamMetricsRequest(metrics=[to_proto(r) for r in batch])

    violations = await grpc_refusal(lambda: receiver.StreamMetrics(requests(), timeout=30))

    assert normalized(f for f, _ in violations) == expected, violations
    for s, batch in zip(written, batches, strict=False):
        accepted(s, times_of(batch), f"stream batch before {plan}")


@examples(60)
@given(
    batches=st.lists(
        st.one_of(st.just("good"), bad_batch_or_empty(GRPC_PROBLEMS)), min_size=1, max_size=6
    ).filter(lambda b: any(x != "good" for x in b)),
    first_sequence=st.integers(0, 2**63 - 7),  # SyncMetricsRequest.sequence is an int64
)
async def test_grpc_sync_acknowledges_each_bad_batch_with_its_violations(
    receiver: ReceiverServiceStub, batches: list[Any], first_sequence: int
) -> None:
    # Each bad batch gets its own INVALID_ARGUMENT acknowledgement; the stream goes on.
    new_case()
    sent: list[tuple[int, str, list[dict[str, Any]], set[str] | None]] = []
    for i, item in enumerate(batches):
        if item == "good":
            sensor = f"bad-ok-{uuid.uuid4().hex[:24]}"
            sent.append((first_sequence + i, sensor, [valid_reading(sensor, j) for j in range(3)], None))
        else:
            sensor = refused(item)
            readings, expected = planned_batch(sensor, item, "metrics")
            sent.append((first_sequence + i, sensor, readings, expected))

    async def exchange() -> list[rs.SyncMetricsResponse]:
        call = receiver.SyncMetrics(timeout=30)
        for sequence, _, readings, _ in sent:
            await call.write(
                rs.SyncMetricsRequest(sequence=sequence, metrics=[to_proto(r) for r in readings])
            )
        await call.done_writing()
        acks = [ack async for ack in call]
        if any(ack.status.code == grpc.StatusCode.UNAVAILABLE.value[0] for ack in acks):
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return acks

    acks = await grpc_patiently(exchange)

    assert [a.sequence for a in acks] == [s for s, *_ in sent]
    for ack, (_, sensor, readings, expected) in zip(acks, sent, strict=True):
        if expected is None:
            assert (ack.status.code, ack.accepted_count) == (0, len(readings)), ack
            accepted(sensor, times_of(readings), "a good batch of a sync stream")
        else:
            assert ack.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], ack
            assert ack.accepted_count == 0, ack
            assert normalized(f for f, _ in field_violations(ack.status)) == expected, ack.status


# Hand-made protobuf bytes: what a client with another (or a broken) encoder can send.
def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def metric_bytes(
    sensor: bytes, metric_type: bytes, value: float, seconds: int, unit: bytes, label: bytes
) -> bytes:
    out = _delimited(1, sensor) + _delimited(2, metric_type)
    out += _varint(3 << 3 | 1) + struct.pack("<d", value)
    out += _delimited(4, _varint(1 << 3) + _varint(seconds))
    out += _delimited(5, unit) if unit else b""
    out += _delimited(6, _delimited(1, label) + _delimited(2, b"v")) if label else b""
    return out


INVALID_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe",
        b"\x80",
        b"\xc3",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xf8\x88\x80\x80\x80",
    ]
)
GRPC_METHODS: dict[str, tuple[type[Message], int]] = {
    # method → (request type, field number of its readings)
    "PushMetrics": (rs.PushMetricsRequest, 1),
    "StreamMetrics": (rs.StreamMetricsRequest, 1),
    "SyncMetrics": (rs.SyncMetricsRequest, 2),
}


@st.composite
def undecodable_requests(draw: st.DrawFn) -> tuple[str, int, str, int, int, bytes]:
    """(method, readings, damage, where, how, bytes): what to do to a valid request so that it no longer decodes."""
    method = draw(st.sampled_from(sorted(GRPC_METHODS)))
    count = draw(st.integers(1, 8))
    damage = draw(st.sampled_from(["invalid UTF-8", "truncated", "byte changed"]))
    where = draw(st.integers(0, 10**6))
    how = draw(st.integers(0, 255))
    bad_bytes = draw(INVALID_UTF8)
    return method, count, damage, where, how, bad_bytes


@examples(60)
@given(case=undecodable_requests())
async def test_grpc_undecodable_request_is_invalid_argument(
    envoy_channel: grpc.aio.Channel, case: Any
) -> None:
    # A message that does not decode (bad UTF-8 in a string field, truncated, corrupted) is the client's
    # mistake: INVALID_ARGUMENT with a message, nothing written. No field can be named.
    new_case()
    method, count, damage, where, how, bad_bytes = case
    request_type, number = GRPC_METHODS[method]
    sensor = refused(case)
    metrics = [
        metric_bytes(sensor.encode(), b"temperature", float(i), BASE_S + i, b"", b"") for i in range(count)
    ]
    if damage == "invalid UTF-8":
        i = where % count
        part = (where // count) % 4
        wrong = b"x" + bad_bytes + b"y"
        fields = [sensor.encode(), b"temperature", b"", b""]
        fields[part] = (fields[part] or b"z") + wrong
        metrics[i] = metric_bytes(fields[0], fields[1], 1.0, BASE_S + 500 + i, fields[2], fields[3])
    payload = (_varint(1 << 3) + _varint(where) if method == "SyncMetrics" else b"") + b"".join(
        _delimited(number, m) for m in metrics
    )
    if damage == "truncated":
        payload = payload[: 1 + where % (len(payload) - 1)]
    elif damage == "byte changed":
        i = where % len(payload)
        payload = payload[:i] + bytes([how]) + payload[i + 1 :]
    try:
        request_type.FromString(payload)
    except DecodeError:
        pass
    else:
        assume(False)  # still decodes: not this test's case

    path = f"/metrics.v1.ReceiverService/{method}"

    async def call() -> Any:
        if method == "PushMetrics":
            return await envoy_channel.unary_unary(path)(payload, timeout=30)
        if method == "StreamMetrics":
            return await envoy_channel.stream_unary(path)(iter([payload]), timeout=30)
        acks = [
            rs.SyncMetricsResponse.FromString(ack)
            async for ack in envoy_channel.stream_stream(path)(iter([payload]), timeout=30)
        ]
        # SyncMetrics may also answer the batch with an INVALID_ARGUMENT acknowledgement.
        if [a.status.code for a in acks] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] and acks[
            0
        ].status.message:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                acks[0].status.message,
            )
        return acks

    await grpc_refusal(call, violations=False)


# --- HTTP/JSON: POST /v1/metrics:push and :stream -------------------------------------------------


@examples(100)
@given(plan=plans(JSON_PROBLEMS), ascii_only=st.booleans())
async def test_http_push_refuses_bad_readings_naming_each(envoy: Envoy, plan: Plan, ascii_only: bool) -> None:
    new_case()
    sensor = refused(plan)
    readings, problems = plan.readings(sensor)

    reply = await post_json(
        envoy, "/v1/metrics:push", {"metrics": [to_json(r) for r in readings]}, ascii_only=ascii_only
    )

    body = json_error(reply)
    assert normalized(f for f, _ in violations_of(body)) == expected_fields(problems), short(body, 1000)


@examples(12, shrink=False)
@given(problem=batch_size_problems())
async def test_http_push_refuses_empty_oversized_and_huge(envoy: Envoy, problem: tuple[str, int]) -> None:
    new_case()
    kind, n = problem
    sensor = refused(problem)
    readings, expected = size_problem_batch(sensor, kind, n)

    reply = await post_json(envoy, "/v1/metrics:push", {"metrics": [to_json(r) for r in readings]})

    body = json_error(reply)
    assert normalized(f for f, _ in violations_of(body)) == expected, short(body)


@st.composite
def json_times(draw: st.DrawFn) -> tuple[str, int, str]:
    """(text, the instant it means in ns since 1970 (if it is a time at all), how it is written)."""
    region = draw(st.sampled_from(["anywhere", "near now", "near 1970", "near year 1", "near year 9999"]))
    day = 86_400
    centre = {
        "anywhere": None,
        "near now": NOW_S,
        "near 1970": 0,
        "near year 1": TS_MIN_S,
        "near year 9999": TS_MAX_S,
    }
    if centre[region] is None:
        local_s = draw(st.integers(TS_MIN_S, TS_MAX_S))
    else:
        local_s = draw(
            st.integers(max(TS_MIN_S, centre[region] - 3 * day), min(TS_MAX_S, centre[region] + 3 * day))
        )
    offset = draw(st.none() | st.integers(-1439, 1439) | st.sampled_from([330, -210, 345, 840, -720, 0]))
    nanos, digits = draw(NANOS), draw(st.integers(0, 9))
    text = rfc3339(local_s, offset, nanos, digits)
    written = int(f"{nanos:09d}"[:digits].ljust(9, "0")) if digits else 0
    instant = (local_s - (offset or 0) * 60) * 1_000_000_000 + written
    how = draw(
        st.sampled_from(
            [
                "RFC 3339",
                "RFC 3339",
                "RFC 3339",
                "lower-case t and z",
                "more than 9 digits",
                "no zone",
                "zone +24:00",
                "zone without colon",
                "space for T",
            ]
        )
    )
    if how == "lower-case t and z":
        text = text.replace("T", "t").replace("Z", "z")
    elif how == "more than 9 digits":
        text = re.sub(
            r"(:\d\d)(\.\d*)?(?=[Z+-])", lambda m: m.group(1) + (m.group(2) or ".") + "1234567890", text
        )
    elif how == "no zone":
        text = re.sub(r"(Z|[+-]\d\d:\d\d)$", "", text)
    elif how == "zone +24:00":
        text = re.sub(r"(Z|[+-]\d\d:\d\d)$", "+24:00", text)
    elif how == "zone without colon":
        text = re.sub(r"([+-]\d\d):(\d\d)$", r"\1\2", text) if offset is not None else text[:-1] + "+0000"
    elif how == "space for T":
        text = text.replace("T", " ")
    if how in ("more than 9 digits",):
        digits_written = re.search(r":\d\d\.(\d+)", text)
        assert digits_written is not None
        instant += int(digits_written.group(1)[:9].ljust(9, "0")) - written
    return text, instant, how


@examples(100)
@given(time_case=json_times(), position=st.integers(0, 5))
async def test_http_push_times_are_accepted_exactly_or_refused_naming_reading_time(
    envoy: Envoy, time_case: tuple[str, int, str], position: int
) -> None:
    # A valid time (any zone offset) from 2000 to 5 minutes ahead is accepted and stored as that instant;
    # anything else (before 2000, ahead, outside the Timestamp range, not RFC 3339) is a 400 naming
    # readingTime. Unusual RFC 3339 spellings (lower-case t/z, more than 9 digits, a space for T) may go
    # either way, but if accepted then as the instant they mean.
    new_case()
    text, instant_ns, how = time_case
    now_ns = time.time_ns()
    latest = now_ns + SKEW_S * 1_000_000_000
    assume(abs(instant_ns - latest) > 120 * 1_000_000_000)  # not at the clock-dependent edge
    earliest = EARLIEST_S * 1_000_000_000
    in_range = TS_MIN_S * 10**9 <= instant_ns <= TS_MAX_S * 10**9 + 999_999_999
    valid = how == "RFC 3339" and in_range and earliest <= instant_ns <= latest
    maybe = (
        how in ("lower-case t and z", "more than 9 digits", "space for T")
        and in_range
        and earliest <= instant_ns <= latest
    )
    fillers, timed = refused((text, how)), refused((text, how))
    readings = [to_json(valid_reading(fillers, i)) for i in range(5)]
    readings.insert(position, to_json(valid_reading(timed, 0)) | {"readingTime": text})

    reply = await post_json(envoy, "/v1/metrics:push", {"metrics": readings})

    if valid or (maybe and reply.status == 200):
        assert (reply.status, reply.json()) == (200, {"acceptedCount": 6}), f"{text!r} ({how}): {reply}"
        accepted(fillers, times_of(valid_reading(fillers, i) for i in range(5)), text)
        accepted(timed, [instant_ns // 1000], text)
    else:
        body = json_error(reply)
        assert_names(body, [f"metrics[{position}].reading_time", f"metrics[{position}].readingTime"])


# Values of the wrong JSON type for each field (JSON the transcoder must refuse, naming the field).
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT_CHAR, max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
NUMBERS = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
OBJECTS = st.dictionaries(st.text(TEXT_CHAR, max_size=8), JSON_VALUES, max_size=3)
ARRAYS = st.lists(JSON_VALUES, max_size=3)
NO_DIGITS = st.text(st.sampled_from(string.ascii_letters + " !?#@_-"), max_size=12)  # never a number or time


class Raw(str):
    """JSON text put into a body as is (numbers out of a double's range)."""


OUT_OF_RANGE_NUMBERS = st.builds(
    lambda sign, e: Raw(f"{sign}1e{e}"), st.sampled_from(["", "-"]), st.integers(309, 9999)
)
# (Arrays where one value is expected are the next test's.)
WRONG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "sensor_id": NUMBERS | st.booleans() | OBJECTS,
    "metric_type": NUMBERS | st.booleans() | OBJECTS,
    "unit": NUMBERS | st.booleans() | OBJECTS,
    "value": NO_DIGITS.filter(lambda s: s.strip() not in ("NaN", "Infinity", "-Infinity"))
    | st.booleans()
    | OBJECTS
    | OUT_OF_RANGE_NUMBERS,
    "reading_time": NO_DIGITS | NUMBERS | st.booleans() | OBJECTS,
    "labels": NO_DIGITS
    | NUMBERS
    | st.booleans()
    | ARRAYS
    | st.dictionaries(st.text(max_size=5), NUMBERS | st.booleans() | OBJECTS, min_size=1, max_size=2),
}
LEGACY_WRONG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "temperature": NO_DIGITS.filter(lambda s: s.strip() not in ("NaN", "Infinity", "-Infinity"))
    | st.booleans()
    | OBJECTS
    | OUT_OF_RANGE_NUMBERS,
    "at": NO_DIGITS
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f))
    | st.integers(2**63, 2**70)
    | st.booleans()
    | OBJECTS,
}


def dumps_with_raw(body: Any) -> bytes:
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(str(value))
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(body))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text.encode()


@st.composite
def wrong_type_cases(draw: st.DrawFn) -> tuple[str, Any, Any, list[str]]:
    """(route, where, body maker input, names the error must mention)."""
    route = draw(st.sampled_from(["push", "stream", "legacy"]))
    if route == "legacy":
        name = draw(st.sampled_from(sorted(LEGACY_WRONG_TYPES)))
        return route, name, draw(LEGACY_WRONG_TYPES[name]), [name]
    name = draw(st.sampled_from(sorted(WRONG_TYPES)))
    return route, (draw(st.integers(0, 3)), name), draw(WRONG_TYPES[name]), [name]


@examples(100)
@given(case=wrong_type_cases())
async def test_http_wrong_json_types_are_refused_naming_the_field(envoy: Envoy, case: Any) -> None:
    new_case()
    route, where, wrong, names = case
    sensor = refused(case)
    readings: list[Any] = [to_json(valid_reading(sensor, i)) for i in range(4)]
    if route == "legacy":
        body: Any = {"temperature": 20.0, where: wrong}
        path = f"/api/v1/sensors/{sensor}/measurements"
    else:
        i, name = where
        readings[i] = readings[i] | {JSON_NAMES[name]: wrong}
        body = {"metrics": readings}
        path = "/v1/metrics:push"
        if route == "stream":
            # The transcoder sends a stream's batches on as they are parsed: the one before may be written.
            before = unsure(case)
            body, path = [{"metrics": [to_json(valid_reading(before, 0))]}, body], "/v1/metrics:stream"

    reply = await call_http(envoy, "POST", path, dumps_with_raw(body))

    error = json_error(reply)
    if isinstance(wrong, Raw):
        # Refused by the JSON tokenizer, which shows where in the text, so the key is in its quote.
        assert_names(
            error,
            [f'"{JSON_NAMES.get(n, n)}":' for n in names] + [f'"{JSON_NAMES.get(n, n)}": ' for n in names],
        )
    elif route in ("push", "stream"):
        assert_names_reading_field(error, *where)
    else:
        assert_names(error, [m for n in names for m in mentions(n)])


@transcoder_quirk
@examples(40)
@given(
    wrong=st.one_of(st.none(), ARRAYS, NO_DIGITS, NUMBERS, st.booleans()),
    in_the_list=st.booleans(),
    index=st.integers(0, 3),
)
async def test_http_metrics_must_be_a_list_of_reading_objects(
    envoy: Envoy, wrong: Any, in_the_list: bool, index: int
) -> None:
    # "metrics" of another type, or an element of it that is not a reading object (null, a nested list,
    # a string, a number): a 400 naming metrics.
    new_case()
    sensor = refused((wrong, in_the_list, index))
    readings: list[Any] = [to_json(valid_reading(sensor, i)) for i in range(4)]
    body = {"metrics": [*readings[:index], wrong, *readings[index:]] if in_the_list else wrong}
    assume(body["metrics"] is not None)  # null is proto3 JSON's "absent": an empty batch, tested elsewhere

    reply = await call_http(envoy, "POST", "/v1/metrics:push", dumps_with_raw(body))

    assert_names(json_error(reply), ["metrics"])


@transcoder_quirk
@examples(40)
@given(
    route=st.sampled_from(["push", "legacy"]),
    name=st.sampled_from(["sensor_id", "metric_type", "value", "reading_time", "unit", "label value"]),
    legacy_name=st.sampled_from(["temperature", "at"]),
    index=st.integers(0, 3),
    wrong=ARRAYS,
)
async def test_http_a_json_array_for_a_single_value_is_refused_naming_the_field(
    envoy: Envoy, route: str, name: str, legacy_name: str, index: int, wrong: list[Any]
) -> None:
    new_case()
    sensor = refused((route, name, legacy_name, index, wrong))
    if route == "legacy":
        body: Any = {"temperature": 20.5} | {legacy_name: wrong}
        reply = await call_http(envoy, "POST", f"/api/v1/sensors/{sensor}/measurements", dumps_with_raw(body))
        assert_names(json_error(reply), mentions(legacy_name))
        return
    readings = [to_json(valid_reading(sensor, i)) for i in range(4)]
    if name == "label value":
        readings[index]["labels"] = {"site": wrong}
    else:
        readings[index][JSON_NAMES[name]] = wrong

    reply = await call_http(envoy, "POST", "/v1/metrics:push", dumps_with_raw({"metrics": readings}))

    assert_names_reading_field(json_error(reply), index, "labels" if name == "label value" else name)


def _tokens(value: Any) -> list[str]:
    """Compact JSON, token by token."""
    if isinstance(value, dict):
        out = ["{"]
        for i, (k, v) in enumerate(value.items()):
            out += [",", json.dumps(k), ":", *_tokens(v)] if i else [json.dumps(k), ":", *_tokens(v)]
        return [*out, "}"]
    if isinstance(value, list):
        out = ["["]
        for i, v in enumerate(value):
            out += [",", *_tokens(v)] if i else _tokens(v)
        return [*out, "]"]
    return [json.dumps(value)]


JUNK = [
    "garbage",
    "NaN",
    "Infinity",
    "-Infinity",
    "undefined",
    "/*x*/",
    "//x\n",
    "\\",
    "'",
    "}",
    "]",
    ":",
    "{",
    "[",
    "01",
    "+1",
    ".5",
    "0x1F",
    "tru",
    "nul",
    '"',
    "#",
    "\x00",
    "=",
    "();",
]


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def strictly_invalid(payload: bytes) -> bool:
    try:
        json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return True
    return False


@examples(100)
@given(
    route=st.sampled_from(["push", "stream", "legacy"]),
    damage=st.sampled_from(
        [
            "cut short",
            "junk between tokens",
            "invalid UTF-8 in a string",
            "lone surrogate escape",
            "bare token for a value",
            "nested too deep",
        ]
    ),
    where=st.integers(0, 10**6),
    junk=st.sampled_from(JUNK),
    bad_bytes=INVALID_UTF8,
    surrogate=st.sampled_from(["\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud800\\u0041"]),
    depth=st.integers(150, 5_000),
)
async def test_http_malformed_json_is_refused(
    envoy: Envoy,
    route: str,
    damage: str,
    where: int,
    junk: str,
    bad_bytes: bytes,
    surrogate: str,
    depth: int,
) -> None:
    # Syntax errors and limits of the parser: a 400 with a JSON message (there is no field to name).
    new_case()
    case = (route, damage, where, junk)
    sensors = [refused(case) for _ in range(3)]
    readings = [to_json(valid_reading(s, i)) | {"unit": "celsius"} for i, s in enumerate(sensors)]
    path = {"push": "/v1/metrics:push", "stream": "/v1/metrics:stream"}.get(
        route, f"/api/v1/sensors/{sensors[0]}/measurements"
    )
    body: Any = {"push": {"metrics": readings}, "stream": [{"metrics": [r]} for r in readings]}.get(
        route, {"temperature": 20.5, "at": (BASE_S + 7) * 1000}
    )
    tokens = _tokens(body)
    damaged_at = 0  # where the payload first differs from the valid body
    strings = [i for i, t in enumerate(tokens) if t.startswith('"') and len(t) > 2]
    if damage == "cut short":
        text = "".join(tokens)
        damaged_at = 1 + where % (len(text) - 1)
        payload = text[:damaged_at].encode()
    elif damage == "junk between tokens":
        i = where % (len(tokens) + 1)
        damaged_at = len("".join(tokens[:i]))
        payload = "".join([*tokens[:i], junk, *tokens[i:]]).encode()
    elif damage in ("invalid UTF-8 in a string", "lone surrogate escape"):
        i = strings[where % len(strings)]
        cut = 1 + (where // len(tokens)) % (len(tokens[i]) - 2)
        token = tokens[i]
        before, after = "".join(tokens[:i]) + token[:cut], token[cut:] + "".join(tokens[i + 1 :])
        inserted = bad_bytes if damage == "invalid UTF-8 in a string" else surrogate.encode()
        damaged_at = len(before)
        payload = before.encode() + inserted + after.encode()
    elif damage == "bare token for a value":
        values = [i for i, t in enumerate(tokens) if i and tokens[i - 1] == ":" and t not in ("{", "[")]
        i = values[where % len(values)]
        damaged_at = len("".join(tokens[:i]))
        payload = "".join(
            [*tokens[:i], junk if junk not in ('"', "\x00") else "NaN", *tokens[i + 1 :]]
        ).encode()
    else:
        nested = "[" * depth + "]" * depth if where % 2 else '{"a":' * depth + "1" + "}" * depth
        i = tokens.index("{") + 1  # an unknown field of the first object
        damaged_at = len("".join(tokens[:i]))
        payload = "".join([*tokens[:i], '"deep":', nested, ",", *tokens[i:]]).encode()
    if damage != "nested too deep":
        assume(strictly_invalid(payload))
    if route == "stream":
        # The transcoder sends a stream's batches on as they are parsed: those complete before the
        # damage may be written (the 400 does not say which); the damaged one and later ones may not.
        end = 1
        for sensor, batch in zip(sensors, body, strict=True):
            end += len("".join(_tokens(batch)))
            if end <= damaged_at:
                del LEDGER.refused[sensor]
                LEDGER.unsure[sensor] = f"{LEDGER.test}: {short(case)}"
            end += 1

    reply = await call_http(envoy, "POST", path, payload)

    json_error(reply)


@transcoder_quirk
@examples(40)
@given(
    route=st.sampled_from(["push", "stream"]),
    sloppiness=st.lists(
        st.sampled_from(
            [
                "trailing comma in an array",
                "trailing comma in an object",
                "single-quoted key",
                "unquoted key",
                "number ending in a dot",
                "raw tab in a string",
                "invalid escape \\q",
            ]
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ),
)
async def test_http_json_only_a_lenient_parser_accepts_is_refused(
    envoy: Envoy, route: str, sloppiness: list[str]
) -> None:
    # Not JSON (RFC 8259) either, though a lenient parser takes it: docs/api.md promises malformed JSON a 400.
    new_case()
    sensor = refused((route, sloppiness))
    reading = f'{{"sensorId":"{sensor}","metricType":"temperature","value":20,"readingTime":"{iso(BASE_S)}","unit":"c"}}'
    if "single-quoted key" in sloppiness:
        reading = reading.replace('"metricType"', "'metricType'")
    if "unquoted key" in sloppiness:
        reading = reading.replace('"value"', "value")
    if "number ending in a dot" in sloppiness:
        reading = reading.replace(":20,", ":20.,")
    if "raw tab in a string" in sloppiness:
        reading = reading.replace('"unit":"c"', '"unit":"c\tc"')
    if "invalid escape \\q" in sloppiness:
        reading = reading.replace('"unit":"c"', '"unit":"\\qc"')
    if "trailing comma in an object" in sloppiness:
        reading = reading[:-1] + ",}"
    batch = f'{{"metrics":[{reading}{"," if "trailing comma in an array" in sloppiness else ""}]}}'
    text = batch if route == "push" else f"[{batch}]"
    assert strictly_invalid(text.encode())

    reply = await call_http(envoy, "POST", f"/v1/metrics:{route}", text.encode())

    json_error(reply)


KNOWN_NAMES = {"metrics", "sensorid", "metrictype", "value", "readingtime", "unit", "labels"}
UNKNOWN_NAMES = st.text(TEXT_CHAR, min_size=1, max_size=30).filter(
    lambda n: n.lower().replace("_", "") not in KNOWN_NAMES
)


@examples(80)
@given(
    unknown=st.dictionaries(UNKNOWN_NAMES, JSON_VALUES, min_size=1, max_size=3),
    inside=st.one_of(st.none(), st.integers(0, 4)),
    plan=st.one_of(st.none(), plans(JSON_PROBLEMS, max_valid=4, max_bad=1)),
)
async def test_http_unknown_fields_are_refused_or_dropped_never_half_written(
    envoy: Envoy, unknown: dict[str, Any], inside: int | None, plan: Plan | None
) -> None:
    # Unknown JSON fields are dropped by Envoy's transcoder (no option makes it refuse them): alone they
    # get either a 400 naming the field or a 200 with every reading stored; next to a bad reading, the
    # 400 for that reading.
    new_case()
    sensor = refused((unknown, inside, plan))
    if plan is None:
        fields, problems = [valid_reading(sensor, i) for i in range(5)], []
    else:
        fields, problems = plan.readings(sensor)
    readings = [to_json(r) for r in fields]
    body: dict[str, Any] = {"metrics": readings}
    if inside is None:
        body |= unknown
    else:
        readings[inside % len(readings)] |= unknown

    reply = await post_json(envoy, "/v1/metrics:push", body)

    if problems:
        assert normalized(f for f, _ in violations_of(json_error(reply))) == expected_fields(problems)
    elif reply.status == 200:
        assert reply.json() == {"acceptedCount": len(readings)}, reply
        accepted(sensor, times_of(fields), ("unknown fields dropped", unknown))
    else:
        assert_names(json_error(reply), list(unknown))


@examples(60)
@given(
    before=st.integers(0, 3),
    plan=bad_batch_or_empty(JSON_PROBLEMS),
    after=st.integers(0, 3),
    ascii_only=st.booleans(),
)
async def test_http_stream_stops_at_the_bad_batch_naming_it(
    envoy: Envoy, before: int, plan: Plan | None, after: int, ascii_only: bool
) -> None:
    new_case()
    written = [f"bad-ok-{uuid.uuid4().hex[:24]}" for _ in range(before)]
    sensor = refused(plan)
    later = [refused(f"after {plan}") for _ in range(after)]
    bad, expected = planned_batch(sensor, plan, f"[{before}].metrics")
    batches = (
        [[valid_reading(s, i) for i in range(3)] for s in written]
        + [bad]
        + [[valid_reading(s, i) for i in range(3)] for s in later]
    )

    reply = await post_json(
        envoy,
        "/v1/metrics:stream",
        [{"metrics": [to_json(r) for r in b]} for b in batches],
        ascii_only=ascii_only,
    )

    body = json_error(reply)
    assert normalized(f for f, _ in violations_of(body)) == expected, short(body, 1000)
    for s, batch in zip(written, batches, strict=False):
        accepted(s, times_of(batch), f"stream batch before {plan}")


LABELS_AT_THE_LIMITS = {
    f"key-{i:02d}-" + "k" * (MAX_LABEL_KEY - 7): "v" * MAX_LABEL_VALUE for i in range(MAX_LABELS)
}


@pytest.mark.parametrize("kind", ["one huge sensor id", "a valid batch of readings at the size limits"])
@examples(3, shrink=False)
@given(megabytes=st.integers(17, 40))
async def test_http_body_over_the_16_mb_limit_is_413_not_retry_later(
    envoy: Envoy, kind: str, megabytes: int
) -> None:
    # A body over Envoy's 16 MB limit is refused for good (413, or 400 naming the batch), never with
    # 429 RESOURCE_EXHAUSTED, which docs/api.md tells clients to retry; if a valid batch is accepted, all of it.
    new_case()
    sensor = refused((kind, megabytes))
    if kind == "one huge sensor id":
        readings = [
            valid_reading(sensor, 0),
            valid_reading(sensor, 1) | {"sensor_id": "s" * megabytes * 1_000_000},
        ]
    else:
        one = len(json.dumps(to_json(valid_reading(sensor, 0) | {"labels": LABELS_AT_THE_LIMITS})))
        count = min(MAX_BATCH, megabytes * 1_000_000 // one + 1)
        readings = [
            valid_reading(sensor, i) | {"labels": LABELS_AT_THE_LIMITS, "unit": "u" * MAX_UNIT}
            for i in range(count)
        ]
    body = json.dumps({"metrics": [to_json(r) for r in readings]}).encode()
    assert len(body) > ENVOY_BODY_LIMIT

    reply = await call_http(envoy, "POST", "/v1/metrics:push", body, timeout=120)

    if kind != "one huge sensor id" and reply.status == 200:
        accepted(sensor, times_of(readings), kind)
        return
    body_json = json_error(reply, (400, 413))
    if reply.status == 400:
        assert_names(body_json, ["metrics"])


# --- HTTP/JSON: the original system's POST /api/v1/sensors/{uuid}/measurements ---------------------


def path_segment(value: str | bytes) -> str:
    """`value` percent-encoded as one path segment (dots too, so that "." and ".." stay names)."""
    raw = value.encode() if isinstance(value, str) else value
    return "".join(
        chr(b) if chr(b) in string.ascii_letters + string.digits + "-_~" else f"%{b:02X}" for b in raw
    )


@examples(80)
@given(uuid_=BAD_SENSOR_IDS.filter(lambda s: s and len(path_segment(s)) <= 4_000))
async def test_http_legacy_measurement_refuses_bad_sensor_uuid(envoy: Envoy, uuid_: str) -> None:
    new_case()
    refused(("bad uuid", uuid_), sensor=uuid_)

    reply = await post_json(
        envoy, f"/api/v1/sensors/{path_segment(uuid_)}/measurements", {"temperature": 20.5}
    )

    assert_names(json_error(reply), ["sensor_uuid", "sensorUuid"])


@examples(20)
@given(temperature=st.sampled_from([MISSING, None, "NaN", "Infinity", "-Infinity"]), with_at=st.booleans())
async def test_http_legacy_measurement_refuses_missing_or_non_finite_temperature(
    envoy: Envoy, temperature: Any, with_at: bool
) -> None:
    new_case()
    sensor = refused(("temperature", temperature))
    body: dict[str, Any] = {} if temperature is MISSING else {"temperature": temperature}
    if with_at:
        body["at"] = BASE_S * 1000

    reply = await post_json(envoy, f"/api/v1/sensors/{sensor}/measurements", body)

    assert_names(json_error(reply), mentions("temperature"))


@examples(40)
@given(
    at=st.one_of(
        st.integers(-(2**63), EARLIEST_S * 1000 - 1),  # before 2000
        st.integers((FUTURE_S) * 1000, TS_MAX_S * 1000 + 999),  # ahead
        st.integers(TS_MAX_S * 1000 + 1000, 2**63 - 1),  # beyond year 9999
    ),
    as_string=st.booleans(),
)
async def test_http_legacy_measurement_refuses_bad_at(envoy: Envoy, at: int, as_string: bool) -> None:
    new_case()
    sensor = refused(("at", at))

    reply = await post_json(
        envoy,
        f"/api/v1/sensors/{sensor}/measurements",
        {"temperature": 20.5, "at": str(at) if as_string else at},
    )

    assert_names(json_error(reply), mentions("at"))


# --- HTTP/JSON: the assessor's GET routes ----------------------------------------------------------

WINDOW = {"startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-02T00:00:00Z"}


@dataclass(frozen=True)
class Route:
    path: str  # with {id} for the sensor in the path
    required: dict[str, str]
    params: frozenset[str]  # every query parameter it knows (JSON names)
    page_size_max: int = 0


ROUTES = {
    "events": Route(
        "/v1/events",
        WINDOW,
        frozenset({"sensorId", "metricType", "kind", "startTime", "endTime", "pageSize", "pageToken"}),
        1_000,
    ),
    "stats": Route(
        "/v1/sensors/{id}/stats",
        WINDOW | {"metricType": "temperature"},
        frozenset({"metricType", "startTime", "endTime", "bucketWidth"}),
    ),
    "readings": Route(
        "/v1/sensors/{id}/readings",
        WINDOW,
        frozenset({"metricType", "startTime", "endTime", "pageSize", "pageToken"}),
        10_000,
    ),
    "sensors": Route("/v1/sensors", {}, frozenset({"pageSize", "pageToken", "sensorIdPrefix"}), 1_000),
    "legacy events": Route("/api/v1/sensors/{id}/events", {}, frozenset()),
    "legacy measurements": Route("/api/v1/sensors/{id}/measurements", {}, frozenset()),
    "watch": Route("/v1/events:watch", {}, frozenset({"sensorId", "metricType", "kind"})),
}
SNAKE = {
    "sensorId": "sensor_id",
    "metricType": "metric_type",
    "startTime": "start_time",
    "endTime": "end_time",
    "pageSize": "page_size",
    "pageToken": "page_token",
    "sensorIdPrefix": "sensor_id_prefix",
    "bucketWidth": "bucket_width",
    "kind": "kind",
}
KIND_VALUES = {"EVENT_KIND_UNSPECIFIED", "EVENT_KIND_THRESHOLD_EXCEEDED", "0", "1"}


def query(params: dict[str, str | bytes]) -> str:
    return "&".join(f"{path_segment(k)}={path_segment(v)}" for k, v in params.items())


def url(route: Route, params: dict[str, str | bytes], sensor: str | bytes = "s-1") -> str:
    path = route.path.replace("{id}", path_segment(sensor))
    return f"{path}?{query(params)}" if params else path


@st.composite
def bad_query_parameters(draw: st.DrawFn) -> tuple[str, dict[str, str], list[str]]:
    """(route, parameters, names the 400 must mention) with exactly one thing wrong."""
    name = draw(st.sampled_from(sorted(ROUTES)))
    route = ROUTES[name]
    params = dict(route.required)
    choices = ["unknown parameter"]
    if "pageSize" in route.params:
        choices.append("pageSize")
    if "kind" in route.params:
        choices.append("kind")
    if "pageToken" in route.params:
        choices.append("pageToken")
    if "bucketWidth" in route.params:
        choices.append("bucketWidth")
    if "startTime" in route.params:
        choices += ["bad time", "missing time", "inverted range", "range over 400 days"]
    if "metricType" in route.required:
        choices.append("missing metricType")
    what = draw(st.sampled_from(choices))
    if what == "unknown parameter":
        unknown = draw(
            st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
                lambda p: p not in route.params and p not in SNAKE.values()
            )
        )
        params[unknown] = draw(st.text(STORABLE_CHAR, max_size=10))
        return name, params, [unknown]
    if what == "pageSize":
        params["pageSize"] = draw(
            st.one_of(
                st.integers(-(2**31), -1).map(str),
                st.integers(2**31, 2**80).map(str),
                st.integers(-(2**80), -(2**31) - 1).map(str),
                NO_DIGITS.filter(lambda s: s != "+"),
                st.sampled_from(["1.5", "0x10", " 5", "\u0663"]),
            )
        )
        return name, params, ["page_size", "pageSize"]
    if what == "kind":
        params["kind"] = draw(
            st.one_of(
                NO_DIGITS.filter(lambda s: s and s not in KIND_VALUES),
                st.integers(2, 2**40).map(str),
                st.integers(-(2**40), -1).map(str),
                st.just("event_kind_threshold_exceeded"),
            )
        )
        return name, params, ["kind"]
    if what == "pageToken":
        params["pageToken"] = draw(
            st.text(STORABLE_CHAR, min_size=1, max_size=60) | st.just("WzEsIngiLCJ5Il0")
        )
        return name, params, ["page_token", "pageToken"]
    if what == "bucketWidth":
        params["bucketWidth"] = draw(
            st.one_of(
                NO_DIGITS,
                st.integers(1, 10**6).filter(lambda s: s % 60).map(lambda s: f"{s}s"),
                st.integers(-(10**6), 0).map(lambda s: f"{s * 60}s"),
                st.sampled_from(["60s", "1m", "1h", "1.5s"]),
                st.integers(315_576_000_001, 10**15).map(lambda s: f"{s}s"),
            )
        )
        return name, params, ["bucket_width", "bucketWidth"]
    if what == "missing metricType":
        del params["metricType"]
        return name, params, ["metric_type", "metricType"]
    which = draw(st.sampled_from(["startTime", "endTime"]))
    if what == "bad time":
        params[which] = draw(
            NO_DIGITS
            | st.sampled_from(
                [
                    "0000-01-01T00:00:00Z",
                    "10000-01-01T00:00:00Z",
                    "2026-13-01T00:00:00Z",
                    "2026-01-01T00:00:00",
                    "yesterday",
                ]
            )
        )
        return name, params, [SNAKE[which], which]
    if what == "missing time":
        del params[which]
        return name, params, [SNAKE[which], which]
    if what == "inverted range":
        start = draw(st.integers(0, NOW_S))
        params["startTime"] = rfc3339(start, None)
        params["endTime"] = rfc3339(start - draw(st.integers(0, 10**6)), None)
        return name, params, ["end_time", "endTime"]
    start = draw(st.integers(0, NOW_S))
    params["startTime"] = rfc3339(start, None)
    params["endTime"] = rfc3339(start + 400 * 86_400 + draw(st.integers(1, 10**9)), None)
    return name, params, ["end_time", "endTime"]


@examples(120)
@given(case=bad_query_parameters())
async def test_http_queries_refuse_bad_parameters_naming_them(envoy: Envoy, case: Any) -> None:
    new_case()
    name, params, names = case

    reply = await call_http(envoy, "GET", url(ROUTES[name], params), timeout=10)

    assert_names(json_error(reply), names)


@pytest.mark.parametrize("name", sorted(n for n, r in ROUTES.items() if r.page_size_max))
@pytest.mark.parametrize("over", [1, 2**31 - 1 - 10_000])
async def test_a_page_size_over_the_maximum_is_taken_as_the_maximum(
    envoy: Envoy, name: str, over: int
) -> None:
    # Google's AIP-158: not an error; the client gets full pages of the largest size.
    route = ROUTES[name]
    reply = await call_http(
        envoy, "GET", url(route, {**route.required, "pageSize": str(route.page_size_max + over)}), timeout=10
    )
    assert reply.status == 200, reply


QUERY_TEXT = st.one_of(
    st.text(TEXT_CHAR, min_size=1, max_size=60),
    st.sampled_from(SQL),
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\U0010ffff",
            "s-\U0010ffff",
            "\u202e",
            ".",
            "..",
            "%",
            "%00",
            "a/b",
            "?",
            "#",
            "&",
            "=",
            "+",
            "\\",
            "*",
            "_",
            "s-1%",
        ]
    ),
)
TEXT_PARAMETERS = [
    # (route, where the text goes: "path" or a query parameter, names a 400 must mention)
    ("events", "sensorId", ["sensor_id", "sensorId"]),
    ("events", "metricType", ["metric_type", "metricType"]),
    ("stats", "path", ["sensor_id", "sensorId"]),
    ("stats", "metricType", ["metric_type", "metricType"]),
    ("readings", "path", ["sensor_id", "sensorId"]),
    ("readings", "metricType", ["metric_type", "metricType"]),
    ("sensors", "sensorIdPrefix", ["sensor_id_prefix", "sensorIdPrefix"]),
    ("legacy events", "path", ["sensor_uuid", "sensorUuid"]),
    ("legacy measurements", "path", ["sensor_uuid", "sensorUuid"]),
]


@examples(120)
@given(where=st.sampled_from(TEXT_PARAMETERS), text=QUERY_TEXT)
async def test_http_queries_with_odd_text_answer_or_refuse_never_fail(
    envoy: Envoy, where: tuple[str, str, list[str]], text: str
) -> None:
    # Ids, types and prefixes in queries are not checked against the ingest rules: an unknown sensor
    # is an empty result. So control characters, NUL, SQL, the highest code point: 200 or a 400 naming
    # the parameter, never a 5xx.
    new_case()
    name, param, names = where
    route = ROUTES[name]
    params = dict(route.required)
    path = url(route, params, sensor=text) if param == "path" else url(route, params | {param: text})

    reply = await call_http(envoy, "GET", path, timeout=10)

    if reply.status == 200:
        assert reply.content_type.startswith("application/json") and isinstance(reply.json(), dict), reply
    else:
        assert_names(json_error(reply), names)


def invalid_utf8_text() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda a, bad, b: a.encode() + bad + b.encode(),
        st.text(st.sampled_from(ID_CHARS), max_size=10),
        INVALID_UTF8,
        st.text(st.sampled_from(ID_CHARS), max_size=10),
    )


URL_TEXT_PLACES = [
    *TEXT_PARAMETERS,
    ("watch", "sensorId", ["sensor_id", "sensorId"]),
    ("events", "pageToken", ["page_token", "pageToken"]),
    ("legacy post", "path", ["sensor_uuid", "sensorUuid"]),
]


@examples(60)
@given(where=st.sampled_from(URL_TEXT_PLACES), raw=invalid_utf8_text())
async def test_http_invalid_utf8_in_the_url_is_a_400_naming_the_field(
    envoy: Envoy, where: tuple[str, str, list[str]], raw: bytes
) -> None:
    # A percent-encoded byte sequence that is not UTF-8 cannot be a string field: a 400 naming it.
    new_case()
    name, param, names = where
    if name == "legacy post":
        reply = await post_json(
            envoy, f"/api/v1/sensors/{path_segment(raw)}/measurements", {"temperature": 20.5}
        )
    else:
        route = ROUTES[name]
        params: dict[str, str | bytes] = dict(route.required)
        path = url(route, params, sensor=raw) if param == "path" else url(route, params | {param: raw})
        reply = await call_http(envoy, "GET", path, timeout=10)

    assert_names(json_error(reply), names)


LONG_PLACES = [w for w in TEXT_PARAMETERS if w[1] in ("path", "sensorId", "sensorIdPrefix")] + [
    ("legacy post", "path", ["sensor_uuid", "sensorUuid"])
]


@examples(20, shrink=False)
@given(where=st.sampled_from(LONG_PLACES), length=st.integers(17_000, 70_000))
async def test_http_long_ids_in_the_url_get_a_final_answer(
    envoy: Envoy, where: tuple[str, str, list[str]], length: int
) -> None:
    # A long id in the URL: a final answer (200 for a query, 400 naming the id, 414 or 431), never
    # 429 RESOURCE_EXHAUSTED (docs/api.md: retry later) or a 5xx.
    new_case()
    name, param, names = where
    text = ("long-" + "x" * length)[:length]
    if name == "legacy post":
        refused(("long id", length), sensor=text)
        reply = await post_json(envoy, f"/api/v1/sensors/{text}/measurements", {"temperature": 20.5})
    else:
        route = ROUTES[name]
        path = (
            url(route, dict(route.required), sensor=text)
            if param == "path"
            else url(route, dict(route.required) | {param: text})
        )
        reply = await call_http(envoy, "GET", path, timeout=10)

    if reply.status == 200 and name != "legacy post":
        assert reply.content_type.startswith("application/json"), reply
        return
    body = json_error(reply, (400, 414, 431))
    if reply.status == 400:
        assert_names(body, names)


# --- U+0000 in unit and labels: PostgreSQL cannot store it ----------------------------------------


async def receiver_refuses_nul(receiver: ReceiverServiceStub) -> list[str]:
    """Which of unit, label key and label value the receiver does NOT refuse for U+0000, asked with a
    batch that is refused anyway (a NaN value), so that nothing can be written."""
    probe = valid_reading(f"bad-probe-{uuid.uuid4().hex[:16]}", 0) | {
        "value": math.nan,
        "unit": "c\x00",
        "labels": {"k\x00": "v", "k": "v\x00"},
    }
    violations = await grpc_refusal(
        lambda: receiver.PushMetrics(rs.PushMetricsRequest(metrics=[to_proto(probe)]), timeout=30)
    )
    fields = {f for f, _ in violations}
    wanted = {
        "unit": "metrics[0].unit",
        "label key": "metrics[0].labels['k\\x00']",
        "label value": "metrics[0].labels['k']",
    }
    return [what for what, f in wanted.items() if f not in fields]


@examples(40)
@given(
    place=st.sampled_from(["unit", "label key", "label value"]),
    text=st.builds(
        lambda a, b: a + "\x00" + b, st.text(STORABLE_CHAR, max_size=8), st.text(STORABLE_CHAR, max_size=8)
    ),
    over=st.sampled_from(["grpc", "http"]),
)
async def test_nul_in_unit_or_labels_is_refused(
    receiver: ReceiverServiceStub, envoy: Envoy, place: str, text: str, over: str
) -> None:
    # U+0000 passes every documented check, but PostgreSQL text and jsonb cannot hold it: a reading with
    # it, once in Kafka, fails the saver's round again and again and nothing more gets stored. It must be
    # refused at the door. Asked first in a way that writes nothing, so that an unfixed receiver is
    # reported instead of being fed a reading that stalls the saver.
    new_case()
    let_through = await receiver_refuses_nul(receiver)
    assert not let_through, (
        f"the receiver lets U+0000 through in {let_through}: a reading with it would stall the saver "
        "(not sent; receiver/validation.py refuses it from the next receiver start)"
    )
    sensor = refused((place, text))
    bad = valid_reading(sensor, 100) | (
        {"unit": text[:MAX_UNIT]}
        if place == "unit"
        else {"labels": {text: "v"} if place == "label key" else {"k": text}}
    )
    readings = [valid_reading(sensor, 0), bad, valid_reading(sensor, 1)]
    if over == "grpc":
        request = rs.PushMetricsRequest(metrics=[to_proto(r) for r in readings])
        fields = [f for f, _ in await grpc_refusal(lambda: receiver.PushMetrics(request, timeout=30))]
    else:
        fields = [
            f
            for f, _ in violations_of(
                json_error(
                    await post_json(envoy, "/v1/metrics:push", {"metrics": [to_json(r) for r in readings]})
                )
            )
        ]
    assert normalized(fields) == {"metrics[1].unit" if place == "unit" else "metrics[1].labels"}, fields


# --- last: nothing of a refused batch was written, and every part still serves ----------------------


async def test_zz_nothing_of_a_refused_batch_was_written_and_all_serve(
    receiver: ReceiverServiceStub, envoy_channel: grpc.aio.Channel, target: Target, db: asyncpg.Pool
) -> None:
    if not LEDGER.refused and not LEDGER.accepted:
        pytest.skip("no bad-input case ran")
    new_case()
    # A sentinel after every case: once the saver has consumed all of the topic, anything of the cases
    # that was ever going to be stored is stored.
    sentinel = f"bad-sentinel-{uuid.uuid4().hex[:16]}"
    request = rs.PushMetricsRequest(metrics=[to_proto(valid_reading(sentinel, 0))])
    await grpc_patiently(lambda: receiver.PushMetrics(request, timeout=30))
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic, timeout=120)

    async def sentinel_stored() -> None:
        assert await db.fetchval("SELECT count(*) FROM readings WHERE sensor_id = $1", sentinel) == 1

    await eventually(sentinel_stored, timeout=30)

    # PostgreSQL: no row of a refused marker (ids with U+0000 cannot be asked for: nor stored)
    # Markers of the transcoder's known quirks (TRANSCODER_QUIRKS) are written: their tests say so.
    quirks = {s for s, why in LEDGER.refused.items() if why.split(":", 1)[0] in TRANSCODER_QUIRKS}
    for sensor in quirks:
        LEDGER.refused.pop(sensor)
    storable = [s for s in LEDGER.refused if "\x00" not in s]
    rows = await db.fetch(
        "SELECT sensor_id, count(*) AS n FROM readings WHERE sensor_id = ANY($1::text[]) GROUP BY 1", storable
    )
    leaked = {r["sensor_id"]: r["n"] for r in rows}
    # ... and every accepted marker with exactly its readings
    rows = await db.fetch(
        "SELECT sensor_id, reading_time FROM readings WHERE sensor_id = ANY($1::text[])",
        list(LEDGER.accepted),
    )
    stored: dict[str, set[int]] = {}
    for r in rows:
        stored.setdefault(r["sensor_id"], set()).add(r["reading_time"])
    wrong = {
        s: (sorted(times), sorted(stored.get(s, set())))
        for s, (times, _) in LEDGER.accepted.items()
        if stored.get(s, set()) != times
    }

    # (batches that may or may not be written: only counted)
    unsure_written = await db.fetchval(
        "SELECT count(DISTINCT sensor_id) FROM readings WHERE sensor_id = ANY($1::text[])",
        list(LEDGER.unsure),
    )

    # Kafka: no record of a refused marker (skipped when others filled the topic meanwhile)
    end = await end_offsets(target.kafka_bootstrap_servers, target.metrics_topic)
    new_records = sum(offset - LEDGER.start_offsets.get(tp, 0) for tp, offset in end.items())
    in_kafka: set[str] = set()
    if new_records <= 200_000:
        for record in await read_topic(
            target.kafka_bootstrap_servers, target.metrics_topic, LEDGER.start_offsets
        ):
            try:
                in_kafka.update(m.sensor_id for m in metric_pb2.MetricBatch.FromString(record.value).metrics)
            except DecodeError:
                continue
    leaked_to_kafka = sorted(set(LEDGER.refused) & in_kafka)
    print(
        f"\n[bad-input] checked {len(LEDGER.refused)} refused markers (and {len(LEDGER.unsure)} unchecked, {unsure_written} of them written) (rows: {len(leaked)}, in Kafka: "
        f"{len(leaked_to_kafka)} of {new_records} records) and {len(LEDGER.accepted)} accepted ones ({len(wrong)} wrong)"
    )
    assert not leaked, "rows of refused batches:\n" + "\n".join(
        f"  {short(s, 80)}: {n} rows; {LEDGER.refused[s]}" for s, n in leaked.items()
    )
    assert not leaked_to_kafka, "refused readings in Kafka:\n" + "\n".join(
        f"  {short(s, 80)}: {LEDGER.refused[s]}" for s in leaked_to_kafka
    )
    assert not wrong, "accepted batches not stored exactly:\n" + "\n".join(
        f"  {s}: expected, stored {v}; {LEDGER.accepted[s][1]}" for s, v in wrong.items()
    )

    # Every part still serves.
    for name in ("receiver", "processor", "saver", "assessor"):

        async def serving(name: str = name) -> None:
            try:
                async with grpc.aio.insecure_channel(target.services[name]) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
            except grpc.aio.AioRpcError as error:
                raise AssertionError(f"{name}: {error.code().name}") from None
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, f"{name}: {reply.status}"

        await eventually(serving, timeout=30, what=f"{name} serving")
