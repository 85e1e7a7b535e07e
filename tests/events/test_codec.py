"""Tests of the record codec: encoding, the hash, upcasting, and what bad records raise.

Test event classes are registered through the public `register_event` /
`register_upcaster` into a registry copied per test (the `registry` fixture), so they
never leak into other tests' view of the catalog.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import msgpack
import pytest
import trio

from events import (
    ANY,
    DocumentIndexed,
    Event,
    EventStore,
    EventStoreError,
    LLMCallCompleted,
    MemoryAdded,
    NewEvent,
    PlanCreated,
    SessionStarted,
    StepCompleted,
    StepFailed,
    StoreCorrupted,
    UnknownEventType,
    audit_log,
    decode_record,
    register_event,
    register_upcaster,
    registered_types,
    typed_event,
)
from events import _types as event_types
from events._codec import (
    COMPRESSED,
    GENESIS_HASH,
    PreparedEvent,
    encode_record,
    pack_data,
    record_hash,
)
from events._log import AppendRequest
from events._model import new_event_id_bytes
from events._store import prepare_append
from events._types import check_decodable
from tests.python_process import python_lines

from .conftest import TIMEOUT_S


def prepared(etype: str, data: dict[str, Any], schema: int = 1) -> PreparedEvent:
    return PreparedEvent(etype, schema, uuid.uuid4().bytes, "corr", "cause", pack_data(etype, data))


# --- encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compress_over", "compressed"),
    [pytest.param(0, False, id="plain"), pytest.param(64, True, id="compressed")],
)
def test_encode_decode_round_trips_a_record(compress_over: int, compressed: bool) -> None:
    data = {"session_id": "s", "values": {"text": "abc" * 100, "raw": b"\x01\x02", "n": 3}}
    event = prepared("ContextUpdated", data)
    prev = bytes(range(32))

    value, digest = encode_record(7, "session-s", 3, 123_456, event, prev, compress_over)
    record = decode_record(value, 7)

    assert value[:32] == digest
    assert record.hash == digest
    assert (record.position, record.stream, record.version) == (7, "session-s", 3)
    assert (record.type, record.schema, record.id_bytes) == (
        "ContextUpdated",
        1,
        event.id_bytes,
    )
    assert (record.ts, record.correlation, record.causation) == (123_456, "corr", "cause")
    assert record.prev_hash == prev
    assert record.data == data
    flags = msgpack.unpackb(value[32:])[9]
    assert flags == (COMPRESSED if compressed else 0)


def test_record_hash_commits_to_the_previous_hash_and_the_body() -> None:
    event = prepared("SessionStarted", {"session_id": "s"})
    value, digest = encode_record(1, "s", 1, 1, event, GENESIS_HASH, 0)
    _, other_digest = encode_record(1, "s", 1, 1, event, b"\x01" * 32, 0)

    assert record_hash(GENESIS_HASH, value[32:]) == digest
    assert digest != other_digest
    assert record_hash(GENESIS_HASH, value[32:-1] + b"!") != digest


def test_envelope_is_a_twelve_field_msgpack_array() -> None:
    event = prepared("SessionStarted", {"session_id": "s"})
    value, _ = encode_record(1, "s", 1, 99, event, GENESIS_HASH, 0)
    fields = msgpack.unpackb(value[32:], raw=False)
    assert fields == [
        1,
        "s",
        1,
        "SessionStarted",
        1,
        event.id_bytes,
        99,
        "corr",
        "cause",
        0,
        GENESIS_HASH,
        {"session_id": "s"},
    ]


CATALOG_SAMPLES = [
    PlanCreated(
        run_id="r",
        steps=[
            {
                "id": "s1",
                "agent": "quotes",
                "action": "get",
                "parameters": {"symbols": ["NVDA", "AAPL"]},
                "dependencies": [],
                "reasoning": "need prices",
            }
        ],
    ),
    StepCompleted(run_id="r", step_id="s1", result={"NVDA": 1.25}, duration_s=0.5),
    StepFailed(run_id="r", step_id="s1", error_type="Timeout", message="m", retryable=True),
    LLMCallCompleted(
        run_id=None, purpose="plan", model="m", prompt_tokens=1, completion_tokens=2, latency_s=0.1
    ),
    MemoryAdded(user="u", memory_id="m", content="c", embedding=b"\x00\x00\x80?", model="local"),
    DocumentIndexed(
        collection="c",
        path="/a.txt",
        sha256="0" * 64,
        chunks=[{"text": "t", "offset": 0, "embedding": b"\x00" * 8}],
    ),
]


@pytest.mark.parametrize("event", CATALOG_SAMPLES, ids=lambda e: type(e).__name__)
async def test_catalog_event_round_trips_through_the_store(store: EventStore, event: Event) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("run-r", [event])
        [record] = await store.read()
    assert typed_event(record) == event
    assert type(typed_event(record)) is type(event)


# --- upcasting ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _TestUpcastV2(Event):
    """Schema 1 was {"name": str}; schema 2 renamed it and added tags."""

    schema: ClassVar[int] = 2
    title: str
    tags: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class _TestUpcastV3(Event):
    """Schema 1 {"n": int} -> 2 {"count": int} -> 3 {"count": int, "unit": str}."""

    schema: ClassVar[int] = 3
    count: int
    unit: str


@dataclasses.dataclass(frozen=True, slots=True)
class _TestNoUpcasterV2(Event):
    schema: ClassVar[int] = 2
    value: int


@dataclasses.dataclass(frozen=True, slots=True)
class _TestBrokenUpcastV2(Event):
    schema: ClassVar[int] = 2
    value: int


@pytest.fixture
def registry() -> Iterator[None]:
    """The test classes above, registered for one test and removed after it.

    The registry's dicts are restored in place: other modules hold references to them.
    """
    registries: list[dict[Any, Any]] = [
        event_types._EVENT_TYPES,
        event_types._UPCASTERS,
        event_types._CURRENT_SCHEMA,
    ]
    saved = [dict(r) for r in registries]
    try:
        for cls in (_TestUpcastV2, _TestUpcastV3, _TestNoUpcasterV2, _TestBrokenUpcastV2):
            register_event(cls)
        register_upcaster("_TestUpcastV2", 1, lambda d: {"title": d["name"], "tags": ["from-v1"]})
        register_upcaster("_TestUpcastV3", 1, lambda d: {"count": d["n"]})
        register_upcaster("_TestUpcastV3", 2, lambda d: {**d, "unit": "items"})
        register_upcaster("_TestBrokenUpcastV2", 1, lambda d: {"value": d["missing"]})
        yield
    finally:
        for registry_dict, before in zip(registries, saved, strict=True):
            registry_dict.clear()
            registry_dict.update(before)
        event_types._DECODABLE.clear()  # what it learned of the removed classes


def test_register_event_refuses_a_second_class_of_the_same_name(registry: None) -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class _TestUpcastV2(Event):  # same type name, different class
        title: str

    with pytest.raises(ValueError, match="event type '_TestUpcastV2' is already registered"):
        register_event(_TestUpcastV2)


async def test_old_schema_record_reads_back_as_the_current_type(
    registry: None, store: EventStore
) -> None:
    old = NewEvent(type="_TestUpcastV2", data={"name": "quarterly"}, schema=1)
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [old])
        [record] = await store.read()
        [by_stream] = await store.read_stream("s")

    assert record.schema == 2
    assert record.data == {"title": "quarterly", "tags": ["from-v1"]}
    assert typed_event(record) == _TestUpcastV2(title="quarterly", tags=["from-v1"])
    assert typed_event(by_stream) == typed_event(record)
    assert audit_log(store.log).ok


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        pytest.param(1, {"n": 4}, id="from-1"),
        pytest.param(2, {"count": 4}, id="from-2"),
        pytest.param(3, {"count": 4, "unit": "items"}, id="current"),
    ],
)
async def test_upcasting_applies_each_step_up_to_the_current_schema(
    registry: None, store: EventStore, schema: int, data: dict[str, Any]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [NewEvent(type="_TestUpcastV3", data=data, schema=schema)])
        [record] = await store.read()
    assert record.schema == 3
    assert typed_event(record) == _TestUpcastV3(count=4, unit="items")


async def test_typed_event_is_written_with_its_class_schema(
    registry: None, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [_TestUpcastV2(title="t", tags=[])])
        [(_, value)] = await trio.to_thread.run_sync(store.log.read_raw, 0, 1)
    assert msgpack.unpackb(value[32:])[4] == 2


async def commit_directly(store: EventStore, *events: PreparedEvent) -> None:
    """Write through the log, past the store's writer (as an older release would have)."""
    request = AppendRequest("s", ANY, events)
    await trio.to_thread.run_sync(store.log.commit, [request], 1)


