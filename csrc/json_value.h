// A minimal JSON document model and parser for reading schemas (RFC 8259).
//
// Layout: a JsonValue is a tagged node; objects keep their members in source order (schema
// order matters: known properties are emitted in that order). Numbers keep both their source
// text (for exact literals in enum/const) and a double (for bounds).
// Invariant: parse() either returns a complete tree or throws JsonParseError; nesting deeper
// than kMaxJsonDepth is rejected so that no input can exhaust the C++ stack. Strings must be
// well-formed UTF-8 without surrogates, raw or \u-escaped (a lone surrogate is an error, not
// replaced), so every string of the tree is valid UTF-8 of Unicode characters.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace toolken {

constexpr int kMaxJsonDepth = 256;

// What went wrong (at byte offset N) and where: `path` holds the reference tokens of the member
// or item being parsed, innermost first (pointer() gives "#/a/0/b").
struct JsonParseError : std::runtime_error {
  enum class Kind { kSyntax, kTooDeep, kEncoding };
  using std::runtime_error::runtime_error;
  Kind kind = Kind::kSyntax;
  std::vector<std::string> path;
  std::string pointer() const;  // "#" + "/" + escaped tokens, outermost first
};

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string text;  // string value (decoded UTF-8) or number source text
  std::vector<JsonValue> items;                              // array elements
  std::vector<std::pair<std::string, JsonValue>> members;    // object members, source order

  bool is_object() const { return kind == Kind::kObject; }
  bool is_array() const { return kind == Kind::kArray; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kNumber; }
  bool is_bool() const { return kind == Kind::kBool; }
  // True when the number's value is a mathematical integer (1, 1.0, 1e2).
  bool is_integral() const;
  // Member lookup (last one wins, as in Python's json); nullptr if absent or not an object.
  const JsonValue* get(const std::string& key) const;
  // Compact canonical serialization (used for cache keys and error messages).
  std::string dump() const;
};

JsonValue parse_json(const std::string& text);

// Appends the UTF-8 encoding of code point `cp` to `out`.
void append_utf8(std::string& out, uint32_t cp);
// Decodes UTF-8 `s` into code points; throws JsonParseError on malformed input.
std::vector<uint32_t> decode_utf8(const std::string& s);

}  // namespace toolken
