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
            await keeper.let_go("r1", run, ended=True)
        assert not run.cancelled_caught
        assert theirs.acquire("r1")  # given back: taken at once, no TTL to wait
        nursery.cancel_scope.cancel()
    assert keeper.lost == 0


async def test_a_run_stopped_unfinished_leaves_an_expired_lease_for_a_quick_takeover() -> None:
    table: dict[str, tuple[str, float]] = {}
    keeper = LeaseKeeper(MemoryRunLeases("a", TTL, table=table))
    other = MemoryRunLeases("b", TTL, table=table)
    with trio.CancelScope() as run:
        assert await keeper.hold("r1", run)
    await keeper.let_go("r1", run, ended=False)  # a shutdown: the run did not end
    assert other.expired() == ["r1"]  # found at b's next look, no TTL to wait
    assert other.acquire("r1")


async def test_one_node_holds_a_run_once_and_only_its_holder_ends_the_lease() -> None:
    table: dict[str, tuple[str, float]] = {}
    keeper = LeaseKeeper(MemoryRunLeases("a", TTL, table=table))
    other = MemoryRunLeases("b", TTL, table=table)
    first, second = trio.CancelScope(), trio.CancelScope()
    assert await keeper.hold("r1", first)
    assert not await keeper.hold("r1", second)  # a resume racing a takeover on one node
    await keeper.let_go("r1", second, ended=True)  # not its lease: nothing ends
    assert keeper.held() == ["r1"]
    assert not other.acquire("r1")
    await keeper.let_go("r1", first, ended=True)
    assert other.acquire("r1")


async def test_a_run_whose_lease_another_node_took_is_stopped(postgres_url: str) -> None:
    mine = await trio.to_thread.run_sync(lambda: PostgresRunLeases.open(postgres_url, "a", TTL))
    other = await trio.to_thread.run_sync(lambda: PostgresRunLeases.open(postgres_url, "b", TTL))
    keeper = LeaseKeeper(mine)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.keep)
            with trio.CancelScope() as run:
                assert await keeper.hold("r1", run)
                await trio.to_thread.run_sync(mine.release, "r1")  # as if it had lapsed ...
                assert await trio.to_thread.run_sync(other.acquire, "r1")  # ... and b took it
                await trio.sleep(TTL * 4)
            assert run.cancelled_caught
            assert keeper.held() == []
            assert keeper.lost == 1
            # The stop wrote nothing over b's lease.
            assert await trio.to_thread.run_sync(other.holder, "r1") == "b"
            nursery.cancel_scope.cancel()
    finally:
        mine.close()
        other.close()


async def test_leases_of_one_server_alone_never_stop_its_runs() -> None:
    """In-process leases (LMDB: one server per data dir): renewed inline, so a busy
    thread pool cannot delay them, and nobody else could take a run over."""
    keeper = LeaseKeeper(MemoryRunLeases("a", TTL))
    threads = trio.to_thread.current_default_thread_limiter()
    borrowers = [object() for _ in range(int(threads.total_tokens))]
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.keep)
        with trio.CancelScope() as run:
            assert await keeper.hold("r1", run)
            for borrower in borrowers:  # every worker thread busy with tools and reads
                threads.acquire_on_behalf_of_nowait(borrower)
            try:
                await trio.sleep(TTL * 3)
            finally:
                for borrower in borrowers:
                    threads.release_on_behalf_of(borrower)
        assert not run.cancelled_caught
        assert keeper.held() == ["r1"]
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
    the database still shows the lease live, so nobody else has started it yet. (The
    keeper stops at 0.8 TTL: with a TTL of 3 s the check below has 0.6 s to spare.)"""
    ttl = 3.0
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
    finally:
        watcher.close()
