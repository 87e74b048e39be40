"""`toolken.tools.io`: the one JSON / JSON Lines / gzip reader — every shape of file, plain and
gzipped, and errors that name the file and line, raised as the caller's error class."""
from __future__ import annotations

import gzip
import json

import pytest

from toolken.errors import DataError, ToolSpecError
from toolken.tools import iter_json_lines, load_json_document, load_json_records

RECORDS = [{"a": 1}, {"b": [2, 3]}, "text", None]


def _write(path, text: str) -> None:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".json.gz", ".jsonl.gz"])
def test_every_shape_plain_and_gzipped(tmp_path, suffix):
    array, lines, one = tmp_path / f"array{suffix}", tmp_path / f"lines{suffix}", tmp_path / f"one{suffix}"
    _write(array, json.dumps(RECORDS, indent=2))
    _write(lines, "\n".join(json.dumps(r) for r in RECORDS[:2]) + "\n\n  \n" + json.dumps(RECORDS[2]) + "\nnull\n")
    _write(one, json.dumps({"tools": []}))
    assert load_json_records(array) == RECORDS
    assert load_json_records(str(lines)) == RECORDS
    assert load_json_records(one) == [{"tools": []}]
    assert load_json_document(array) == RECORDS and load_json_document(one) == {"tools": []}
    assert list(iter_json_lines(lines)) == [(1, RECORDS[0]), (2, RECORDS[1]), (5, RECORDS[2]), (6, None)]


def test_unicode_is_read_as_utf8(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(json.dumps({"name": "天气查询"}, ensure_ascii=False).encode("utf-8") + b"\n")
    assert load_json_records(path) == [{"name": "天气查询"}]


@pytest.mark.parametrize("error", [ToolSpecError, DataError])
def test_errors_name_the_file_and_line_in_the_callers_class(tmp_path, error):
    what = "tool file" if error is ToolSpecError else "data file"
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"a": 1}\n\n{oops\n')
    with pytest.raises(error, match=r"bad\.jsonl: line 3 is not valid JSON"):
        load_json_records(bad_line, error=error)
    with pytest.raises(error, match=r"bad\.jsonl: line 3 is not valid JSON"):
        list(iter_json_lines(bad_line, error=error))
    with pytest.raises(error, match=r"bad\.jsonl: not valid JSON"):
        load_json_document(bad_line, error=error)
    missing = tmp_path / "missing.json"
    for read in (load_json_records, load_json_document, lambda p, error: list(iter_json_lines(p, error=error))):
        with pytest.raises(error, match=rf"cannot read {what} .*missing\.json"):
            read(missing, error=error)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(error, match=rf"cannot read {what} .*corrupt\.jsonl\.gz"):
        load_json_records(corrupt, error=error)
    with pytest.raises(error, match=rf"cannot read {what} .*corrupt\.jsonl\.gz"):
        list(iter_json_lines(corrupt, error=error))
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(error, match=rf"cannot read {what} .*latin1\.json"):
        load_json_records(latin1, error=error)
