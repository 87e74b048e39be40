"""Keywords compiled since issue 16's coverage round, each against a reference: formats ``ipv6``
and ``duration``, anchors inside patterns, ``propertyNames``, and allOf parts with differing
``pattern``s, with ``patternProperties``, or with differing unknown keywords (annotations).

A JSON text is accepted by the grammar exactly when `jsonschema` (with its format checker) says
the value is valid, in both JSON encodings of the text (``ensure_ascii`` true and false): the
escapes ``\\uXXXX`` and the raw UTF-8 bytes. ``duration`` is checked against RFC 3339 appendix
A's grammar written out below (jsonschema checks it only with the optional `isoduration`).
Objects compile with ``property_order="any"``, so a valid instance in any key order is accepted.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Dict

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken import GrammarError, grammar

TOKENS = [bytes([i]) for i in range(256)] + [None]
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [len(TOKENS) - 1])
SETTINGS = settings(max_examples=150, suppress_health_check=list(HealthCheck), deadline=None)


def accepts(cg: grammar.CompiledGrammar, value: Any, ascii_only: bool) -> bool:
    m = grammar.Matcher(cg)
    return m.accept_string(json.dumps(value, ensure_ascii=ascii_only)) and m.can_terminate()


def valid(value: Any, schema: Any) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(value)


def compiled(schema: Any) -> grammar.CompiledGrammar:
    return grammar.compile_json_schema(schema, VOCAB, property_order="any")


# ---------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------
HEX = st.text("0123456789abcdefABCDEF", min_size=1, max_size=5)
IPV4 = st.lists(st.sampled_from(["0", "1", "9", "10", "01", "99", "100", "199", "200", "249", "250", "255", "256", "999"]),
                min_size=3, max_size=5).map(".".join)


@st.composite
def ipv6_like(draw: Any) -> str:
    """Near-addresses: 0-9 groups of 1-5 hex digits, at most one or two `::`, maybe an IPv4
    tail or a zone, or one of hypothesis' real addresses (compressed or exploded)."""
    if draw(st.booleans()):
        address = draw(st.ip_addresses(v=6))
        return draw(st.sampled_from([str(address), address.exploded, str(address).upper()]))
    groups = draw(st.lists(HEX, max_size=9))
    if groups and draw(st.booleans()):
        groups[-1] = draw(IPV4)
    text = ":".join(groups)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "::" + text[at:]
    return text + draw(st.sampled_from(["", "", "%eth0", ":", " "]))


def test_ipv6_examples() -> None:
    cg = compiled({"type": "string", "format": "ipv6"})
    for text in ["::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4",
                 "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", ":1::", "1:::2", "::01.2.3.4", "abcd::12345", "1::2::3", ""]:
        assert accepts(cg, text, True) == valid(text, {"format": "ipv6"}), text


@SETTINGS
@given(text=ipv6_like(), ascii_only=st.booleans())
def test_ipv6_accepted_exactly_when_valid(text: str, ascii_only: bool) -> None:
    schema = {"type": "string", "format": "ipv6"}
    assert accepts(compiled(schema), text, ascii_only) == valid(text, schema), text


def rfc3339_duration(text: str) -> bool:
    """RFC 3339 appendix A, as written there (designators upper case), one rule at a time."""
    def digits_then(s: str, i: int, letter: str) -> int:
        j = i
        while j < len(s) and s[j] in "0123456789":
            j += 1
        return j + 1 if j > i and j < len(s) and s[j] == letter else -1

    def chain(s: str, i: int, letters: str) -> int:  # dur-hour = 1*DIGIT "H" [dur-minute] ...: one of, then optional rest
        for k, letter in enumerate(letters):
            j = digits_then(s, i, letter)
            if j < 0:
                continue
            rest = letters[k + 1:]
            while rest:
                nxt = digits_then(s, j, rest[0])
                if nxt < 0:
                    break
                j, rest = nxt, rest[1:]
            return j
        return -1

    def time(s: str, i: int) -> int:
        return chain(s, i + 1, "HMS") if i < len(s) and s[i] == "T" else -1

    if not text.startswith("P"):
        return False
    end = chain(text, 1, "YMD")
    if end >= 0:
        t = time(text, end)
        return (t if t >= 0 else end) == len(text)
    return time(text, 1) == len(text) or digits_then(text, 1, "W") == len(text)


