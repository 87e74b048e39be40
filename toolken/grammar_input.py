"""What the grammar engine reads, prepared from Python objects: the raw bytes of every token of a
Hugging Face tokenizer (byte-level BPE, tiktoken-style and SentencePiece vocabularies), and a
schema's JSON text checked against the engine's limits (size, nesting depth, lone surrogates)
with errors that name the JSON pointer. No torch."""
from __future__ import annotations

import functools
import json
from typing import Any, List, Mapping, Optional, Sequence, Union

from .errors import GrammarError

#: Schemas whose JSON text is longer than this (UTF-8 bytes) are refused at once (12x the largest
#: MaskBench schema); the engine enforces the same limit.
MAX_SCHEMA_BYTES = 1 << 20
#: Deepest nesting of JSON objects/arrays in a schema (the engine's parser limit).
MAX_SCHEMA_DEPTH = 256


def json_pointer(path: Sequence[Union[str, int]]) -> str:
    """JSON pointer "#/a/0/b" of a path of keys and indices (lone surrogates shown as \\udXXX)."""
    text = "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def find_in_tree(root: Any, bad_string: Any = None) -> Optional[tuple]:
    """Iteratively (no recursion) find the first place in a JSON tree that is nested deeper than
    MAX_SCHEMA_DEPTH, or (with ``bad_string``) holds a key or string for which it is true;
    ("depth" | "string", path) or None."""
    stack: List[tuple] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_SCHEMA_DEPTH:
            return ("depth", path[: MAX_SCHEMA_DEPTH + 1])
        if isinstance(node, Mapping):
            for k, v in node.items():
                if bad_string is not None and isinstance(k, str) and bad_string(k):
                    return ("string", path + [k])
                stack.append((v, path + [k]))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, path + [i]) for i, v in enumerate(node))
        elif bad_string is not None and isinstance(node, str) and bad_string(node):
            return ("string", path)
    return None


