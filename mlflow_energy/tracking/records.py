"""Whole records in a JSONL file that several processes share: locked, fsync'ed appends.

Every sweep worker started in one directory writes the same journal, so an append holds an
exclusive ``flock`` on the file for its whole write: one writer at a time, and a writer never
sees another's record half written. Under that lock a last line without its newline is either a
complete record (its newline is added) or a record torn by a crash (cut, so the next record does
not glue onto it). :func:`file_lock` is the same lock, for rewriting a file (moving a bad line
aside) while no one appends to it.

This is the lowest module of the journal's line (``records`` -> ``jsonl`` -> ``journal`` ->
``replay``); it imports nothing of ``tracking``.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "r.jsonl")
    >>> append_lines(path, ['{"a": 1}'])
    >>> open(path).read()
    '{"a": 1}\\n'
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator

from mlflow_energy.errors import ConfigError, MlflowEnergyError

__all__ = ["JournalUnwritable", "append_lines", "check_writable", "file_lock"]


class JournalUnwritable(MlflowEnergyError):
    """The journal (or its ``.logged`` side file) could not be written: disk full, read-only, gone."""


def check_writable(path: str | os.PathLike[str], field: str = "output") -> str:
    """Check that a file can be appended to at ``path`` (its directory is created); return the path.

    Called before anything is measured, so that a bad ``--output``/``--journal`` costs no GPU time.

    Raises:
        ConfigError: naming ``field``: ``path`` is a directory, under a file, or not writable.

    Example:
        >>> check_writable("/etc/passwd/x.jsonl")
        Traceback (most recent call last):
        ...
        mlflow_energy.errors.ConfigError: output='/etc/passwd/x.jsonl' is not allowed: expected a writable file path (a parent is not a directory)
    """
    path = os.fspath(path)
    if not path or path.endswith(os.sep):
        raise ConfigError(field, path, "a file path")
    if os.path.isdir(path):
        raise ConfigError(field, path, "a .jsonl file path, not a directory")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise ConfigError(field, path, "a writable file path (a parent is not a directory)")
    try:
        os.makedirs(parent, exist_ok=True)
        _probe(path)
    except OSError as exc:
        raise ConfigError(field, path, f"a writable file path ({exc.strerror or type(exc).__name__})") from None
    return path


def _probe(path: str) -> None:
    """Open ``path`` for appending; a file made only for this is removed again (its first record makes it).

    Another process may append to the new file meanwhile (workers starting together): it is
    removed only while it is still empty, under the append lock, so no record goes with it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with open(path, "a", encoding="utf-8"):
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_size == 0 and os.path.samestat(os.fstat(fd), os.stat(path)):
                os.remove(path)  # an appender waiting on this lock sees it gone and makes the file anew
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a nearly full disk writes short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - the kernel raises ENOSPC rather than writing 0 bytes
            raise OSError(28, "No space left on device")
        view = view[n:]


def _fsync_dir(path: str) -> None:
    """fsync the directory of ``path``, so that a newly created file's name survives a crash."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the data itself is synced
        pass
    finally:
        os.close(fd)


def _open_locked(path: str, flags: int) -> int:
    """Open ``path`` and hold an exclusive ``flock`` on it; the file at ``path`` when the lock is taken.

    A writer that opened the file just before another process replaced it (a bad line moved
    aside) would append to the old, unlinked file: after the lock it checks and opens again.
    """
    while True:
        fd = os.open(path, flags, 0o644)
        if not _is_regular(fd):
            return fd  # a device (/dev/full): nothing to lock, nothing to fence
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # replaced meanwhile: lock the file that is there now


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[int | None]:
    """Hold the append lock of ``path`` (no process appends meanwhile); yields its fd, None if absent."""
    try:
        fd = _open_locked(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _fence_tail(fd: int) -> None:
    """Deal with a last line left without its newline (called under the append lock).

    A complete record (a JSON object) only lacks its newline: it is kept and terminated. Anything
    else was torn by a crash mid-write (it never was a whole record): it is cut, since appending
    after it would glue the next record onto it and make a line that is valid JSON neither for the
    torn record nor for the new one.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail_start, pos, block = 0, size, 65536
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            tail_start = start + i + 1
            break
        pos = start
    tail = os.pread(fd, size - tail_start, tail_start)
    try:
        whole = isinstance(json.loads(tail.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        whole = False
    if whole:
        _write_all(fd, b"\n")  # O_APPEND: lands at the end
    else:
        os.ftruncate(fd, tail_start)


def append_lines(path: str, lines: Iterable[str]) -> None:
    """Append whole lines under the file's exclusive lock and fsync them (the directory too when new).

    A last line without its newline is terminated (a complete record) or cut (a torn one) first;
    every byte is written (short writes are continued).

    Raises:
        JournalUnwritable: one line, naming the file and the reason (disk full, read-only, ...).
    """
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    try:
        created = not os.path.exists(path)
        fd = _open_locked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            if _is_regular(fd):
                _fence_tail(fd)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path)
    except OSError as exc:
        raise JournalUnwritable(f"could not write the journal file {path}: "
                                f"{exc.strerror or type(exc).__name__}") from None
