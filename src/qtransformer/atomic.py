"""Files: atomic writes (a crash never leaves a half-written checkpoint or dataset), an
exclusive lock on an output folder, and reads that name the file when it is corrupt."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout


class OutputLocked(RuntimeError):
    """Another process holds the lock of an output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM  # exists, but not ours
    return True


def _stale(path: Path) -> list[Path]:
    """Temporary folders of interrupted writes of ``path`` whose writer process is gone."""
    out = []
    for kind in ("tmp", "old"):
        for p in path.parent.glob(f".{path.name}.{kind}-*"):
            pid = p.name.rsplit("-", 2)[-2] if p.name.count("-") >= 2 else ""
            if not pid.isdigit() or not _alive(int(pid)):
                out.append(p)
    return out


def recover(path: str | Path) -> None:
    """Tidy after a write of ``path`` that was killed: put back the previous version if the
    kill fell between moving it aside and moving the new one in, and remove the temporary
    folders of writers that are no longer running."""
    path = Path(path)
    stale = _stale(path)
    if not path.exists():
        olds = sorted((p for p in stale if ".old-" in p.name), key=lambda p: p.stat().st_mtime)
        if olds:
            olds[-1].rename(path)
            stale.remove(olds[-1])
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def write_dir_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)`` then move ``tmp_dir`` to ``path``.

    A crash while writing leaves the previous contents of ``path`` untouched; the next write
    (or :func:`recover`) removes what the crash left. Temporary folders are named after the
    writing process, so a concurrent writer's are never taken for stale.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    old = path.parent / f".{path.name}.old-{tag}"
    tmp.mkdir()
    try:
        write(tmp)
        for f in sorted(tmp.rglob("*")):  # files in sub-folders too (a Minari dataset's data/)
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write a small file through a temporary one in the same folder, then rename it (and
    remove the temporary files of writers of it that were killed)."""
    recover(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


@contextlib.contextmanager
def locked(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock (``lock_file``, created if needed) for the ``with`` block; the
    operating system releases it when the process dies, so a killed run never leaves it held.

    Raises:
        OutputLocked: at once, naming ``what`` is locked, when another process holds it.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputLocked(
            f"{what} is in use by another process (lock {lock_file} is held); wait for it to "
            "finish or choose another output"
        ) from None
    try:
        yield
    finally:
        lock.release()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file and where the JSON breaks.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a text JSON file ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
