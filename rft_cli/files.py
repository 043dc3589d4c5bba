"""Opening the files a user names: regular files only, read with byte caps.

A FIFO blocks the reader until something writes to it, and `/dev/zero` never ends, so every file
rft reads on a user's say-so goes through `open_regular`: it opens without blocking, then refuses
anything but a regular file. The checks run on the open file (`fstat`), so a file that is swapped
or removed after a check cannot slip past it; a missing file is the usual `FileNotFoundError`.
The refusals are `OSError`s with a `strerror` that says what to do, so every caller's existing
`cannot read ... (<strerror>)` message covers them.

Caps: a whole file read into memory (a run config, a grader, a sample) holds at most
`MAX_TEXT_BYTES`; a JSONL line at most `MAX_LINE_BYTES` (`split_lines` reads a longer one in pieces
and hands back a `LineTooLong` in its place, so it is never held whole).
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

MAX_TEXT_BYTES = 16 << 20
MAX_LINE_BYTES = 8 << 20
_PIECE = 1 << 20


class LineTooLong:
    """`split_lines`' stand-in for a line over the cap: only its size in bytes is kept."""

    def __init__(self, size: int) -> None:
        self.size = size


def size_text(size: int) -> str:
    """A byte count as people read it: "16 MiB", or "1,000 bytes" when it is no whole MiB."""
    return f"{size >> 20} MiB" if size and size % (1 << 20) == 0 else f"{size:,} bytes"


def is_file(path: str | Path) -> bool:
    """`Path.is_file()`, but False (not OSError) for a name too long or a NUL in it."""
    return _is(path, stat.S_ISREG)


def is_dir(path: str | Path) -> bool:
    """`Path.is_dir()`, but False (not OSError) for a name too long or a NUL in it."""
    return _is(path, stat.S_ISDIR)


def exists(path: str | Path) -> bool:
    """`Path.exists()`, but False (not OSError) for a name too long or a NUL in it."""
    return _is(path, lambda mode: True)


def _is(path: str | Path, kind: Callable[[int], bool]) -> bool:
    try:
        return kind(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading; OSError when it is not a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
            raise OSError(
                errno.EINVAL,
                f"it is {kind}, not a regular file; give the path of a file",
                str(path),
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str | Path, limit: int | None = MAX_TEXT_BYTES) -> bytes:
    """The whole of a regular file of at most `limit` bytes (None: any size); OSError otherwise."""
    with open_regular(path) as handle:
        data = handle.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(
            errno.EFBIG,
            f"it is over {limit >> 20} MiB, more than rft reads of such a file",
            str(path),
        )
    return data


def split_lines(handle: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | LineTooLong]:
    """The lines of a binary file, split on b"\\n" only (JSON strings may hold U+2028 or U+0085
    raw, which `str.splitlines` splits on); a line over `limit` bytes comes as a LineTooLong."""
    for line in iter(functools.partial(handle.readline, limit + 1), b""):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while line and not line.endswith(b"\n"):  # read the rest in pieces, never whole
            line = handle.readline(_PIECE)
            size += len(line)
        yield LineTooLong(size)