async def test_old_schema_without_upcaster_raises_unknown_event_type(
    registry: None, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [NewEvent(type="SessionStarted", data={"session_id": "x"})])
        await commit_directly(store, prepared("_TestNoUpcasterV2", {"v": 1}, schema=1))
        with pytest.raises(UnknownEventType) as info:
            await store.read()

    assert info.value.position == 2
    assert info.value.event_type == "_TestNoUpcasterV2 schema 1 (no upcaster)"
    report = audit_log(store.log)
    assert report.first_bad_position == 2
    assert report.checked == 1


async def test_failing_upcaster_raises_store_corrupted_with_position(
    registry: None, store: EventStore
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await commit_directly(store, prepared("_TestBrokenUpcastV2", {"v": 1}, schema=1))
        with pytest.raises(StoreCorrupted, match="upcasting _TestBrokenUpcastV2 failed") as info:
            await store.read()
    assert info.value.position == 1


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(NewEvent(type="_TestNoUpcasterV2", data={"v": 1}, schema=1), id="no-upcaster"),
        pytest.param(
            NewEvent(type="_TestBrokenUpcastV2", data={"v": 1}, schema=1), id="broken-upcaster"
        ),
    ],
)
async def test_append_of_old_schema_that_cannot_be_upcast_leaves_the_store_running(
    registry: None, store: EventStore, event: NewEvent
) -> None:
    """Refusing the append up front is fine; killing the writer task is not."""
    with trio.fail_after(TIMEOUT_S):
        try:
            await store.append("s", [event])
        except EventStoreError:
            pass
        result = await store.append(
            "t", [NewEvent(type="SessionStarted", data={"session_id": "x"})]
        )
        assert result.stream == "t"
        assert store.head_position == result.last_position


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(
            NewEvent(type="_TestNoUpcasterV2", data={"value": 1}, schema=1),
            "_TestNoUpcasterV2 schema 1",
            id="no-upcaster",
        ),
        pytest.param(
            NewEvent(type="SessionStarted", data={"session_id": "x"}, schema=2),
            "SessionStarted schema 2",
            id="newer-than-current",
        ),
    ],
)
async def test_append_of_a_schema_that_cannot_be_read_back_is_refused(
    registry: None, store: EventStore, event: NewEvent, message: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(UnknownEventType, match=message):
            await store.append("s", [event])
        assert store.head_position == 0
        assert await store.read() == []


# --- bad records on read --------------------------------------------------------------


async def test_unknown_type_on_read_raises_unknown_event_type_with_position(
    store: EventStore,
) -> None:
    request = AppendRequest("s", ANY, (prepared("_NeverRegistered", {"a": 1}),))
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [NewEvent(type="SessionStarted", data={"session_id": "x"})])
        outcomes, _ = await trio.to_thread.run_sync(store.log.commit, [request], 1)
        assert [o.positions for o in outcomes] == [(2,)]  # type: ignore[union-attr]

        [(_, raw)] = await trio.to_thread.run_sync(store.log.read_raw, 1, 1)
        with pytest.raises(UnknownEventType) as info:
            await store.read()
        with pytest.raises(UnknownEventType):
            await store.read_stream("s")
        with pytest.raises(UnknownEventType):
            await store.read_type("_NeverRegistered")

    assert (info.value.event_type, info.value.position) == ("_NeverRegistered", 2)
    assert str(info.value) == "unknown event type '_NeverRegistered' at position 2"
    with pytest.raises(UnknownEventType):
        decode_record(raw)
    report = audit_log(store.log)
    assert (report.first_bad_position, report.checked) == (2, 1)
    assert report.problem is not None and "_NeverRegistered" in report.problem


