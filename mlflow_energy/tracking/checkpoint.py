"""How far a journal is known to be logged, so that looking for its pending records reads only what
was appended since.

A worker's journal keeps every measurement it ever made, and each sweep looks for pending records
at its start and its end: read whole, 10,000 records (about 2 KB each) cost 0.6 s per look, and the
cost grows with the journal. ``<journal>.checkpoint`` holds a byte offset of the journal such that
every record before it is logged (its key is in ``<journal>.logged``, which only grows), with the
length and digest of the whole line that ends there and the ledger's size when that was checked.

A checkpoint is only a shortcut: one that does not match the journal (the line before its offset
differs: the journal was rewritten without a bad line, replaced or truncated) or whose ledger has
shrunk (removed by hand) is ignored, and the journal is read whole. Any process may write one
(each is true when written); a checkpoint that cannot be written is skipped.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "journal.jsonl")
    >>> with open(path, "wb") as fh:
    ...     _ = fh.write(b'{"a": 1}\\n{"b": 2}\\n')
    >>> write(path, 18, line_bytes=9, ledger_size=0)
    >>> read(path)
    18
    >>> with open(path, "wb") as fh:  # rewritten: the line before the offset differs
    ...     _ = fh.write(b'{"a": 1}\\n{"c": 3}\\n')
    >>> read(path)
    0
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import BinaryIO

__all__ = ["drop", "ledger_size", "read", "write"]


def _path(journal: str) -> str:
    return journal + ".checkpoint"


def ledger_size(journal: str) -> int:
    """The size in bytes of ``<journal>.logged`` (0 when there is none): what a checkpoint is checked against."""
    try:
        return os.path.getsize(journal + ".logged")
    except OSError:
        return 0


def _line_before(fh: BinaryIO, offset: int, length: int) -> bytes | None:
    """The ``length`` bytes before ``offset`` when they are one whole line (a newline before them or
    the file's start, one at their end), else None."""
    start = offset - length
    if start < 0:
        return None
    fh.seek(max(0, start - 1))
    data = fh.read(offset - max(0, start - 1))
    if start > 0:
        if data[:1] != b"\n":
            return None
        data = data[1:]
    return data if len(data) == length and data.endswith(b"\n") and data.count(b"\n") == 1 else None


def read(journal: str) -> int:
    """The byte offset of ``journal`` before which every record is logged; 0 when there is no
    checkpoint or it does not match the journal and its ledger."""
    try:
        with open(_path(journal), encoding="utf-8") as fh:
            cp = json.load(fh)
        offset = int(cp["offset"])
        if offset <= 0 or ledger_size(journal) < int(cp["ledger_size"]):
            return 0
        with open(journal, "rb") as fh:
            line = _line_before(fh, offset, int(cp["line_bytes"]))
        if line is None or hashlib.sha256(line).hexdigest() != cp["line_sha256"]:
            return 0
        return offset
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def write(journal: str, offset: int, *, line_bytes: int, ledger_size: int) -> None:
    """Record that every record of ``journal`` before byte ``offset`` is logged, checked against a
    ledger of ``ledger_size`` bytes; ``offset`` ends a line of ``line_bytes`` bytes. Best effort:
    a failure is skipped."""
    tmp = f"{_path(journal)}.{os.getpid()}.tmp"
    try:
        with open(journal, "rb") as fh:
            line = _line_before(fh, offset, line_bytes)
        if line is None:
            return
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump({"offset": offset, "line_bytes": line_bytes, "line_sha256": hashlib.sha256(line).hexdigest(),
                       "ledger_size": ledger_size}, out)
        os.replace(tmp, _path(journal))
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def drop(journal: str) -> None:
    """Forget the checkpoint (the journal is being rewritten)."""
    with contextlib.suppress(OSError):
        os.remove(_path(journal))
