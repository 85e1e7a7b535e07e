"""What enters the log and what is read back from it, validated totally.

- A payload (a tool's result, say: any Python value at all) is either refused at the
  append with `EventEncodingError` / `EventTooLarge`, or stored and read back whole:
  the log never takes a record it cannot give back (a tuple as a map key used to be
  written, and then every read of the log failed as "corrupted").
- Any bytes read back as a record decode to a `RecordedEvent` or raise an
  `EventStoreError` (`StoreCorrupted`, `UnknownEventType`), never a `TypeError`.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    EventEncodingError,
    EventStoreError,
    EventTooLarge,
    MemoryEventLog,
    NewEvent,
    RecordedEvent,
    StoreOptions,
    open_event_store,
)
from events._codec import HASH_SIZE, decode_record, pack_data

from .conftest import TIMEOUT_S

OPTIONS = StoreOptions(sync=False, max_event_bytes=4096, compress_over_bytes=256)

keys = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=3)
odd = (
    st.tuples(st.integers(), st.integers())
    | st.sets(st.integers(), max_size=2)
    | st.builds(object)
    | st.floats()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=4)
)
python_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | odd,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(keys | st.tuples(st.integers()), children, max_size=3)
        | st.tuples(children, children)
    ),
    max_leaves=12,
)


def same(stored: Any, given_value: Any) -> bool:
    """Equal as msgpack round-trips values: tuples come back as lists, NaN as NaN."""
    if isinstance(given_value, float) and math.isnan(given_value):
        return isinstance(stored, float) and math.isnan(stored)
    if isinstance(given_value, tuple):
        given_value = list(given_value)
    if isinstance(given_value, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(given_value)
            and all(same(s, g) for s, g in zip(stored, given_value, strict=True))
        )
    if isinstance(given_value, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == given_value.keys()
            and all(same(stored[k], v) for k, v in given_value.items())
        )
    return bool(stored == given_value)


@settings(max_examples=200, deadline=None)
@given(python_values)
async def test_a_payload_is_refused_at_the_append_or_read_back_whole(result: Any) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_event_store(log=MemoryEventLog(), options=OPTIONS) as store:
            data = {"run_id": "r", "step_id": "s", "result": result, "duration": 0.1}
            try:
                await store.append("run-r", [NewEvent("StepCompleted", data)])
            except (EventEncodingError, EventTooLarge):
                assert store.head_position == 0
                return
            (record,) = await store.read(0)
    assert same(record.data["result"], result)


def body(fields: list[Any]) -> bytes:
    return bytes(HASH_SIZE) + msgpack.packb(fields, use_bin_type=True)


ints = st.integers(-(2**63), 2**63 - 1)
envelopes = st.lists(
    st.none()
    | ints
    | st.text(max_size=12)
    | st.binary(max_size=8)
    | st.lists(ints, max_size=2)
    | st.dictionaries(st.text(max_size=3), ints, max_size=2),
    min_size=12,
    max_size=12,
)
plausible = st.tuples(
    st.sampled_from(["StepCompleted", "RunRequested", "Nope"]) | ints,
    st.integers(0, 3) | st.text(max_size=2),
    st.integers(0, 1) | st.text(max_size=2),
    st.dictionaries(st.text(max_size=4), ints, max_size=2) | st.binary(max_size=8),
).map(lambda p: [1, "run-x", 1, p[0], p[1], bytes(16), 0, None, None, p[2], bytes(32), p[3]])


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200).map(lambda b: bytes(HASH_SIZE) + b)
    | envelopes.map(body)
    | plausible.map(body)
)
def test_any_stored_bytes_decode_to_a_record_or_a_store_error(value: bytes) -> None:
    try:
        record = decode_record(value, 1)
    except EventStoreError:
        return
    assert isinstance(record, RecordedEvent)
    assert isinstance(record.type, str) and isinstance(record.data, dict)


def test_tuple_key_in_a_payload_is_refused_before_it_reaches_the_log() -> None:
    async def main() -> None:
        async with open_event_store(log=MemoryEventLog()) as store:
            data = {"run_id": "r", "step_id": "s", "result": {(1, 2): "x"}, "duration": 0.1}
            with pytest.raises(EventEncodingError, match="would not decode"):
                await store.append("run-r", [NewEvent("StepCompleted", data)])
            assert store.head_position == 0

    trio.run(main)


@pytest.mark.parametrize(
    "unencodable",
    [
        pytest.param({"a": [1, {"b": object()}]}, id="object-deep-inside"),
        pytest.param({"big": 1 << 70}, id="int-over-64-bits"),
    ],
)
def test_a_payload_refused_half_way_leaves_nothing_in_the_threads_packer(
    unencodable: dict[str, Any],
) -> None:
    # The producer's packer is kept per thread and reused: what the refused payload had
    # packed before the bad value must not end up in front of the next payload.
    with pytest.raises(EventEncodingError):
        pack_data("StepCompleted", unencodable)
    fine = {"run_id": "r", "step_id": "s", "result": "x" * 300, "duration": 0.1}
    assert pack_data("StepCompleted", fine) == msgpack.packb(fine, use_bin_type=True)