def body_value(fields: list[Any]) -> bytes:
    body = msgpack.packb(fields, use_bin_type=True)
    return record_hash(GENESIS_HASH, body) + body


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(bytes(32) + b"\xc1", "undecodable record", id="invalid-msgpack"),
        pytest.param(bytes(32) + b"\x9c\x01", "undecodable record", id="truncated"),
        pytest.param(bytes(20), "undecodable record", id="shorter-than-hash"),
        pytest.param(body_value([1, "s", 1]), "record is not a 12-field envelope", id="3-fields"),
        pytest.param(
            body_value({"position": 1}), "record is not a 12-field envelope", id="map-body"
        ),
    ],
)
def test_corrupted_body_raises_store_corrupted(value: bytes, reason: str) -> None:
    with pytest.raises(StoreCorrupted, match=reason) as info:
        decode_record(value, 5)
    assert info.value.position == 5
    assert str(info.value).startswith("event log corrupted at position 5: ")


def test_corrupted_compressed_payload_raises_store_corrupted() -> None:
    fields = [9, "s", 1, "SessionStarted", 1, bytes(16), 0, None, None, COMPRESSED]
    garbage = body_value([*fields, GENESIS_HASH, b"not zlib"])
    not_msgpack = body_value([*fields, GENESIS_HASH, zlib.compress(b"\xc1")])

    for value in (garbage, not_msgpack):
        with pytest.raises(StoreCorrupted, match="compressed payload does not decode") as info:
            decode_record(value)
        assert info.value.position == 9