def test_the_duration_reference_reads_the_rfc() -> None:
    for text, ok in [("P1Y", True), ("P1Y2M3DT4H5M6S", True), ("P4W", True), ("PT2S", True), ("P1M", True),
                     ("PT1M", True), ("P1D", True), ("PT1D", False), ("P", False), ("P1", False), ("PT", False),
                     ("P1Y2W", False), ("P2D1Y", False), ("P1D2H", False), ("P2S", False), ("PT1H2S", False),
                     ("P1Y3D", False), ("P1DT", False), ("p1y", False)]:
        assert rfc3339_duration(text) == ok, text


DURATION = st.lists(st.sampled_from(["P", "T", "1", "23", "Y", "M", "W", "D", "H", "S", "x"]), max_size=8).map("".join)


@SETTINGS
@given(text=st.one_of(DURATION, DURATION.map(lambda t: "P" + t)), ascii_only=st.booleans())
def test_duration_accepted_exactly_when_rfc3339_says_so(text: str, ascii_only: bool) -> None:
    assert accepts(compiled({"type": "string", "format": "duration"}), text, ascii_only) == rfc3339_duration(text), text


# ---------------------------------------------------------------------------------------------
# anchors inside patterns
# ---------------------------------------------------------------------------------------------
INNER_ANCHORS = ["^$|(^(?:\\S+\\s+){0,3}\\S+$)", "(^gs://(.+))|(^https?://(.+))", "(?:^|-)[0-9]+(?:$|-)", "a(^|b)c",
                 "(^a|b$)c*", "x$|^y", "(a$)+", "^(a|^b)c$", "(?:^\\d+$)|(?:^$)", "é(^|$)"]
ANCHOR_TEXT = st.lists(st.sampled_from(list("abcxyé019-:/ ") + ["gs://", "http://", "https://", "\n"]),
                       max_size=7).map("".join)


@pytest.mark.parametrize("pattern", INNER_ANCHORS)
@SETTINGS
@given(text=ANCHOR_TEXT, ascii_only=st.booleans())
def test_inner_anchors_accept_exactly_what_re_search_does(pattern: str, text: str, ascii_only: bool) -> None:
    schema = {"type": "string", "pattern": pattern}
    # the documented subsets (regex.h): `\\S` is the ASCII complement of `\\s`, and `$` does not
    # match before a trailing newline (as `\\Z`)
    strict = pattern.replace("\\S", "[\\x00-\\x08\\x0e-\\x1f!-\\x7f]").replace("$", "\\Z")
    ok = accepts(compiled(schema), text, ascii_only)
    assert ok == bool(re.search(strict, text)), text
    assert not ok or valid(text, schema), text


# ---------------------------------------------------------------------------------------------
# objects: propertyNames, allOf with patternProperties, unknown keywords
# ---------------------------------------------------------------------------------------------
KEYS = st.sampled_from(["a", "ab", "abc", "b", "x1", "x22", "é", "Z", "", "a b", "y"])
VALUES = st.sampled_from([0, 3, -2, "s", "ab", None, True, [1]])
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)

