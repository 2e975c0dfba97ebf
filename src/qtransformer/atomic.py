"""Atomic writes: a crash never leaves a half-written checkpoint or dataset."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def write_dir_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)`` then move ``tmp_dir`` to ``path``.

    A crash while writing leaves the previous contents of ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
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
