"""Tools and tool sets: the specs that become tool tokens.

A `Tool` is a name, a description and a JSON Schema object for its arguments (the OpenAI
function-calling shape). A `ToolSet` is an ordered collection with unique names; loaders turn
other formats into it:

- `ToolSet.from_openai` / `ToolSet.from_json`: OpenAI function specs (in memory / a JSON file);
- `ToolSet.from_functions`: Python callables (type hints + Google/NumPy/reST docstrings);
- `ToolSet.from_bfcl`: Berkeley Function-Calling Leaderboard records (Python, Java, JavaScript
  type names mapped to JSON Schema);
- `ToolSet.from_seal_tools`: the Seal-Tools corpus (`tool.jsonl.gz`).

Every schema is checked against its JSON Schema meta-schema and must describe a JSON object, so
a bad spec fails here with a `ToolSpecError` naming the tool and the field, not later inside the
grammar engine or the model. Loaders of formats whose parameter lists are closed (callables,
BFCL, Seal-Tools) emit `"additionalProperties": false` at the top level, so constrained decoding
cannot invent argument names.

Nothing here touches the network: `$schema` and `$ref` are resolved locally or refused (see
`toolken.tools.schema`), and `argument_validator(tool)` / `argument_error(tool, arguments)` are
the offline validators of a tool call's arguments.

Layout (imports go down this list only, so there is no cycle and no import inside a function):

- `io`: the one reader of JSON / JSON Lines / gzip data files (`load_json_records`,
  `load_json_document`, `iter_json_lines`), raising the caller's error class with the file and
  line;
- `schema`: JSON Schema offline: the draft a schema is read under, meta-schema checks, `$ref`
  checks, the depth limit (`MAX_SCHEMA_DEPTH`) and `offline_validator` for any schema;
- `spec`: `Tool`, name validation (`MAX_TOOL_NAME_LENGTH`, no bidi or invisible characters),
  the checks every `parameters` schema passes, `argument_validator` / `argument_error`, and
  `merge_unique` (one tool per name across records);
- one module per source format, each turning its format into `Tool`s and knowing nothing of
  `ToolSet`: `openai`, `python_callables` (signature + typing -> JSON Schema, and
  `parse_docstring`), `bfcl`, `seal_tools`;
- `toolset`: `ToolSet`, whose `from_*` classmethods delegate to the format modules, and
  `as_toolset`. `ToolSet` sits above the formats rather than in `spec` because its constructor
  takes OpenAI dicts and its classmethods call every loader: placed in `spec`, it would need
  imports hidden inside functions to avoid a cycle.

Everything public is re-exported here: `from toolken.tools import ToolSet` is the import to use.
"""
from .bfcl import BFCL_TYPES
from .io import PathLike, iter_json_lines, load_json_document, load_json_records
from .python_callables import parse_docstring
from .schema import MAX_SCHEMA_DEPTH, offline_validator
from .seal_tools import SEAL_TYPES, seal_tools_calls
from .spec import (
    EMPTY_PARAMETERS,
    MAX_TOOL_NAME_LENGTH,
    OnConflict,
    Tool,
    ToolLike,
    argument_error,
    argument_validator,
    validate_tool_name,
)
from .toolset import ToolSet, as_toolset

__all__ = [
    "BFCL_TYPES",
    "EMPTY_PARAMETERS",
    "MAX_SCHEMA_DEPTH",
    "MAX_TOOL_NAME_LENGTH",
    "SEAL_TYPES",
    "seal_tools_calls",
    "OnConflict",
    "PathLike",
    "Tool",
    "ToolLike",
    "ToolSet",
    "argument_error",
    "argument_validator",
    "as_toolset",
    "iter_json_lines",
    "load_json_document",
    "load_json_records",
    "offline_validator",
    "parse_docstring",
    "validate_tool_name",
]
