// Schema normalization: the parsed schema document, `$ref` resolution and `allOf` merging.
//
// The converter and the oneOf prover never look at `allOf` or at a `$ref` with sibling
// keywords: flatten() turns such a schema into one merged object schema (or `false` when the
// parts contradict each other: disjoint types, two different `const`s). Merging rules: `type`
// by intersection (integer ∩ number = integer), `required` by union, `properties` by name with
// each part's `additionalProperties` constraining the names the other parts add, bounds by the
// tighter value, `enum` by intersection, several `anyOf` lists distributed into one (pairs of
// branches), differing `pattern`s all kept (the string must match each: leaf_languages.h's
// kMorePatterns), `items`/`propertyNames` schemas as their allOf, `patternProperties` by
// pattern (the same pattern: the allOf of its schemas; a part without a pattern's
// `additionalProperties` constraining the keys it matches, as for properties); anything else
// that differs is a CompileError.
//
// Ownership: every schema the normalizer makes (merged parts, `allOf` wrappers, booleans) lives
// in `owned_`, a deque, so the pointers handed out stay valid for the normalizer's lifetime;
// pointers into the document (`root()`) likewise. Pointers are JSON pointers as text ("#/a/b"),
// used in error messages.
#pragma once

#include <deque>
#include <string>
#include <unordered_set>
#include <vector>

#include "compile_error.h"
#include "json_value.h"

namespace toolken {

// Keywords that do not constrain instances (kept out of rule memo keys; ignored when merging).
const std::unordered_set<std::string>& annotation_keywords();
// JSON pointer escaping of one reference token (~ -> ~0, / -> ~1).
std::string escape_pointer(const std::string& s);
// Throws CompileError "msg (at ptr)".
[[noreturn]] void fail_at(const std::string& ptr, const std::string& msg);
// Rethrows `e` with " (at ptr)" appended unless its message already names a pointer (used where
// a deeper step, e.g. a state limit inside an automaton construction, cannot know where it is).
[[noreturn]] void rethrow_at(const CompileError& e, const std::string& ptr);
// True when object schema `s` has a keyword other than `except` that is not an annotation.
bool has_validation_siblings(const JsonValue& s, const char* except);
// Whether `k` constrains instances (a validation or applicator keyword, or kMorePatterns); any
// other member of a schema is an annotation or an unknown keyword, which validators ignore.
bool validation_keyword(const std::string& k);
// Whether string `text` matches regex `pattern` (JSON Schema semantics: a match anywhere unless
// anchored); CompileError when the pattern is not supported.
bool pattern_matches(const std::string& pattern, const std::string& text);
// The type names of a `type` keyword (a string or an array of strings); empty when absent.
std::vector<std::string> type_list(const JsonValue* t);

class SchemaNormalizer {
 public:
  // Parses `text`; throws CompileError when it is not JSON.
  explicit SchemaNormalizer(const std::string& text);
  const JsonValue& root() const { return root_; }
  // The schema `{}` (what `true` means), one shared object.
  const JsonValue* true_schema() const { return &true_schema_; }
  // Keeps `v` for the normalizer's lifetime and returns a stable pointer to it.
  JsonValue* own(JsonValue v);
  JsonValue* own_bool(bool b);
  // The schema a local `$ref` ("#", "#/json/pointer", %-escapes) points to; CompileError otherwise.
  const JsonValue* resolve_ref(const JsonValue& ref, const std::string& ptr);
  // Follows pure-$ref chains ({"$ref": ...} plus annotations only); `ptr` becomes the target's.
  const JsonValue* follow_refs(const JsonValue* s, std::string& ptr);
  // A schema without allOf and without $ref+siblings (may be a boolean or a pure $ref).
  const JsonValue* flatten(const JsonValue* s, const std::string& ptr, int depth);
  // $ref chains, allOf and $ref-with-siblings resolved (a boolean or an object).
  const JsonValue* resolved(const JsonValue* s, std::string ptr);
  // allOf(rest, branch) when `rest` has validation keywords, else `branch`.
  const JsonValue* with_siblings(const JsonValue* rest, const JsonValue* branch);
  // {"allOf": list} (or the single schema itself), by value.
  static JsonValue make_allof(const std::vector<const JsonValue*>& list);

 private:
  const JsonValue* merge(const std::vector<const JsonValue*>& parts, const std::string& ptr);
  void merge_alternatives(const std::vector<const JsonValue*>& parts, const std::string& ptr, JsonValue& out);
  void merge_pattern_properties(const std::vector<const JsonValue*>& parts, const std::string& ptr, JsonValue& out);
  JsonValue root_;
  JsonValue true_schema_;
  std::deque<JsonValue> owned_;
};

}  // namespace toolken