OBJECT_SCHEMAS = [
    {"type": "object", "propertyNames": {"pattern": "^[a-c]+$"}},
    {"type": "object", "propertyNames": {"maxLength": 1}, "properties": {"abc": {}, "a": {"type": "integer"}},
     "additionalProperties": {"type": "integer"}},
    {"type": "object", "propertyNames": {"enum": ["a", "b", "é", 3]}, "required": ["a"]},
    {"type": "object", "propertyNames": {"const": "x1"}, "patternProperties": {"^x": {"type": "integer"}}},
    {"type": "object", "propertyNames": {"minLength": 2, "pattern": "^[a-z]"}, "required": ["ab"]},
    {"type": "object", "propertyNames": {"minLength": 2}, "required": ["b"]},
    {"type": "object", "propertyNames": {"type": "integer"}},
    {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "$defs": {"name": {"pattern": "(^a|1$)"}}},
    {"type": "object", "propertyNames": False},
    {"type": "object", "propertyNames": {"type": "string", "minimum": 4, "required": ["q"]}},
    {"allOf": [{"type": "object", "propertyNames": {"pattern": "a"}}, {"propertyNames": {"maxLength": 2}}]},
    {"allOf": [{"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
               {"patternProperties": {"^x": {"minimum": 1}, "^a": {"type": "string"}}}]},
    {"allOf": [{"type": "object", "patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False},
               {"patternProperties": {"^x": {"maximum": 3}}, "properties": {"x1": {"minimum": 0}}}]},
    {"allOf": [{"type": "object", "properties": {"ab": {"type": "string"}}, "translation": "a"},
               {"properties": {"ab": {"pattern": "b"}}, "translation": "b", "required": ["ab"]}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string", "pattern": "a"}},
                "patternProperties": {"^a": {"pattern": "b"}}, "additionalProperties": {"type": "integer"}},
               {"properties": {"a": {"pattern": "s|b"}, "x1": {}}}]},
]


@pytest.mark.parametrize("schema", OBJECT_SCHEMAS, ids=[json.dumps(s)[:60] for s in OBJECT_SCHEMAS])
@SETTINGS
@given(value=OBJECTS, ascii_only=st.booleans())
def test_objects_accepted_exactly_when_valid(schema: Dict[str, Any], value: Dict[str, Any], ascii_only: bool) -> None:
    try:
        cg = compiled(schema)
    except GrammarError as e:  # a required key propertyNames refuses: no instance at all
        assert "admits no JSON value" in str(e)
        assert not valid(value, schema)
        return
    assert accepts(cg, value, ascii_only) == valid(value, schema), (schema, value)


STRING_ALL_OF = [
    {"allOf": [{"type": "string", "pattern": "a"}, {"pattern": "b"}, {"pattern": "a"}]},
    {"allOf": [{"type": "string", "pattern": "^[a-c]+$"}, {"pattern": "b", "maxLength": 3}]},
    {"allOf": [{"enum": ["ab", "a", "b", "ba", 1]}, {"pattern": "a"}, {"pattern": "b$"}]},
]


@pytest.mark.parametrize("schema", STRING_ALL_OF, ids=[json.dumps(s)[:60] for s in STRING_ALL_OF])
@SETTINGS
@given(text=st.text("abcé", max_size=5), ascii_only=st.booleans())
def test_all_of_patterns_intersect(schema: Dict[str, Any], text: str, ascii_only: bool) -> None:
    assert accepts(compiled(schema), text, ascii_only) == valid(text, schema), (schema, text)


@pytest.mark.parametrize("schema, where", [
    ({"type": "object", "propertyNames": {"anyOf": [{"pattern": "a"}]}}, "#/propertyNames/anyOf"),
    ({"type": "object", "propertyNames": {"not": {"pattern": "a"}}}, "#/propertyNames/not"),
    ({"allOf": [{"type": "object", "additionalProperties": False}, {"patternProperties": {"^x": {}}}]}, "#"),
])
def test_what_stays_refused_names_the_field(schema: Dict[str, Any], where: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(f"(at {where})")):
        compiled(schema)


def test_ipv6_is_python_s_ipaddress_without_zones() -> None:
    """The reference of the ipv6 tests is what jsonschema runs: `ipaddress.IPv6Address`, zones refused."""
    assert valid("::1", {"format": "ipv6"}) and not valid("fe80::1%eth0", {"format": "ipv6"})
    assert ipaddress.IPv6Address("fe80::1%eth0")
