"""Tool-row adapters: save only what `extend` changed, load it onto the same base, or merge.

Like PEFT's trainable-tokens adapters, an adapter holds just the tool rows (input, and output
when untied) plus their prior, in safetensors, and a JSON file with the registry, the embedding
shapes and a fingerprint of the base vocabulary, so loading onto the wrong base fails loudly.
Files are written under a temporary name and renamed into place: a failed save leaves no
partial file under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import AdapterError
from .extension import extend
from .modeling import is_tied
from .rows import current_rows, prior, set_prior, sync_rows, tool_rows
from .registry import ToolRegistry, registry, set_registry, vocab_fingerprint

ADAPTER_CONFIG = "toolken_adapter.json"
ADAPTER_WEIGHTS = "toolken_rows.safetensors"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # the mode of any file the user writes (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(model: Any, tokenizer: Any, save_directory: PathLike) -> Path:
    """Write the tool rows (input + output) and the registry of an extended model.

    Creates `save_directory/toolken_rows.safetensors` and `save_directory/toolken_adapter.json`.
    Returns the directory.
    """
    reg = registry(model)
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = current_rows(model)
    pri = prior(model)
    tensors = {
        "token_ids": torch.tensor(reg.tool_token_ids, dtype=torch.long),
        "input": rows["input"].detach().float().cpu().contiguous(),
        "prior_input": pri["input"].float().contiguous(),
    }
    if "output" in rows:
        tensors["output"] = rows["output"].detach().float().cpu().contiguous()
        if pri["output"] is not None:
            tensors["prior_output"] = pri["output"].float().contiguous()
    emb = model.get_input_embeddings().weight
    weights_path = out / ADAPTER_WEIGHTS
    _write_atomic(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    meta = {
        "format_version": FORMAT_VERSION,
        "registry": reg.to_dict(),
        "base_vocab_size": reg.base_vocab_size,
        "base_fingerprint": reg.base_fingerprint,
        "hidden_size": int(emb.shape[1]),
        "tied": is_tied(model),
        "model_type": getattr(model.config, "model_type", None),
        "weights_sha256": _sha256(weights_path),
    }
    _write_atomic(out / ADAPTER_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return out


def _read_adapter(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg_path, w_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise AdapterError(f"{p}: not found; is {directory} a directory written by toolken.save?")
    try:
        meta = json.loads(cfg_path.read_text())
        ToolRegistry.from_dict(meta["registry"])
    except (ValueError, KeyError, TypeError) as e:
        raise AdapterError(f"{cfg_path}: corrupt adapter config ({type(e).__name__}: {e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{cfg_path}: unsupported adapter format_version {meta.get('format_version')!r}")
    if _sha256(w_path) != meta.get("weights_sha256"):
        raise AdapterError(f"{w_path}: checksum mismatch: the file is corrupt or truncated")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterError(f"{w_path}: cannot read tool rows ({e})") from None
    return meta, tensors


def load(base_model: Any, base_tokenizer: Any, save_directory: PathLike, trainable: Optional[str] = None) -> tuple[Any, Any]:
    """Extend `base_model`/`base_tokenizer` with the adapter's tools and restore their rows.

    The base must be the one the adapter was trained on: same vocabulary (fingerprint), same
    hidden size, same tying. Everything is checked before the model is touched.
    Returns ``(model, tokenizer)``.
    """
    directory = Path(save_directory)
    meta, tensors = _read_adapter(directory)
    reg = ToolRegistry.from_dict(meta["registry"])
    n, d = len(reg), int(meta["hidden_size"])
    if len(base_tokenizer) != meta["base_vocab_size"]:
        raise AdapterError(f"{directory}: adapter expects a base tokenizer of {meta['base_vocab_size']} tokens, "
                           f"got {len(base_tokenizer)}; load it onto the unextended base model and tokenizer")
    if vocab_fingerprint(base_tokenizer) != meta["base_fingerprint"]:
        raise AdapterError(f"{directory}: the base tokenizer's vocabulary differs from the one this adapter "
                           "was trained on (fingerprint mismatch)")
    emb = base_model.get_input_embeddings().weight
    if emb.shape[1] != d:
        raise AdapterError(f"{directory}: adapter rows have hidden size {d}, the base model's embedding has {emb.shape[1]}")
    if is_tied(base_model) != meta["tied"]:
        raise AdapterError(f"{directory}: adapter was saved from a model with tied={meta['tied']} embeddings, "
                           f"the base has tied={is_tied(base_model)}")
    expected = {"token_ids": (n,), "input": (n, d), "prior_input": (n, d)}
    if not meta["tied"]:
        expected["output"] = (n, d)
    for k, shape in expected.items():
        if k not in tensors or tuple(tensors[k].shape) != shape:
            got = None if k not in tensors else tuple(tensors[k].shape)
            raise AdapterError(f"{directory / ADAPTER_WEIGHTS}: tensor {k!r} has shape {got}, expected {shape}")
    if tensors["token_ids"].tolist() != reg.tool_token_ids:
        raise AdapterError(f"{directory}: token ids in the weights do not match the registry")

    model, tokenizer = extend(base_model, base_tokenizer, reg.tools, init="mean", token_format=reg.token_format,
                              trainable=trainable)
    got = registry(model)
    if got.tool_token_ids != reg.tool_token_ids:  # pragma: no cover - guarded by the fingerprint
        raise AdapterError(f"{directory}: tool tokens got ids {got.tool_token_ids[:5]}... on this base, "
                           f"the adapter has {reg.tool_token_ids[:5]}...")
    _write_rows(model, tensors)
    got.init = reg.init
    set_registry(model, got)
    set_prior(model, {
        "token_ids": tensors["token_ids"],
        "input": tensors["prior_input"],
        "output": tensors.get("prior_output"),
    })
    return model, tokenizer


def _write_rows(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    ids = tensors["token_ids"]
    rows = tool_rows(model)
    with torch.no_grad():
        if rows is not None:
            order = rows.lookup[ids.to(rows.lookup.device)]
            rows.input[order] = tensors["input"].to(rows.input)
            if rows.output is not None:
                rows.output[order] = tensors["output"].to(rows.output)
        inp = model.get_input_embeddings().weight
        inp.index_copy_(0, ids.to(inp.device), tensors["input"].to(inp))
        head = model.get_output_embeddings()
        if head is not None and head.weight is not inp:
            head.weight.index_copy_(0, ids.to(head.weight.device), tensors["output"].to(head.weight))


def merge(model: Any, tokenizer: Any, save_directory: PathLike, **save_kwargs: Any) -> Path:
    """Write a plain Hugging Face checkpoint (tool rows merged into the embeddings, registry in
    `config.json`) that loads with `from_pretrained`. Written to a temporary directory first."""
    registry(model)
    out = Path(save_directory)
    if out.exists() and any(out.iterdir()):
        raise AdapterError(f"{out}: directory exists and is not empty; choose a new directory")
    sync_rows(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, **save_kwargs)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
