"""Tool-row adapters: save only what `extend` changed, load it onto the same base, or merge.

Like PEFT's trainable-tokens adapters, an adapter holds just the tool rows (input, and output
when untied) plus their prior, and the base modules trained with them (the registry's
``trained_modules``: `toolken.train_tool_tokens`' top layers), in safetensors, and a JSON file
with the registry, the embedding shapes and a fingerprint of the base vocabulary, so loading onto
the wrong base fails loudly.
Saving writes the complete new adapter into a temporary directory first and only then
switches it in, so a failed save leaves the previous adapter (if any) intact and loadable.
Loading checks every field, tensor and token id before the model or tokenizer is touched.
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

from .errors import AdapterError, ExtendError, ToolSpecError
from .extension import TRAINABLE, extend_with_rows
from .format import check_token_format
from .modeling import is_tied
from .registry import ToolRegistry, find_registry, registry, set_registry, vocab_fingerprint
from .rows import current_rows, prior, sync_rows
from .tools import Tool, ToolSet

ADAPTER_CONFIG = "toolken_adapter.json"
ADAPTER_WEIGHTS = "toolken_rows.safetensors"
MODULE_PREFIX = "module."  # tensors of base modules trained with the rows (registry.trained_modules)
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save(model: Any, tokenizer: Any, save_directory: PathLike) -> Path:
    """Write the tool rows (input + output), the base modules trained with them (the registry's
    ``trained_modules``: `toolken.train_tool_tokens`' top layers) and the registry of an extended model.

    Creates `save_directory/toolken_rows.safetensors` and `save_directory/toolken_adapter.json`
    (other files in the directory are left alone). Both files are written completely into a
    temporary directory first, then switched in (the old pair moved aside, the new pair moved in,
    the old pair removed), so a failure at any point leaves the previous adapter there and
    loadable. Returns the directory.

    Raises:
        AdapterError: the directory cannot be written (the message names the path and the
            cause), or a path the adapter needs is taken by something that is not a file.
    """
    reg = registry(model)
    out = Path(save_directory)
    if out.exists() and not out.is_dir():
        raise AdapterError(f"{out}: exists and is not a directory; choose a directory for the adapter")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if (out / name).is_dir():
            raise AdapterError(f"{out / name}: is a directory, where the adapter file {name} goes; move it away")
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
    trained = tuple(reg.trained_modules)
    tensors.update({MODULE_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                    if trained and k.startswith(trained)})
    emb = model.get_input_embeddings().weight
    meta = {
        "format_version": FORMAT_VERSION,
        "registry": reg.to_dict(),
        "base_vocab_size": reg.base_vocab_size,
        "base_fingerprint": reg.base_fingerprint,
        "hidden_size": int(emb.shape[1]),
        "tied": is_tied(model),
        "model_type": getattr(model.config, "model_type", None),
    }
    existed = out.is_dir()
    tmp: Optional[Path] = None
    try:
        if existed:  # inside: same file system as the files it replaces
            tmp = Path(tempfile.mkdtemp(prefix=".toolken-save-", dir=out))
        else:  # a sibling, renamed into place whole
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.toolken-save-", dir=out.parent))
            os.chmod(tmp, 0o777 & ~_umask())  # a normal directory mode (mkdtemp makes 0700)
        new = tmp / "new" if existed else tmp
        new.mkdir(exist_ok=True)
        save_file(tensors, str(new / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        meta["weights_sha256"] = _sha256(new / ADAPTER_WEIGHTS)
        (new / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=1))
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            os.chmod(new / name, 0o666 & ~_umask())  # the mode of any file the user writes (safetensors makes 0600)
            _fsync(new / name)
        if existed:
            _switch_files(new, tmp / "old", out)
        else:
            os.rename(tmp, out)
            tmp = None
    except AdapterError:
        raise
    except (OSError, SafetensorError) as e:
        raise AdapterError(f"{out}: cannot save the adapter ({type(e).__name__}: {e}); "
                           "any previous adapter there is unchanged") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _switch_files(new: Path, old: Path, out: Path) -> None:
    """Move the adapter files of `out` into `old` and those of `new` into `out`; on any failure
    undo the moves done so far, so `out` holds its previous files again."""
    old.mkdir()
    moved: list[tuple[Path, Path]] = []
    try:
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):  # config first: a half switch reads as "not found"
            if os.path.lexists(out / name):
                os.rename(out / name, old / name)
                moved.append((out / name, old / name))
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):  # config last: it vouches for the weights
            os.rename(new / name, out / name)
            moved.append((new / name, out / name))
    except BaseException:
        for src, dst in reversed(moved):
            try:
                os.rename(dst, src)
            except OSError:  # pragma: no cover - the undo of a rename within one directory
                pass
        raise


def _fail(where: Path, field: str, message: str) -> AdapterError:
    return AdapterError(f"{where}: field {field!r} {message}; is this a directory written by toolken.save?")


def _typed(where: Path, d: dict, key: str, types: Any, desc: str, prefix: str = "", required: bool = True) -> Any:
    """`d[key]` if it has one of `types` (bool is never an int here), else an AdapterError
    naming the file and the field."""
    field = f"{prefix}{key}"
    if key not in d:
        if required:
            raise _fail(where, field, f"is missing (expected {desc})")
        return None
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(where, field, f"must be {desc}, got {v!r}")
    if not isinstance(v, types):
        raise _fail(where, field, f"must be {desc}, got {type(v).__name__} {v!r:.80}")
    return v


def _parse_config(cfg_path: Path, meta: Any) -> ToolRegistry:
    """Check every field of an adapter config (types, values, consistency) and build its registry."""
    if not isinstance(meta, dict):
        raise AdapterError(f"{cfg_path}: an adapter config must be a JSON object, got {type(meta).__name__}")
    version = _typed(cfg_path, meta, "format_version", int, "an integer")
    if version != FORMAT_VERSION:
        raise AdapterError(f"{cfg_path}: unsupported adapter format_version {version!r} (this toolken reads {FORMAT_VERSION})")
    size = _typed(cfg_path, meta, "base_vocab_size", int, "a positive integer")
    if size <= 0:
        raise _fail(cfg_path, "base_vocab_size", f"must be a positive integer, got {size}")
    fingerprint = _typed(cfg_path, meta, "base_fingerprint", str, "a string")
    hidden = _typed(cfg_path, meta, "hidden_size", int, "a positive integer")
    if hidden <= 0:
        raise _fail(cfg_path, "hidden_size", f"must be a positive integer, got {hidden}")
    _typed(cfg_path, meta, "tied", bool, "true or false")
    _typed(cfg_path, meta, "model_type", (str, type(None)), "a string or null", required=False)
    _typed(cfg_path, meta, "weights_sha256", str, "a SHA-256 hex digest")
    r = _typed(cfg_path, meta, "registry", dict, "an object")
    fmt = _typed(cfg_path, r, "token_format", str, "a string", "registry.")
    try:
        check_token_format(fmt)
    except ExtendError as e:
        raise _fail(cfg_path, "registry.token_format", f"is invalid: {e}") from None
    for key, want in (("base_vocab_size", size), ("base_fingerprint", fingerprint)):
        if key in r and r[key] != want:
            raise _fail(cfg_path, f"registry.{key}", f"is {r[key]!r} but the adapter's {key} is {want!r}")
    entries = _typed(cfg_path, r, "tools", list, "a list of tools", "registry.")
    if not entries:
        raise _fail(cfg_path, "registry.tools", "is empty: an adapter holds at least one tool")
    tools, ids, tokens, inits = [], {}, {}, {}
    for i, t in enumerate(entries):
        at = f"registry.tools[{i}]."
        if not isinstance(t, dict):
            raise _fail(cfg_path, at[:-1], f"must be an object, got {type(t).__name__}")
        name = _typed(cfg_path, t, "name", str, "a string", at)
        try:
            tool = Tool(name, _typed(cfg_path, t, "description", str, "a string", at, required=False) or "",
                        t.get("parameters"))
        except ToolSpecError as e:
            raise AdapterError(f"{cfg_path}: {at[:-1]}: {e}") from None
        token = _typed(cfg_path, t, "token", str, "a string", at)
        if token != fmt.format(name=name):
            raise _fail(cfg_path, at + "token", f"is {token!r}, but token_format {fmt!r} makes "
                        f"{fmt.format(name=name)!r} for tool {name!r}")
        tid = _typed(cfg_path, t, "token_id", int, "a non-negative integer", at)
        if tid < 0:
            raise _fail(cfg_path, at + "token_id", f"must be a non-negative integer, got {tid}")
        if tid in ids.values():
            raise _fail(cfg_path, at + "token_id", f"{tid} of tool {name!r} is also the id of another tool")
        if name in ids:
            raise _fail(cfg_path, at + "name", f"{name!r}: the tool is listed twice")
        tools.append(tool)
        ids[name], tokens[name] = tid, token
        inits[name] = _typed(cfg_path, t, "init", str, "a string", at, required=False) or ""
    trained = _typed(cfg_path, r, "trained_modules", list, "a list of module names", "registry.", required=False) or []
    if not all(isinstance(m, str) and m.endswith(".") for m in trained):
        raise _fail(cfg_path, "registry.trained_modules", "must list state-dict prefixes ending in '.'")
    return ToolRegistry(token_format=fmt, tools=ToolSet(tools), token_ids=ids, tokens=tokens, init=inits,
                        base_vocab_size=size, base_fingerprint=fingerprint, trained_modules=tuple(trained))


def _read_adapter(directory: Path) -> tuple[dict, ToolRegistry, dict[str, torch.Tensor]]:
    """Read and check an adapter's config and tensors: every field's type and value, the
    checksum, every tensor's name, dtype, shape and finiteness, the token ids."""
    cfg_path, w_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            what = "is not a file" if p.exists() else "not found"
            raise AdapterError(f"{p}: {what}; is {directory} a directory written by toolken.save?")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AdapterError(f"{cfg_path}: corrupt adapter config ({type(e).__name__}: {e})") from None
    reg = _parse_config(cfg_path, meta)
    try:
        digest = _sha256(w_path)
    except OSError as e:
        raise AdapterError(f"{w_path}: cannot read tool rows ({e})") from None
    if digest != meta["weights_sha256"]:
        raise AdapterError(f"{w_path}: checksum mismatch: the file is corrupt or truncated")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterError(f"{w_path}: cannot read tool rows ({e})") from None
    n, d = len(reg), meta["hidden_size"]
    expected = {"token_ids": (n,), "input": (n, d), "prior_input": (n, d)}
    if not meta["tied"]:
        expected["output"] = (n, d)
    optional = {} if meta["tied"] else {"prior_output": (n, d)}
    prefixes = tuple(MODULE_PREFIX + m for m in reg.trained_modules)
    modules = {k for k in tensors if prefixes and k.startswith(prefixes)}
    unknown = sorted(set(tensors) - set(expected) - set(optional) - modules)
    if unknown:
        raise AdapterError(f"{w_path}: unexpected tensor {unknown[0]!r} (an adapter of a "
                           f"{'tied' if meta['tied'] else 'untied'} model holds {', '.join([*expected, *optional])})")
    for k in sorted(modules):
        if not tensors[k].is_floating_point() or not bool(torch.isfinite(tensors[k]).all()):
            raise AdapterError(f"{w_path}: tensor {k!r} is not floating point or holds NaN or infinite values")
    for k, shape in {**expected, **{k: v for k, v in optional.items() if k in tensors}}.items():
        t = tensors.get(k)
        if t is None or tuple(t.shape) != shape:
            raise AdapterError(f"{w_path}: tensor {k!r} has shape {None if t is None else tuple(t.shape)}, expected {shape}")
        if k == "token_ids":
            if t.dtype not in (torch.int64, torch.int32):
                raise AdapterError(f"{w_path}: tensor 'token_ids' has dtype {t.dtype}, expected an integer dtype")
        elif not t.is_floating_point():
            raise AdapterError(f"{w_path}: tensor {k!r} has dtype {t.dtype}, expected a floating point dtype")
        elif not bool(torch.isfinite(t).all()):
            raise AdapterError(f"{w_path}: tensor {k!r} holds NaN or infinite values")
    if tensors["token_ids"].tolist() != reg.tool_token_ids:
        raise AdapterError(f"{w_path}: token ids in the weights do not match the registry in {cfg_path}")
    tensors["token_ids"] = tensors["token_ids"].long()
    return meta, reg, tensors


def load(base_model: Any, base_tokenizer: Any, save_directory: PathLike, trainable: Optional[str] = None) -> tuple[Any, Any]:
    """Extend `base_model`/`base_tokenizer` with the adapter's tools and restore their rows.

    The base must be the one the adapter was trained on: same vocabulary (fingerprint), same
    hidden size, same tying, not extended yet. Everything is checked before the model is
    touched: every field and tensor of the adapter, the base, and the ids its tool tokens would
    get (a dry run on a copy of the tokenizer must give exactly the adapter's ids).
    Returns ``(model, tokenizer)``.

    Raises:
        AdapterError: naming the file, field, tensor or tool at fault; the model and tokenizer
            are then exactly as they were.
    """
    if trainable not in TRAINABLE:
        raise AdapterError(f"unknown trainable={trainable!r}; choose 'tool_rows', 'full' or None")
    directory = Path(save_directory)
    meta, reg, tensors = _read_adapter(directory)
    d = meta["hidden_size"]
    if find_registry(base_model) is not None:
        raise AdapterError(f"{directory}: the base model is already extended (it has a tool registry); "
                           "load the adapter onto the unextended base model and tokenizer")
    if len(base_tokenizer) != meta["base_vocab_size"]:
        raise AdapterError(f"{directory}: adapter expects a base tokenizer of {meta['base_vocab_size']} tokens, "
                           f"got {len(base_tokenizer)}; load it onto the unextended base model and tokenizer")
    if vocab_fingerprint(base_tokenizer) != meta["base_fingerprint"]:
        raise AdapterError(f"{directory}: the base tokenizer's vocabulary differs from the one this adapter "
                           "was trained on (fingerprint mismatch)")
    emb = base_model.get_input_embeddings()
    if emb is None:
        raise AdapterError(f"{directory}: {type(base_model).__name__} has no input embeddings")
    if emb.weight.shape[1] != d:
        raise AdapterError(f"{directory}: adapter rows have hidden size {d}, the base model's embedding has {emb.weight.shape[1]}")
    if is_tied(base_model) != meta["tied"]:
        raise AdapterError(f"{directory}: adapter was saved from a model with tied={meta['tied']} embeddings, "
                           f"the base has tied={is_tied(base_model)}")
    modules = _module_tensors(directory, base_model, tensors)
    try:
        model, tokenizer = extend_with_rows(
            base_model, base_tokenizer, reg.tools, reg.tool_token_ids, tensors["input"], tensors.get("output"),
            token_format=reg.token_format, init=reg.init, trainable=trainable,
            prior={"token_ids": tensors["token_ids"], "input": tensors["prior_input"].float(),
                   "output": None if "prior_output" not in tensors else tensors["prior_output"].float()})
    except (ExtendError, ToolSpecError) as e:
        raise AdapterError(f"{directory}: cannot load this adapter onto this base: {e}") from None
    with torch.no_grad():
        for param, value in modules:
            param.copy_(value)
    if reg.trained_modules:  # so that saving the loaded model keeps them
        loaded = registry(model)
        loaded.trained_modules = reg.trained_modules
        set_registry(model, loaded)
    return model, tokenizer


def _module_tensors(directory: Path, base_model: Any, tensors: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(base tensor, saved value) for each trained-module tensor of the adapter, checked against
    the base's state dict (name and shape) before anything is changed."""
    state = base_model.state_dict(keep_vars=True)
    out = []
    for key in sorted(k for k in tensors if k.startswith(MODULE_PREFIX)):
        name = key[len(MODULE_PREFIX):]
        if name not in state:
            raise AdapterError(f"{directory}: the adapter holds trained module tensor {name!r}, which the base model "
                               f"({type(base_model).__name__}) does not have; load it onto the base it was trained on")
        if tuple(state[name].shape) != tuple(tensors[key].shape):
            raise AdapterError(f"{directory}: trained module tensor {name!r} has shape {tuple(tensors[key].shape)}, "
                               f"the base's has {tuple(state[name].shape)}")
        out.append((state[name], tensors[key]))
    return out


def merge(model: Any, tokenizer: Any, save_directory: PathLike, **save_kwargs: Any) -> Path:
    """Write a plain Hugging Face checkpoint (tool rows merged into the embeddings, registry in
    `config.json`) that loads with `from_pretrained`. Written to a temporary sibling directory
    first and renamed into place: a failure leaves nothing under the final name.

    Raises:
        AdapterError: the directory exists and is not empty (or is a file), or it cannot be
            written (naming the path and the cause).
    """
    registry(model)
    out = Path(save_directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdapterError(f"{out}: {'directory exists and is not empty' if out.is_dir() else 'exists and is not a directory'}; "
                           "choose a new directory")
    sync_rows(model)
    target = Path(os.path.abspath(out))  # "." has no name and no sibling
    tmp: Optional[Path] = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.toolken-merge-", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # a normal directory mode (mkdtemp makes 0700)
        model.save_pretrained(tmp, **save_kwargs)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # POSIX replaces an empty directory; anything else fails here
        tmp = None
    except OSError as e:
        raise AdapterError(f"{out}: cannot write the merged checkpoint ({type(e).__name__}: {e}); "
                           "nothing was written under that name") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
