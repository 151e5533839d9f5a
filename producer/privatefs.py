"""Private files and directories: what sdqueue keeps under `SDQ_DATA_DIR` (keys, the embedded Redis' AOF, which
holds every API key record and webhook secret) is readable by its owner only, whatever the umask.

A directory another user could have made (anything in a world-writable place such as /tmp) is used only after
checking that it is a real directory, owned by this user and closed to everyone else; otherwise it is refused
rather than trusted, since whoever owns it could read or replace what is put there.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class UnsafePathError(OSError):
    """A directory sdqueue must keep private is owned by someone else, open to others, or not a directory."""


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as a 0700 directory, or tighten an existing one of ours to 0700.

    Raises `UnsafePathError` when it exists but is a symlink, not a directory, or owned by another user."""
    with contextlib.suppress(FileExistsError):  # `exist_ok` covers directories only: a file in the way is told below
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} must be a directory, not a link or a file")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def verified_private_dir(path: Path) -> Path:
    """`path` as a 0700 directory of this user, created if missing; an existing one is used only if it already is
    one (never tightened: in a shared place, someone may have used it while it was open). Raises
    `UnsafePathError` otherwise."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_DIR_MODE)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} must be a directory, not a link or a file; remove it")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{path} belongs to uid {info.st_uid}, not to this user; remove it")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        raise UnsafePathError(f"{path} has mode {stat.S_IMODE(info.st_mode):o}, not 700; remove it")
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only (mode 0600 from the first byte)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # a stale tmp file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def tighten_files(directory: Path, names: tuple[str, ...]) -> None:
    """Make the named entries of `directory` (files, or directories and everything in them) owner-only: files
    written before sdqueue set these modes itself."""
    for name in names:
        top = directory / name
        if top.is_symlink() or not top.exists():
            continue
        entries = [top, *top.rglob("*")] if top.is_dir() else [top]
        for entry in entries:
            if entry.is_symlink():
                continue
            os.chmod(entry, PRIVATE_DIR_MODE if entry.is_dir() else PRIVATE_FILE_MODE)
