"""What only the PostgreSQL key store promises: several nodes (stores) on one database
agree on one key per owner even when they create it at the same moment, a forget
deletes the row, and a read-only open creates nothing. The conformance suite and the
two-store revalidation tests run over this backend too, in `test_keystore.py`.

Every test gets a fresh database of a real cluster (`postgres_url`); the races are real
threads released together by a barrier, and every assertion holds whichever wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from operator import methodcaller

import psycopg
import pytest

from events import (
    KeyStoreError,
    KeyStoreReadOnly,
    KeyStoreUnreachable,
    PostgresKeyStore,
    UserKey,
)
from events._keys import KeyRecord

ROUNDS = 20
# Bound on a barrier wait, so a broken race fails instead of hanging.
BARRIER_TIMEOUT_S = 20


@pytest.fixture
def nodes(postgres_url: str) -> Iterator[tuple[PostgresKeyStore, PostgresKeyStore]]:
    """Two stores on one database, as two server nodes hold them."""
    with ExitStack() as stack:
        pair = [PostgresKeyStore.open(postgres_url) for _ in range(2)]
        for store in pair:
            stack.callback(store.close)
        yield pair[0], pair[1]


def race(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore], call: Callable[[PostgresKeyStore], UserKey]
) -> tuple[UserKey, UserKey]:
    """`call` on both nodes at once, in two threads released together."""
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)

    def run(store: PostgresKeyStore) -> UserKey:
        barrier.wait()
        return call(store)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(run, nodes)
    return first, second


def rows(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT owner, key_id FROM autoagent_keys").fetchall())


def test_two_nodes_creating_a_users_key_at_once_agree_on_one(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore], postgres_url: str
) -> None:
    for n in range(ROUNDS):
        user = f"user{n}"
        a, b = race(nodes, methodcaller("current_or_create", user))
        assert a.key_id == b.key_id and a.secret == b.secret
        assert rows(postgres_url)[user] == a.key_id
        # Each node keeps using that one key, sealing what the other opens.
        assert nodes[1].current_or_create(user).open(a.seal(b"x", b"ctx"), b"ctx") == b"x"


def test_two_nodes_creating_a_sessions_key_at_once_agree_on_one(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore],
) -> None:
    for n in range(ROUNDS):
        session, principal = f"s{n}", f"ana{n}"
        a, b = race(nodes, methodcaller("session_key", session, principal, create=True))
        assert a.key_id == b.key_id and a.secret == b.secret
        assert nodes[0].current(principal) is not None
        ids = {store.current_or_create(principal).key_id for store in nodes}
        assert len(ids) == 1


def test_the_node_that_loses_the_race_uses_the_winners_key(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore],
) -> None:
    """Node B decided to create (it saw no key) just before node A's key landed: B's
    insert writes nothing and B returns A's key."""
    node_a, node_b = nodes
    winner = node_a.current_or_create("alice")
    adopted = node_b._create("alice", None)
    assert adopted.key_id == winner.key_id and adopted.secret == winner.secret
    session = node_a.session_key("s1", "alice", create=True)
    assert session is not None
    adopted_session = node_b._create("session:s1", node_b.current_or_create("alice"))
    assert adopted_session.secret == session.secret


def test_a_dead_record_is_replaced_only_while_it_is_unchanged(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore], postgres_url: str
) -> None:
    node_a, _ = nodes
    old = node_a.current_or_create("alice")
    other = KeyRecord("alice", "other-id", bytes(32))
    stored = node_a._save_new(other, replacing="not-the-stored-id")
    assert stored.key_id == old.key_id
    assert node_a._save_new(other, replacing=old.key_id).key_id == "other-id"
    assert rows(postgres_url) == {"alice": "other-id"}


def test_destroy_deletes_the_row(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore], postgres_url: str
) -> None:
    node_a, node_b = nodes
    key = node_a.current_or_create("alice")
    node_a.current_or_create("bob")
    assert node_b.destroy("alice") == key.key_id
    assert rows(postgres_url).keys() == {"bob"}
    assert node_b.destroy("alice") is None


def test_a_read_only_open_of_a_database_without_the_table_is_refused(postgres_url: str) -> None:
    with pytest.raises(KeyStoreError, match=r"no key store there \(no table autoagent_keys\)"):
        PostgresKeyStore.open(postgres_url, readonly=True)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('autoagent_keys')").fetchone() == (None,)


def test_a_read_only_store_reads_but_refuses_writes(postgres_url: str) -> None:
    with ExitStack() as stack:
        writer = PostgresKeyStore.open(postgres_url)
        stack.callback(writer.close)
        key = writer.current_or_create("alice")
        reader = PostgresKeyStore.open(postgres_url, readonly=True)
        stack.callback(reader.close)
        seen = reader.current("alice")
        assert seen is not None and seen.secret == key.secret
        with pytest.raises(KeyStoreReadOnly, match="read-only"):
            reader.current_or_create("bob")
        with pytest.raises(KeyStoreReadOnly, match="read-only"):
            reader.destroy("alice")


def test_an_unreachable_server_is_a_clear_error() -> None:
    url = "postgresql://nobody@/keys?host=/nonexistent-socket-dir"
    with pytest.raises(KeyStoreUnreachable, match="cannot open the key store at postgresql "):
        PostgresKeyStore.open(url, connect_timeout_s=1)


def test_a_damaged_row_is_a_clear_error(
    nodes: tuple[PostgresKeyStore, PostgresKeyStore], postgres_url: str
) -> None:
    nodes[0].current_or_create("alice")
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE autoagent_keys SET secret = 'short'::bytea")
    with pytest.raises(KeyStoreError, match="the key row of 'alice' is damaged"):
        nodes[1].current("alice")


def test_a_closed_store_refuses_calls(postgres_url: str) -> None:
    store = PostgresKeyStore.open(postgres_url)
    store.close()
    with pytest.raises(KeyStoreError, match="the key store is closed"):
        store.current("alice")