async def test_read_of_undecodable_record_names_its_position(store: EventStore) -> None:
    """The log knows each record's key; a corrupt record must be reported at it."""
    bad = PreparedEvent("SessionStarted", 1, uuid.uuid4().bytes, None, None, b"\xc1")
    with trio.fail_after(TIMEOUT_S):
        await store.append("s", [NewEvent(type="SessionStarted", data={"session_id": "x"})])
        await trio.to_thread.run_sync(store.log.commit, [AppendRequest("s", ANY, (bad,))], 1)
        with pytest.raises(StoreCorrupted) as info:
            await store.read()
    assert info.value.position == 2
    report = audit_log(store.log)
    assert report.first_bad_position == 2


def test_registry_fixture_does_not_leak_test_types() -> None:
    """Runs after the tests above that registered `_Test*` classes."""
    assert not [t for t in registered_types() if t.startswith("_Test")]


# --- event ids -----------------------------------------------------------------------


def test_event_ids_are_version_7_uuids_in_time_order() -> None:
    ids = [new_event_id_bytes() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for raw in ids:
        parsed = uuid.UUID(bytes=raw)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    stamps = [int.from_bytes(raw[:6], "big") for raw in ids]
    assert stamps == sorted(stamps)


def test_seeding_random_does_not_repeat_event_ids() -> None:
    """Code that seeds `random` for repeatable results must not make ids repeat."""
    random.seed(7)
    first = [new_event_id_bytes()[6:] for _ in range(5)]
    random.seed(7)
    again = [new_event_id_bytes()[6:] for _ in range(5)]
    assert not set(first) & set(again)


# A process of its own: forking the test process (its worker threads, pytest) is not safe.
_FORKS = """
import os, sys
from events._model import new_event_id_bytes
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.write(write_end, b"".join(new_event_id_bytes() for _ in range(8)))
    finally:
        os._exit(0)
os.close(write_end)
parent = b"".join(new_event_id_bytes() for _ in range(8))
with os.fdopen(read_end, "rb") as pipe:
    child = pipe.read()
os.waitpid(pid, 0)
sys.stdout.write((parent + child).hex())
"""


def test_a_forked_child_makes_other_event_ids_than_its_parent() -> None:
    (output,) = python_lines(_FORKS)
    raw = bytes.fromhex(output)
    ids = [raw[i : i + 16] for i in range(0, len(raw), 16)]
    parent, child = ids[:8], ids[8:]
    assert len(child) == 8
    assert not {r[6:] for r in parent} & {r[6:] for r in child}


def test_only_ids_made_for_the_append_are_marked_fresh() -> None:
    # The writer skips looking up a fresh id; a caller's (a retry's) must be looked up.
    typed = SessionStarted(session_id="s1", user="ada", client="test")
    given = SessionStarted(session_id="s2", user="ada", client="test").new()
    prepared = prepare_append("s", [typed, given], ANY, 1 << 20).events
    assert [p.fresh_id for p in prepared] == [True, False]


def test_a_type_made_newer_again_is_checked_again(registry: None) -> None:
    # check_decodable remembers readable pairs; registering the class again with a new
    # schema and no upcaster must make its old records unreadable, not remembered.
    check_decodable("_TestUpcastV2", 1)
    _TestUpcastV2.schema = 3
    try:
        register_event(_TestUpcastV2)
        with pytest.raises(UnknownEventType, match="no upcaster from 2"):
            check_decodable("_TestUpcastV2", 1)
    finally:
        _TestUpcastV2.schema = 2
