"""What sdqueue keeps under SDQ_DATA_DIR is its owner's only: a 0700 directory, 0600 keys and AOF whatever the
umask, and a socket outside it only in a directory checked to be private (never a bare predictable /tmp path)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.embedded import EmbeddedRedis
from producer.errors import ConfigurationError
from producer.runtime import signing_secret
from producer.settings import CommonSettings
from producer.webhooks.keyring import server_secrets


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask (files 0644, directories 0755), for the duration of a test."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_the_embedded_redis_keeps_its_data_dir_0700_and_its_aof_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    with EmbeddedRedis(data) as server:
        client = redis.Redis.from_url(server.url)
        client.hset("sdq:apikey:x", "webhook_secret", "whsec_plain")  # what the AOF then holds in clear
        client.close()
    assert _mode(data) == 0o700
    written = [p for p in data.rglob("*") if "appendonly" in p.name]
    assert written, sorted(p.name for p in data.rglob("*"))
    for path in written:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    for path in written:  # as an older version left them
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with EmbeddedRedis(data):
        pass
    for path in written:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.usefixtures("loose_umask")
def test_generated_keys_are_0600_in_a_0700_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    assert signing_secret(CommonSettings(data_dir=data))
    assert server_secrets([], data)[0].startswith("whsec_")
    assert _mode(data) == 0o700
    assert _mode(data / "signing.key") == 0o600
    assert _mode(data / "webhook.key") == 0o600


def _deep(tmp_path: Path) -> Path:
    return tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)


def test_a_deep_data_dir_gets_its_socket_in_a_private_directory_of_its_own(tmp_path: Path) -> None:
    with EmbeddedRedis(_deep(tmp_path)) as server:
        assert server.socket.parent != server.data_dir
        assert _mode(server.socket.parent) == 0o700
        assert os.lstat(server.socket.parent).st_uid == os.geteuid()
        assert redis.Redis.from_url(server.url).ping()
    server.socket.parent.rmdir()


@pytest.mark.parametrize("planted", ["open to all", "a symlink", "another user's"])
def test_a_socket_directory_someone_planted_is_refused_not_trusted(tmp_path: Path, planted: str) -> None:
    server = EmbeddedRedis(_deep(tmp_path))
    where = server.socket.parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if planted == "a symlink":
        where.symlink_to(elsewhere)
    else:
        where.mkdir()
        os.chmod(where, 0o777 if planted == "open to all" else 0o700)
        if planted == "another user's":
            if os.geteuid() != 0:
                pytest.skip("needs root to make a directory owned by another user")
            os.chown(where, 65534, 65534)
    try:
        with pytest.raises(ConfigurationError, match=str(where)):
            server.start()
        assert not (elsewhere / "redis.sock").exists() and not (where / "redis.sock").exists()
    finally:
        where.unlink() if where.is_symlink() else where.rmdir()
