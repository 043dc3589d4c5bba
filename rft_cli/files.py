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

The one reader of a whole file the user names is `read_text` (and `read_yaml`, `read_json` on it):
every failure (missing, not a regular file, too big, not UTF-8, bad syntax, nested too deeply)
becomes the caller's `RftError` class with one message per kind, naming the file and what it is:

    data = read_yaml(path, "the grader file", GraderError)
    # g.yaml line 3: not valid YAML (expected ',' or ']'); fix the syntax
"""

from __future__ import annotations

import errno
import functools
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from rft_cli.errors import ConfigError, RftError

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
            f"it is over {size_text(limit)}, more than rft reads of such a file",
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


def read_text(
    path: str | Path,
    what: str,
    error: type[RftError] = ConfigError,
    limit: int | None = MAX_TEXT_BYTES,
) -> str:
    """The UTF-8 text of a file the user named (a BOM dropped); `error` when it cannot be read.

    `what` says what the file should be ("the grader file"); the message names the file and why.
    """
    try:
        data = read_capped(path, limit)
    except FileNotFoundError:
        raise error(f"{path}: cannot read {what} (file not found)") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except ValueError as exc:  # a NUL byte in the name
        raise error(f"{path}: cannot read {what} ({exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: {what} is not valid UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None


def read_yaml(path: str | Path, what: str, error: type[RftError] = ConfigError) -> Any:
    """The YAML document in a file the user named (`yaml_safe`: plain values only); `error` when
    it cannot be read or parsed, with the line of a syntax error."""
    return parse_yaml(read_text(path, what, error), str(path), error)


def parse_yaml(text: str, where: str, error: type[RftError] = ConfigError) -> Any:
    """The YAML document in `text`, read from `where`; `error` with the line of a syntax error."""
    import yaml

    from rft_cli import yaml_safe

    try:
        return yaml_safe.load(text)
    except (RecursionError, yaml_safe.RefusedNesting):
        raise error(f"{where}: {_TOO_DEEP}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}{line}: not valid YAML ({problem}); fix the syntax") from None


def read_json(
    path: str | Path,
    what: str,
    error: type[RftError] = ConfigError,
    limit: int | None = MAX_TEXT_BYTES,
    hint: str = "",
) -> Any:
    """The JSON value in a file the user named; `error` when it cannot be read or parsed (`hint`,
    when given, is the fix the message suggests)."""
    return parse_json(read_text(path, what, error, limit), str(path), error, hint)


def parse_json(text: str, where: str, error: type[RftError] = ConfigError, hint: str = "") -> Any:
    """The JSON value in `text`, read from `where`; `error` naming the place of a syntax error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{where}: {_TOO_DEEP}") from None
    except ValueError as exc:
        raise error(f"{where}: not valid JSON ({exc}){'; ' + hint if hint else ''}") from None


_TOO_DEEP = (
    "nested too deeply for the parser (over a hundred levels of lists or mappings); flatten it"
)
