"""Conformance of the run leases stores: the same cases on the in-process store and on
PostgreSQL (a real `pgserver` cluster), two nodes each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from server.leases import Lease, MemoryRunLeases, PostgresRunLeases, RunLeases

TTL = 0.5  # seconds; the PostgreSQL cases really wait it out


@dataclass
class TwoNodes:
    a: RunLeases
    b: RunLeases
    advance: Callable[[float], None]  # let this much time pass for the store's clock
    make: Callable[[str], RunLeases]  # one more node on the same table


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", "postgres"])
def nodes(request: pytest.FixtureRequest) -> Iterator[TwoNodes]:
    opened: list[RunLeases] = []
    if request.param == "memory":
        table: dict[str, tuple[str, float]] = {}
        clock = FakeClock()

        def make(node: str) -> RunLeases:
            return MemoryRunLeases(node, TTL, table=table, clock=clock)

        advance = clock.advance
    else:
        url = request.getfixturevalue("postgres_url")

        def make(node: str) -> RunLeases:
            leases = PostgresRunLeases.open(url, node, TTL)
            opened.append(leases)
            return leases

        advance = time.sleep
    try:
        yield TwoNodes(make("node-a"), make("node-b"), advance, make)
    finally:
        for leases in opened:
            leases.close()


def test_a_free_run_is_taken_and_then_held_against_others(nodes: TwoNodes) -> None:
    assert nodes.a.acquire("r1")
    assert not nodes.b.acquire("r1")
    assert nodes.a.acquire("r1")  # its own: taken again (a restarted node)
    assert nodes.a.holder("r1") == "node-a"
    assert nodes.b.holder("r1") == "node-a"
    assert nodes.a.holder("r2") is None


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew_it(
    nodes: TwoNodes,
) -> None:
    assert nodes.a.acquire("r1")
    nodes.advance(TTL * 1.5)
    assert nodes.b.expired() == ["r1"]
    assert nodes.a.holder("r1") is None
    assert nodes.b.acquire("r1")
    assert nodes.a.renew(["r1"]) == set()
    assert not nodes.a.acquire("r1")
    assert nodes.b.holder("r1") == "node-b"
    assert nodes.b.expired() == []


def test_renewing_keeps_a_lease_past_its_first_ttl(nodes: TwoNodes) -> None:
    assert nodes.a.acquire("r1")
    assert nodes.a.acquire("r2")
    for _ in range(3):
        nodes.advance(TTL * 0.4)  # renewed with 0.3 s to spare on a busy machine
        assert nodes.a.renew(["r1", "r2", "unknown"]) == {"r1", "r2"}
    assert not nodes.b.acquire("r1")
    assert nodes.b.expired() == []
    assert nodes.b.renew(["r1"]) == set()  # not its lease: renewing takes nothing


def test_release_frees_the_run_at_once_and_only_its_holder_may_release(nodes: TwoNodes) -> None:
    assert nodes.a.acquire("r1")
    nodes.b.release("r1")  # not b's: kept
    assert nodes.a.holder("r1") == "node-a"
    nodes.a.release("r1")
    assert nodes.a.holder("r1") is None
    assert nodes.a.leases() == []
    assert nodes.b.acquire("r1")
    nodes.a.release("never-leased")  # harmless


def test_leases_lists_every_row_with_its_expiry(nodes: TwoNodes) -> None:
    assert nodes.a.acquire("r1")
    nodes.advance(TTL * 1.5)
    assert nodes.b.acquire("r2")
    assert nodes.a.leases() == [Lease("r1", "node-a", True), Lease("r2", "node-b", False)]


def test_racing_nodes_take_an_expired_lease_exactly_once(nodes: TwoNodes) -> None:
    runs = [f"run-{i}" for i in range(20)]
    for run in runs:
        assert nodes.a.acquire(run)
    nodes.advance(TTL * 1.5)
    contenders = [nodes.make(f"node-{i}") for i in range(4)]
    won: dict[str, list[str]] = {run: [] for run in runs}
    lock = threading.Lock()

    def contend(leases: RunLeases) -> None:
        for run in runs:
            if leases.acquire(run):
                with lock:
                    won[run].append(leases.node_id)

    threads = [threading.Thread(target=contend, args=(c,)) for c in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(winners) == 1 for winners in won.values()), won
    assert {lease.node_id for lease in nodes.a.leases()} <= {c.node_id for c in contenders}


def test_a_lease_needs_a_node_and_a_positive_ttl() -> None:
    with pytest.raises(ValueError, match="node id"):
        MemoryRunLeases("", 1.0)
    with pytest.raises(ValueError, match="TTL"):
        MemoryRunLeases("n", 0)


def test_nodes_starting_at_once_on_a_fresh_database_all_open_the_table(
    postgres_url: str,
) -> None:
    """The table is created once, whoever comes first (a bare CREATE ... IF NOT EXISTS
    can collide in PostgreSQL's catalog when two sessions run it at once)."""
    barrier = threading.Barrier(8, timeout=20)
    opened: list[RunLeases] = []
    failed: list[BaseException] = []

    def start(index: int) -> None:
        barrier.wait()
        try:
            opened.append(PostgresRunLeases.open(postgres_url, f"node-{index}", TTL))
        except BaseException as exc:  # collected, asserted below
            failed.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failed == []
        assert opened[0].acquire("r1")
    finally:
        for leases in opened:
            leases.close()
