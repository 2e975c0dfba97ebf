"""The benchmark scripts' result files: one JSON record per line, appended as runs finish,
so a script resumes from what is already there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qtransformer.atomic import write_text_atomically


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of ``path`` in order; empty when the file does not exist. A line that is
    not a JSON object is an error naming the file and the line."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {number}: not a JSON record ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: a record must be a JSON object")
        records.append(record)
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Add ``record`` as the last line of ``path``. The file is rewritten through a temporary
    one and renamed, so a killed run leaves the old file or the new one, never half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomically(path, old + json.dumps(record, default=str) + "\n")
