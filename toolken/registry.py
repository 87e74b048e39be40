"""The tool registry: which tool owns which token id, with the specs and the init used.

It lives in `model.config.toolken` as plain JSON so that `save_pretrained` / `from_pretrained`
keep it, and so that serving engines that only see the config can still find the tool tokens.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .errors import NotExtendedError, ToolkenError
from .format import DEFAULT_TOKEN_FORMAT
from .tools import Tool, ToolSet

CONFIG_KEY = "toolken"
FORMAT_VERSION = 1

NOT_EXTENDED = ("this model has no tool registry (it was never extended): call "
                "`model, tokenizer = toolken.extend(model, tokenizer, tools)` first")


@dataclass
class ToolRegistry:
    """Tool name <-> token id, plus the specs and how each tool's rows were initialized.

    `base_vocab_size` is `len(tokenizer)` before the first tool was added and
    `base_fingerprint` a hash of that base vocabulary, so adapters can refuse a wrong base.
    """

    token_format: str = DEFAULT_TOKEN_FORMAT
    tools: ToolSet = field(default_factory=ToolSet)
    token_ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    init: dict[str, str] = field(default_factory=dict)
    base_vocab_size: int = 0
    base_fingerprint: str = ""
    #: state-dict prefixes of base modules trained with the tool rows (`toolken.train_tool_tokens`'
    #: top layers and final norm): `toolken.save` stores them with the rows, `toolken.load` restores them
    trained_modules: tuple[str, ...] = ()

    # -- lookups -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.token_ids

    @property
    def names(self) -> list[str]:
        return self.tools.names

    @property
    def tool_token_ids(self) -> list[int]:
        """Token ids in tool order."""
        return [self.token_ids[n] for n in self.tools.names]

    def id_of(self, name: str) -> int:
        try:
            return self.token_ids[name]
        except KeyError:
            raise ToolkenError(f"tool {name!r} is not registered on this model; known tools: "
                               f"{', '.join(self.names[:10])}{'...' if len(self) > 10 else ''}") from None

    def name_of(self, token_id: int) -> Optional[str]:
        return self._by_id().get(int(token_id))

    def _by_id(self) -> dict[int, str]:
        return {i: n for n, i in self.token_ids.items()}

    def subset(self, names: Optional[Iterable[str]]) -> list[str]:
        """Validate a list of enabled tool names (None = all) and return it."""
        if names is None:
            return self.names
        out = []
        for n in names:
            n = n.name if isinstance(n, Tool) else n
            self.id_of(n)
            out.append(n)
        return out

    # -- (de)serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "token_format": self.token_format,
            "base_vocab_size": self.base_vocab_size,
            "base_fingerprint": self.base_fingerprint,
            "tools": [
                {**t.to_dict(), "token": self.tokens[t.name], "token_id": self.token_ids[t.name],
                 "init": self.init.get(t.name, "")}
                for t in self.tools
            ],
            **({"trained_modules": list(self.trained_modules)} if self.trained_modules else {}),
        }

    def copy(self) -> "ToolRegistry":
        """A copy whose dicts can be changed without touching this one (tools are immutable)."""
        return ToolRegistry(self.token_format, ToolSet(list(self.tools)), dict(self.token_ids), dict(self.tokens),
                            dict(self.init), self.base_vocab_size, self.base_fingerprint, tuple(self.trained_modules))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToolRegistry":
        tools = d.get("tools", [])
        return cls(
            token_format=d.get("token_format", DEFAULT_TOKEN_FORMAT),
            tools=ToolSet(Tool(t["name"], t.get("description", ""), t.get("parameters")) for t in tools),
            token_ids={t["name"]: int(t["token_id"]) for t in tools},
            tokens={t["name"]: t["token"] for t in tools},
            init={t["name"]: t.get("init", "") for t in tools},
            base_vocab_size=int(d.get("base_vocab_size", 0)),
            base_fingerprint=d.get("base_fingerprint", ""),
            trained_modules=tuple(d.get("trained_modules", ())),
        )


def registry(model_or_config: Any) -> ToolRegistry:
    """The registry of an extended model (or its config). Raises `NotExtendedError` if none."""
    reg = find_registry(model_or_config)
    if reg is None:
        raise NotExtendedError(NOT_EXTENDED)
    return reg


def find_registry(model_or_config: Any) -> Optional[ToolRegistry]:
    """The registry, or None when the model was never extended."""
    if isinstance(model_or_config, ToolRegistry):
        return model_or_config
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, dict):
        d = config.get(CONFIG_KEY)
        return ToolRegistry.from_dict(d) if d else None
    d = getattr(config, CONFIG_KEY, None)
    if not d:
        return None
    cached = _PARSED.get(id(config))
    if cached is None or cached[0]() is not config or cached[1] is not d:
        _remember(config, d, ToolRegistry.from_dict(d))  # parse once per registry dict
        cached = _PARSED[id(config)]
    return cached[2].copy()


# id(config) -> (weakref to config, the registry dict it holds, that dict parsed). Parsing
# re-validates every tool schema, too slow to repeat per call with thousands of tools; configs
# are unhashable, hence the id key checked against a weak reference. `set_registry` always
# stores a new dict, so a stale entry is never returned.
_PARSED: dict[int, tuple[Any, dict, ToolRegistry]] = {}


def _remember(config: Any, d: dict, reg: ToolRegistry) -> None:
    for k in [k for k, v in _PARSED.items() if v[0]() is None]:
        del _PARSED[k]
    _PARSED[id(config)] = (weakref.ref(config), d, reg.copy())


def set_registry(model: Any, reg: ToolRegistry) -> None:
    d = reg.to_dict()
    setattr(model.config, CONFIG_KEY, d)
    _remember(model.config, d, reg)


def vocab_fingerprint(tokenizer: Any, size: Optional[int] = None) -> str:
    """SHA-256 over the first `size` tokens of the vocabulary (id order), so adapters can check
    they are loaded onto the base they were trained on."""
    vocab = tokenizer.get_vocab()
    n = len(tokenizer) if size is None else size
    by_id = sorted(((i, t) for t, i in vocab.items() if i < n))
    h = hashlib.sha256()
    for i, t in by_id:
        h.update(f"{i}\t{t}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]
