"""The embedded default: one shared, persistent redis-server per data directory, stopped only when unused."""

from __future__ import annotations

from pathlib import Path

import redis

from producer.embedded import EmbeddedRedis


def test_started_once_shared_and_persistent(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    assert first.start() == second.start()  # the second process finds the first one's server
    client = redis.Redis.from_url(first.url)
    client.set("job", "kept")
    first.stop()  # the starter leaves first: a client is still connected, so it keeps running
    assert client.get("job") == b"kept"
    client.close()
    second.stop()  # the last one out shuts it down
    assert not EmbeddedRedis(tmp_path)._alive()

    with EmbeddedRedis(tmp_path) as again:  # append-only persistence survives the restart
        client = redis.Redis.from_url(again.url)
        assert client.get("job") == b"kept"
        client.close()


def test_the_owner_leaves_it_running_while_others_are_connected(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path)
    other = redis.Redis.from_url(owner.start())
    other.ping()
    owner.stop()
    assert other.ping()  # still serving the other client
    other.shutdown()


def test_a_deep_data_dir_still_gets_a_usable_socket(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    with EmbeddedRedis(deep) as server:
        assert len(str(server.socket)) <= 100
        assert redis.Redis.from_url(server.url).ping()


def test_a_user_without_a_connection_yet_keeps_it_running(tmp_path: Path) -> None:
    # `sdq api` starts the server, then opens connections lazily: a short `sdq keys list` run meanwhile must not
    # mistake itself for the last user.
    api, command = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    url = api.start()
    command.start()
    command.stop()
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()
    api.stop()
    assert not api.socket.exists()


def test_a_crashed_user_does_not_keep_it_running(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import os, sys; from pathlib import Path; from producer.embedded import EmbeddedRedis;"
        f"EmbeddedRedis(Path({str(tmp_path)!r})).start(); os._exit(0)"  # exits without stop(): its flock goes
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    last = EmbeddedRedis(tmp_path)
    last.start()
    last.stop()
    assert not last.socket.exists()
