"""The benchmark scripts' JSON-lines result files."""

from __future__ import annotations

import pytest

from qtransformer.bench.jsonl import append_jsonl, read_jsonl


def test_appended_records_read_back_in_order(tmp_path) -> None:
    path = tmp_path / "results" / "r.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2, "b": [1.5]})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2, "b": [1.5]}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.jsonl"]  # no temporary left


def test_a_file_without_its_last_newline_keeps_its_records(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}')
    append_jsonl(path, {"a": 2})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("line, problem", [('{"a": 1', "not a JSON record"), ("[1]", "object")])
def test_a_bad_line_names_the_file_and_the_line(tmp_path, line, problem) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"r\.jsonl, line 2: .*{problem}"):
        read_jsonl(path)
