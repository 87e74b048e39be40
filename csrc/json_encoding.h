// JSON string characters and numerals as automata.
//
// For a set of code points, json_char builds the fragment matching one *encoded* JSON string
// character (raw UTF-8 where JSON allows it, short escapes, \uXXXX for control and non-ASCII
// characters, surrogate pairs above U+FFFF) so that patterns, lengths, enums and property names
// all speak the same encoding language (exact intersections/differences of their DFAs).
// Code point sets are sorted, disjoint, inclusive ranges (after cp_normalize).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "automaton.h"

namespace toolken {

using CpRanges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive, sorted, disjoint after normalize
constexpr uint32_t kMaxCodePoint = 0x10FFFF;
CpRanges cp_normalize(CpRanges r);
CpRanges cp_complement(const CpRanges& r);
CpRanges cp_intersect(const CpRanges& a, const CpRanges& b);
CpRanges cp_subtract(const CpRanges& a, const CpRanges& b);
bool cp_contains(const CpRanges& r, uint32_t cp);

// One JSON-encoded character from `set` (see the header comment). Empty set: matches nothing.
Frag json_char(Nfa& nfa, const CpRanges& set);
// The exact JSON string literal (with quotes) of UTF-8 `value`, in every encoding json_char allows;
// without the opening quote when `open_quote` is false (after a quote read elsewhere).
Frag json_string_literal(Nfa& nfa, const std::string& value, bool open_quote = true);
// Canonical decimal numerals (no sign, no leading zeros) of the integers in [lo, hi];
// hi_unbounded ignores hi. Bounds must be <= 10^18.
Frag decimal_range(Nfa& nfa, uint64_t lo, uint64_t hi, bool hi_unbounded);

}  // namespace toolken
