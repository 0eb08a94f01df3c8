"""The store's ``oauth_tokens`` table: one record per server, written by the gateway (async) and by
``portero login`` (another process, synchronous), with a stamp that changes on every write."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import trio

from portero.store import SCHEMA_VERSION, Store

SECRET = "at-very-secret-value"


async def test_write_read_delete(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    try:
        assert await store.oauth_tokens("linear") is None
        assert await store.oauth_tokens_stamp("linear") is None
        stamp = await store.save_oauth_tokens("linear", '{"access_token": "a1"}')
        found = await store.oauth_tokens("linear")
        assert found == ('{"access_token": "a1"}', stamp)
        assert await store.oauth_tokens_stamp("linear") == stamp
        # Another server's record is its own.
        await store.save_oauth_tokens("notion", '{"access_token": "n1"}')
        stamp2 = await store.save_oauth_tokens("linear", '{"access_token": "a2"}')
        assert stamp2 != stamp and stamp2[0] > stamp[0]
        assert (await store.oauth_tokens("linear")) == ('{"access_token": "a2"}', stamp2)
        assert await store.delete_oauth_tokens("linear") is True
        assert await store.delete_oauth_tokens("linear") is False
        assert await store.oauth_tokens("linear") is None
        assert (await store.oauth_tokens("notion")) is not None
        # Never the values in the store's repr.
        assert "n1" not in repr(store)
    finally:
        await store.aclose()


async def test_other_process_write_is_seen_by_the_open_store(tmp_path: Path) -> None:
    """``portero login`` writes through its own connection while the gateway has the store open."""
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    try:
        before = await store.oauth_tokens_stamp("linear")
        stamp = await trio.to_thread.run_sync(Store.save_oauth_tokens_in_file, path, "linear", f'"{SECRET}"')
        assert before is None
        assert await store.oauth_tokens_stamp("linear") == stamp
        assert Store.oauth_tokens_in_file(path, "linear") == (f'"{SECRET}"', stamp)
        assert Store.delete_oauth_tokens_in_file(path, "linear") is True
        assert await store.oauth_tokens_stamp("linear") is None
    finally:
        await store.aclose()


def test_login_before_the_gateway_ever_ran_creates_a_private_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = str(data_dir / "gateway.db")
    assert Store.oauth_tokens_in_file(path, "x") is None
    assert Store.delete_oauth_tokens_in_file(path, "x") is False
    assert not os.path.exists(path)  # reading or deleting nothing creates nothing
    Store.save_oauth_tokens_in_file(path, "linear", "{}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    conn = sqlite3.connect(path)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        assert version == SCHEMA_VERSION
        assert conn.execute("SELECT server FROM oauth_tokens").fetchall() == [("linear",)]
    finally:
        conn.close()


async def test_logout_then_login_gives_a_new_stamp(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    first = Store.save_oauth_tokens_in_file(path, "linear", "{}")
    Store.delete_oauth_tokens_in_file(path, "linear")
    await trio.sleep(0.002)  # the wall-clock half of the stamp moves on
    second = Store.save_oauth_tokens_in_file(path, "linear", "{}")
    assert second != first


async def test_the_gateway_opens_a_database_written_by_login_first(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    stamp = Store.save_oauth_tokens_in_file(path, "linear", '{"a": 1}')
    store = await Store.open(path)
    try:
        assert await store.oauth_tokens("linear") == ('{"a": 1}', stamp)
        assert await store.recent_events(1) == []  # the rest of the schema is there too
    finally:
        await store.aclose()
