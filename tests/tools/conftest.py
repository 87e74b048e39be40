"""Fixtures shared by the tests of `toolken.tools`."""
from __future__ import annotations

import pytest

import toolken.tools.schema as schema_mod


@pytest.fixture(params=["jsonschema-rs", "jsonschema"])
def meta_checker(request, monkeypatch):
    """Run a test with the optional jsonschema-rs fast path and with plain jsonschema."""
    if request.param == "jsonschema-rs":
        if schema_mod._jsonschema_rs is None:
            pytest.skip("jsonschema-rs not installed")
    else:
        monkeypatch.setattr(schema_mod, "_jsonschema_rs", None)
    schema_mod.schema_problem.cache_clear()
    yield request.param
    schema_mod.schema_problem.cache_clear()


@pytest.fixture(scope="session")
def byte_grammar():
    """`toolken.grammar` and a byte-level vocabulary (256 bytes + a stop token): what the
    loaders emit is what constrained decoding consumes, so tests compile generated schemas."""
    grammar = pytest.importorskip("toolken.grammar")
    return grammar, grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)] + [b""], stop_ids=[256])
