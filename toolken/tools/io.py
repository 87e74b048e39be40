"""Reading JSON data files: one JSON document or JSON Lines, plain or gzip-compressed.

This is toolken's one reader of JSON data: the tool loaders use it, and so can anything else
that reads records (evaluation queries, training data). A file whose name ends in `.gz` is
decompressed; anything else is read as UTF-8 text. Errors name the file (and the line, for JSON
Lines) and are raised as the caller's error class (`ToolSpecError` by default; pass
`error=DataError` for data files), so each caller keeps its own error type without re-wrapping.
"""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from typing import IO, Any, Union

from ..errors import ToolkenError, ToolSpecError

PathLike = Union[str, "os.PathLike[str]"]
ErrorClass = type[ToolkenError]

# what opening, decompressing or decoding a file raises
_READ_ERRORS = (OSError, UnicodeDecodeError, EOFError)
# Python's JSON parser recurses once per nesting level and gives up near the recursion limit
_TOO_DEEP = "JSON nested too deeply to parse (thousands of levels)"


def _describe(error: ErrorClass) -> str:
    return "tool file" if issubclass(error, ToolSpecError) else "data file"


def _open_text(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_text(path: PathLike, *, error: ErrorClass = ToolSpecError) -> str:
    """The whole text of `path` (gunzipped if its name ends in `.gz`).

    Raises:
        error: the file is missing, unreadable, not valid gzip or not UTF-8 (`cannot read tool
            file <path>: <reason>`; "data file" for error classes other than `ToolSpecError`).
    """
    p = os.fspath(path)
    try:
        with _open_text(p) as f:
            return f.read()
    except _READ_ERRORS as e:
        raise error(f"cannot read {_describe(error)} {p}: {e}") from None


def _loads(text: str, where: str, invalid: str, error: ErrorClass) -> Any:
    """`json.loads(text)`; a parse error raises `error("<invalid>: <reason>")`, too deep a
    nesting `error("<where>: <too deep>")`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{invalid}: {e}") from None
    except RecursionError:
        raise error(f"{where}: {_TOO_DEEP}") from None


def load_json_document(path: PathLike, *, error: ErrorClass = ToolSpecError) -> Any:
    """The one JSON document held by `path` (any JSON value).

    Raises:
        error: the file cannot be read (see `read_text`), is not one JSON document
            (`<path>: not valid JSON: <reason>`) or nests too deeply for Python's parser.
    """
    p = os.fspath(path)
    return _loads(read_text(path, error=error), p, f"{p}: not valid JSON", error)


def parse_json_line(line: str, path: PathLike, lineno: int, *, error: ErrorClass = ToolSpecError) -> Any:
    """One JSON Lines line as a JSON value; a bad or too deeply nested line raises `error`
    naming the file and line."""
    where = f"{os.fspath(path)}: line {lineno}"
    return _loads(line, where, f"{where} is not valid JSON", error)


def load_json_records(path: PathLike, *, error: ErrorClass = ToolSpecError) -> list:
    """The records of a JSON data file: a JSON array (its items), one JSON document (a list of
    that one value), or JSON Lines (one value per non-blank line); any of them gzipped.

    Raises:
        error: the file cannot be read (see `read_text`), a JSON Lines line does not parse
            (`<path>: line <n> is not valid JSON: <reason>`), or the JSON nests too deeply for
            Python's parser (thousands of levels).
    """
    text = read_text(path, error=error)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass
    except RecursionError:
        raise error(f"{os.fspath(path)}: {_TOO_DEEP}") from None
    else:
        return list(whole) if isinstance(whole, list) else [whole]
    return [parse_json_line(line, path, lineno, error=error)
            for lineno, line in enumerate(text.splitlines(), 1) if line.strip()]


def iter_json_lines(path: PathLike, *, error: ErrorClass = ToolSpecError) -> Iterator[tuple[int, Any]]:
    """Stream a JSON Lines file (optionally gzipped) as `(line number, value)` pairs, skipping
    blank lines, without holding the file in memory; the line numbers let a caller name the line
    of a record it rejects.

    Raises:
        error: the file cannot be read or decompressed (as `read_text`), or a line does not
            parse (as `load_json_records`).
    """
    p = os.fspath(path)
    try:
        f = _open_text(p)
    except _READ_ERRORS as e:
        raise error(f"cannot read {_describe(error)} {p}: {e}") from None
    with f:
        lines = enumerate(f, 1)
        while True:
            try:
                lineno, line = next(lines)
            except StopIteration:
                return
            except _READ_ERRORS as e:
                raise error(f"cannot read {_describe(error)} {p}: {e}") from None
            if line.strip():
                yield lineno, parse_json_line(line, p, lineno, error=error)
