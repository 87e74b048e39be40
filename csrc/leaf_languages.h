// The languages of JSON leaves as automata: strings (minLength/maxLength, pattern, format),
// numbers and integers (minimum/maximum, exclusive bounds), enum/const literals, and the
// structural whitespace between tokens.
//
// Strings are built as DFAs over their JSON encoding, quotes included (string_dfa); numbers and
// literals as Nfa fragments that the converter determinizes together with the rest of a rule's
// leaves. Length bounds up to SchemaOptions::max_unrolled_length are unrolled into the DFA;
// larger ones make the string a counted rule (counted_strings.h). Every language is a subset of
// the schema's instances, never more: numeric bounds beyond ±(10^18 - 1) are clamped inward.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "automaton.h"
#include "counted_strings.h"
#include "json_schema_converter.h"
#include "json_value.h"

namespace toolken {

// Where allOf merging (schema_normalizer) keeps the `pattern`s of its parts beyond the first: an
// array of regexes, each of which a string must match too.
constexpr const char* kMorePatterns = "$toolken:patterns";
// Automata up to this size are minimized (Hopcroft, O(m log n)); larger ones are used as built.
constexpr size_t kMaxMinimizeStates = 20000;
constexpr uint64_t kMaxBound = 999999999999999999ull;  // 10^18 - 1
// Deepest nesting of schemas inlined into one rule, and of enum/const values.
constexpr int kMaxInlineDepth = 64;

// One numeric bound of a schema: minimum/maximum, or their exclusive forms (draft 4 booleans
// included); `src` is the keyword's value.
struct Bound {
  bool present = false;
  bool exclusive = false;
  double value = 0;
  const JsonValue* src = nullptr;
};

class LeafLanguages {
 public:
  explicit LeafLanguages(const SchemaOptions& o) : opts_(o) {}
  // [ \t\n\r]* (flexible whitespace; the matcher bounds the run length) or nothing (compact,
  // canonical).
  Frag ws(Nfa& nfa);
  // What follows a ',' or ':' separator: one space (canonical: json.dumps' ", " and ": "), else
  // the same as ws().
  Frag after_separator(Nfa& nfa);
  // The JSON-string language of string schema `s` (quotes included): a DFA, or a counted rule
  // when a length bound is above max_unrolled_length and constrains the strings.
  struct StringLanguage {
    bool counted = false;
    Dfa dfa;                // !counted (no states: no string)
    CountedString counter;  // counted
  };
  // Bounds up to `unroll_limit` characters are unrolled (default: SchemaOptions::max_unrolled_length).
  StringLanguage string_language(const JsonValue& s, const std::string& ptr, int unroll_limit = -1);
  // string_language as a DFA; a counted string is a CompileError naming `what` (e.g. keys).
  Dfa string_dfa(const JsonValue& s, const std::string& ptr, const char* what);
  // Whether some string is valid under both string schemas `a` and `b` (false only when none
  // is); throws CompileError when that cannot be decided within the limits.
  bool strings_overlap(const JsonValue& a, const JsonValue& b, const std::string& ptr);
  // Whether a disjointness that strings_overlap found holds for Python's `re` too: toolken's
  // regexes accept a subset of what `re` does (regex.h); each side's patterns, widened to a
  // superset of Python's reading, must still miss the other side (or, where a pattern cannot be
  // widened, the other side must admit only ASCII characters other than '\r' '\n', the only
  // ones on which the readings differ). False: not shown.
  bool regexes_read_alike(const JsonValue& a, const JsonValue& b, const std::string& ptr);
  // Numbers (integer: integers only) within the bounds of `s`.
  Frag number_frag(Nfa& n, const JsonValue& s, const std::string& ptr, bool integer);
  // The JSON texts of literal `v` (numbers in their equal spellings, strings in every encoding).
  Frag literal_frag(Nfa& nfa, const JsonValue& v, int depth);
  // Whether enum/const value `v` also satisfies the other keywords of `s` (type, lengths,
  // pattern, bounds).
  bool literal_allowed(const JsonValue& v, const JsonValue& s, const std::vector<std::string>& types);
  // The `pattern` of string schema `s` and the ones allOf merging added (kMorePatterns).
  static std::vector<std::string> patterns_of(const JsonValue& s, const std::string& ptr);
  // The lower and upper bound of number schema `s`.
  static void read_bounds(const JsonValue& s, const std::string& ptr, Bound& lo, Bound& hi);
  // A non-negative count keyword (minLength, maxItems, ...): false when absent; rounded inward.
  static bool get_count(const JsonValue& s, const char* key, const std::string& ptr, int64_t& out);
  // minLength / maxLength exactly (a maxLength no string can reach, 2^62 or more, is kNoMaxLength).
  static void get_lengths(const JsonValue& s, const std::string& ptr, uint64_t& min, uint64_t& max);

 private:
  static std::string json_type_of(const JsonValue& v);
  static std::vector<std::string> number_texts(const JsonValue& v);
  static std::string format_regex(const std::string& fmt, const std::string& ptr);
  static const Dfa& any_char_dfa();
  // The content automaton of `s`'s pattern(s) and format (between the quotes); false: none.
  bool string_content(const JsonValue& s, const std::string& ptr, Dfa& out);
  Dfa unrolled_string(const Dfa* content, uint64_t min, uint64_t max);
  Frag frac_any(Nfa& n);
  Frag frac_zero(Nfa& n);
  Frag frac_nonzero(Nfa& n);
  Frag magnitude(Nfa& n, uint64_t L, bool lo_excl, bool has_hi, uint64_t H, bool hi_excl);
  // number_frag without multipleOf (no_exponent: unbounded numbers without exponents too)
  Frag number_base(Nfa& n, const JsonValue& s, const std::string& ptr, bool integer, bool no_exponent);
  Frag decimal_bounds(Nfa& n, const Bound& lo, const Bound& hi, const std::string& ptr);
  SchemaOptions opts_;
};

}  // namespace toolken
