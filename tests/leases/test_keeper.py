"""`LeaseKeeper`: renews what its node runs, and stops a run whose lease is lost or
cannot be renewed before anyone else may take it."""

from __future__ import annotations

import trio

from server.leases import LeaseKeeper, MemoryRunLeases, PostgresRunLeases

# Real time: the keeper's renewals go through worker threads, during which a mock
# clock that jumps when Trio is idle would skip past every deadline.
TTL = 0.6


async def test_a_held_run_is_renewed_so_no_other_node_can_take_it() -> None:
    table: dict[str, tuple[str, float]] = {}
    mine = MemoryRunLeases("a", TTL, table=table)
    theirs = MemoryRunLeases("b", TTL, table=table)
    keeper = LeaseKeeper(mine)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.keep)
        with trio.CancelScope() as run:
            assert await keeper.hold("r1", run)
            await trio.sleep(TTL * 4)
            assert not theirs.acquire("r1")
            assert theirs.expired() == []
            await keeper.let_go("r1")
        assert not run.cancelled_caught
        assert theirs.acquire("r1")  # given back: taken at once, no TTL to wait
        nursery.cancel_scope.cancel()
    assert keeper.lost == 0


async def test_a_run_whose_lease_another_node_took_is_stopped() -> None:
    table: dict[str, tuple[str, float]] = {}
    keeper = LeaseKeeper(MemoryRunLeases("a", TTL, table=table))
    other = MemoryRunLeases("b", TTL, table=table)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.keep)
        with trio.CancelScope() as run:
            assert await keeper.hold("r1", run)
            del table["r1"]  # as if the lease had lapsed and ...
            assert other.acquire("r1")  # ... node b had taken it over
            await trio.sleep(TTL * 4)
        assert run.cancelled_caught
        assert keeper.held() == []
        assert keeper.lost == 1
        assert other.holder("r1") == "b"  # the stop wrote nothing over b's lease
        nursery.cancel_scope.cancel()


async def test_a_run_is_not_started_where_another_node_holds_it() -> None:
    table: dict[str, tuple[str, float]] = {}
    assert MemoryRunLeases("b", TTL, table=table).acquire("r1")
    keeper = LeaseKeeper(MemoryRunLeases("a", TTL, table=table))
    with trio.CancelScope() as run:
        assert not await keeper.hold("r1", run)
    assert keeper.held() == []


async def test_a_run_stops_before_its_lease_can_lapse_when_renewal_fails(
    postgres_url: str,
) -> None:
    """The table stops answering (its pool closed: every call now fails as an
    unreachable server would): the run is stopped by the keeper's own deadline, while
    the database still shows the lease live, so nobody else has started it yet."""
    ttl = 1.0
    leases = await trio.to_thread.run_sync(lambda: PostgresRunLeases.open(postgres_url, "a", ttl))
    watcher = await trio.to_thread.run_sync(lambda: PostgresRunLeases.open(postgres_url, "b", ttl))
    keeper = LeaseKeeper(leases)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.keep)
            with trio.CancelScope() as run:
                assert await keeper.hold("r1", run)
                leases.close()
                await trio.sleep(ttl * 5)
            assert run.cancelled_caught
            assert keeper.lost == 1
            nursery.cancel_scope.cancel()
        # Stopped while the lease still stands: nobody could have taken the run yet.
        assert await trio.to_thread.run_sync(watcher.holder, "r1") == "a"
        await trio.sleep(ttl)
        assert await trio.to_thread.run_sync(watcher.acquire, "r1")  # now b may take it
    finally:
        watcher.close()