def bounded_dumps(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)`, but a text that grows past `MAX_SCHEMA_BYTES`
    characters is cut there (the caller refuses it): a huge schema is refused after encoding
    1 MiB of it, not all of it."""
    parts, size = [], 0
    for chunk in json.JSONEncoder(ensure_ascii=False, allow_nan=False).iterencode(value):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_SCHEMA_BYTES:
            break
    return "".join(parts)


def has_surrogate(s: str) -> bool:
    """Whether `s` holds a lone surrogate (not encodable as UTF-8)."""
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def schema_text(schema: Any) -> str:
    """The schema as JSON text, refusing what the engine cannot take (see compile_json_schema)."""
    if isinstance(schema, (bytes, bytearray)):
        try:
            schema = bytes(schema).decode("utf-8")
        except UnicodeDecodeError as e:
            raise GrammarError(f"the schema bytes are not valid UTF-8 (byte 0x{e.object[e.start]:02X} at offset {e.start})") from None
    tree = None
    if isinstance(schema, str):
        text = schema
    elif isinstance(schema, (Mapping, bool)):
        tree = schema
        try:
            text = bounded_dumps(schema)
        except RecursionError:
            found = find_in_tree(schema)
            where = json_pointer(found[1]) if found else "#"
            raise GrammarError(
                f"schema nested too deeply: more than {MAX_SCHEMA_DEPTH} levels of nested objects/arrays (the limit) (at {where})"
            ) from None
        except (TypeError, ValueError) as e:
            raise GrammarError(f"the schema is not JSON-serializable: {e}") from None
    else:
        raise GrammarError(f"the schema must be a dict, a bool or JSON text, not {type(schema).__name__}")
    if len(text) > MAX_SCHEMA_BYTES:  # characters <= bytes: refuse before encoding a huge text
        raise GrammarError(f"schema too large: over {MAX_SCHEMA_BYTES} characters of JSON, the limit is "
                           f"{MAX_SCHEMA_BYTES} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        where = None
        if tree is not None:
            found = find_in_tree(tree, has_surrogate)
            where = json_pointer(found[1]) if found else None
        bad = f"\\u{ord(e.object[e.start]):04X}"
        raise GrammarError(
            f"the schema holds a lone surrogate {bad}, which is not a Unicode character "
            + (f"(at {where})" if where else f"(at character {e.start} of the schema text)")
        ) from None
    if size > MAX_SCHEMA_BYTES:
        raise GrammarError(f"schema too large: {size} bytes of JSON, the limit is {MAX_SCHEMA_BYTES}")
    return text


@functools.lru_cache(maxsize=1)
def byte_decoder() -> dict:
    """Inverse of GPT-2's bytes_to_unicode map (byte-level BPE token strings -> bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def tokenizer_kind(tokenizer: Any) -> str:
    """'byte_level' (GPT-2/tiktoken-style), 'sentencepiece' (▁ and <0xNN> byte fallback) or 'plain'."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        text = json.dumps([spec.get("decoder"), spec.get("pre_tokenizer")])
        if '"ByteLevel"' in text:
            return "byte_level"
        if '"ByteFallback"' in text or "\u2581" in text or (spec.get("model") or {}).get("byte_fallback"):
            return "sentencepiece"
        return "plain"
    if hasattr(tokenizer, "sp_model"):
        return "sentencepiece"
    return "plain"


def token_bytes_from_tokenizer(tokenizer: Any) -> List[Optional[bytes]]:
    """Raw bytes of every token id ``< len(tokenizer)``; None for special and added tokens.

    Handles GPT-2 byte-level BPE (SmolLM2), tiktoken-style vocabularies converted to byte-level
    BPE (Llama-3, Tekken) and SentencePiece with byte fallback (Mistral: ``▁`` is a space,
    ``<0xNN>`` is byte NN).
    """
    n = len(tokenizer)
    kind = tokenizer_kind(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    decoder = byte_decoder()
    out: List[Optional[bytes]] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
            continue
        if kind == "byte_level":
            try:
                out.append(bytes(decoder[c] for c in piece))
            except KeyError:
                out.append(piece.encode("utf-8"))
        elif kind == "sentencepiece":
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                try:
                    out.append(bytes([int(piece[3:5], 16)]))
                    continue
                except ValueError:
                    pass
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
        else:
            out.append(piece.encode("utf-8"))
    return out


_DATA_KEYWORDS = ("enum", "const", "default", "examples")


def unsupported_combination(node: Any, strict: bool, path: str = "#") -> Optional[str]:
    """Why the engine must refuse the schema, or None: combinations its native compiler accepts but
    cannot yet mask exactly (a compile error is always better than a wrong mask).

    - ``minProperties`` above the required keys where additional or pattern-matched keys are
      allowed: the matcher does not remember those keys, so a repeated one would count twice.
    - ``allOf`` with more than one part holding ``anyOf``: distributing them accepted values no
      branch combination admits (found by a property test: an ``exclusiveMinimum`` lost against
      a ``const`` of the other part)."""
    if isinstance(node, dict):
        allows_more = node.get("additionalProperties", not (strict and "properties" in node)) is not False
        low, required = node.get("minProperties", 0), node.get("required", [])
        beyond = isinstance(low, (int, float)) and isinstance(required, list) and low > len(set(map(str, required)))
        if beyond and (node.get("patternProperties") or allows_more):
            return (f"minProperties at {path} with additional or pattern properties is not supported "
                    "(a repeated additional key would count twice)")
        parts = node.get("allOf")
        if isinstance(parts, list) and sum(isinstance(x, dict) and "anyOf" in x for x in parts) > 1:
            return f"allOf at {path}: several anyOf parts under one allOf are not supported"
        for k, v in node.items():
            if k not in _DATA_KEYWORDS:
                found = unsupported_combination(v, strict, f"{path}/{k}")
                if found:
                    return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = unsupported_combination(v, strict, f"{path}/{i}")
            if found:
                return found
    return None
