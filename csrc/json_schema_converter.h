// JSON Schema -> byte-level Grammar.
//
// Each schema reached through properties/items/$ref becomes a rule (memoized by schema node,
// so recursion through $ref works); within a rule, objects and arrays are inlined and every
// property value / array item is a call. All JSON leaves of a rule (strings, numbers,
// booleans, null, enum/const literals) are merged into one call-free *terminal* rule, which is
// what lets token masks inside strings and numbers be cached per vocabulary.
//
// The pieces, one file each: schema_normalizer (parsing, $ref resolution, allOf merging),
// leaf_languages (strings, numbers, literals, whitespace), one_of_prover (oneOf disjointness),
// json_schema_converter.cc (rules: objects, arrays, alternatives; the emission driver), and
// grammar_builder (rules -> flat Grammar).
//
// Semantics (documented in toolken/grammar.py as well):
//  - the grammar accepts a subset of the schema's instances, never more; anything the
//    converter cannot express exactly is a CompileError naming keyword and JSON pointer;
//  - known properties come in schema order, optional ones may be skipped, additional
//    properties (additionalProperties true/schema; absent = true unless strict) come after;
//    with any_order, properties come in any order, each known one at most once, tracked by a
//    seen-key set in the parser state (objects are then rules with guarded member calls);
//  - oneOf compiles only when its branches are provably mutually exclusive (then it equals
//    anyOf); otherwise a CompileError, unless one_of_any accepts a value matching any branch;
//  - allOf (and $ref with sibling keywords) is merged into one schema where possible;
//  - whitespace: JSON's four characters, at most max_whitespace in a row ("flexible"), none
//    ("compact"), or exactly json.dumps' ", " and ": " separators and nothing else ("canonical").
#pragma once

#include <string>

#include "counted_strings.h"
#include "grammar.h"

namespace toolken {

// Schema texts longer than this (UTF-8 bytes) are refused at once: 12x the largest MaskBench
// schema (83 KB); far larger ones could only end at a state limit after seconds of work.
constexpr size_t kMaxSchemaBytes = size_t(1) << 20;

struct SchemaOptions {
  bool flexible_whitespace = true;
  // json.dumps' separators exactly: ", " and ": ", no other whitespace (flexible_whitespace false)
  bool canonical_separators = false;
  int max_whitespace = 20;
  bool strict = false;                 // absent additionalProperties means false (objects with properties)
  bool one_of_any = false;             // compile oneOf as anyOf even when branches may overlap
  bool any_order = false;              // object properties in any order (seen-key sets), not schema order
  size_t max_rule_states = 50000;      // per rule DFA
  size_t max_total_states = 1000000;   // whole grammar
  int max_unrolled_length = kMaxUnrolledLength;  // string length bounds above this are counted (counted_strings.h)
  size_t max_schema_bytes = kMaxSchemaBytes;  // longer schema texts are refused before parsing
};

Grammar json_schema_to_grammar(const std::string& schema_json, const SchemaOptions& options);

}  // namespace toolken
