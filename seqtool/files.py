"""Writing files: the one place that creates, replaces or appends to a file a user keeps.

A new file is written to a temporary file beside it, flushed, fsynced and renamed over
it, so that readers (and a run killed meanwhile) see the old file or the new one, never
a part. Every failure to write (a full disk, a file too large, a missing or read-only
folder) becomes one OutputError naming the file, and the temporary file is removed.
A device or a pipe (/dev/null, /dev/stdout, a FIFO) is written to in place; any other
symbolic link is replaced like a file, never followed (_in_place).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from seqtool.errors import OutputError


def holds(path: str | os.PathLike, test: Callable[[Path], bool] = Path.exists) -> bool:
    """`test(path)` (Path.exists, Path.is_dir, ...), False for a name the system cannot
    look up at all (longer than it takes, a loop of links), where pathlib raises."""
    try:
        return test(Path(path))
    except OSError:
        return False


def is_stream(path: str | os.PathLike) -> bool:
    """Whether `path` is a pipe or a character device (`<(zcat x.gz)`, /dev/stdin): read
    once, from its start, with no size to know beforehand."""
    return holds(path, Path.is_fifo) or holds(path, Path.is_char_device)


# the longest file name most file systems take, in bytes
NAME_MAX = 255


def temporary(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: `.NAME.tmp`, with NAME
    cut where the whole would be longer than a file name may be (a name of 251 to 255
    bytes is the user's to choose)."""
    name = path.name
    while len(f".{name}.tmp".encode(errors="surrogateescape")) > NAME_MAX:
        name = name[:-1]
    return path.with_name(f".{name}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, what: str) -> Iterator[IO[bytes]]:
    """A binary file to write `path` through; it replaces `path` when the block ends
    without an error. `what` names the file in the error ("checkpoint", "plot")."""
    if not Path(path).name:  # "" or "/": nothing to rename into place
        raise OutputError(f"{os.fspath(path)!r} is not a file name; give the file for the {what}")
    path = Path(path)
    if _in_place(path):
        try:
            with path.open("wb") as f:
                yield f
        except OSError as err:
            raise _failed(path, what, err) from None
        return
    tmp = temporary(path)
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(err, OSError):
            raise
        kept = f"; the previous {what} is kept" if holds(path) else ""
        raise _failed(path, what, err, kept) from None


def _in_place(path: Path) -> bool:
    """Whether `path` is a device or a pipe (/dev/null, a FIFO) to write to, not a file to
    rename over: run as root, a rename would put a plain file in place of /dev/null. A
    link is followed only where /dev keeps its own (/dev/stdout, /dev/fd/N): one planted
    in a run directory must not send a checkpoint into a disk."""
    if holds(path, Path.is_symlink):  # /dev/stdout into a file (`> out.html`) too
        return path.absolute().is_relative_to("/dev")
    return holds(path) and not holds(path, Path.is_file)


def folder(path: str | os.PathLike, what: str) -> Path:
    """Make the folder `path` (and those above it) for `what`, unless it is there; a file
    of the user's where it belongs is kept and named in the error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            f"{path}: a file is in the way; seqtool keeps its {what} in a folder here "
            "(move the file away)"
        ) from None
    except OSError as err:
        raise _failed(path, what, err) from None
    return path


def write(path: str | os.PathLike, data: bytes, what: str) -> None:
    """Replace `path` with `data`, atomically."""
    with replacing(path, what) as f:
        f.write(data)


def append(path: str | os.PathLike, text: str, what: str) -> None:
    """Add `text` at the end of `path` (a log that grows line by line)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise _failed(Path(path), what, err) from None


def _failed(path: Path, what: str, err: OSError, kept: str = "") -> OutputError:
    """The one-line error of a failed write, with why: a missing folder, or the system's
    own words (a full disk, a file too large, a name too long)."""
    if isinstance(err, FileNotFoundError) and not holds(path.parent, Path.is_dir):
        reason = f"no folder {path.parent}"
    else:
        reason = err.strerror or str(err)
    return OutputError(f"{path}: could not write the {what} ({reason}){kept}")
