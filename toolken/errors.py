"""Every error a user can cause is a `ToolkenError`; the message names the tool, field, token or
file at fault and says what to do."""


class ToolkenError(Exception):
    """Base class of all toolken errors."""


class ToolSpecError(ToolkenError, ValueError):
    """A tool specification is invalid (bad name, schema, duplicate, ...)."""


class ExtendError(ToolkenError, ValueError):
    """`toolken.extend` cannot add the tools (token does not encode to one id, changed spec, ...)."""


class AdapterError(ToolkenError, OSError):
    """Saving or loading tool rows failed (mismatched base, corrupt or truncated file, ...)."""


class GrammarError(ToolkenError, ValueError):
    """A JSON Schema cannot be compiled (unsupported keyword, invalid schema, limit exceeded)."""


class DecodingError(ToolkenError, ValueError):
    """Constrained decoding was asked something it cannot do (unknown tool or mode, ...)."""


class DataError(ToolkenError, ValueError):
    """Training or evaluation data is malformed (unknown tool in a record, bad file, ...)."""


class NotExtendedError(ToolkenError, ValueError):
    """The model has no tool registry: it was never extended with `toolken.extend` (or is not the
    extended model)."""
