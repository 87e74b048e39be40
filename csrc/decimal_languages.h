// Exact decimal languages over JSON number text (no exponent): numbers between non-integer
// bounds (inclusive or exclusive) and multiples of a decimal with a finite expansion.
//
// A bound's value is read from its JSON source text, so 0.1 means the decimal 0.1 (not the
// nearest double): comparisons are on the instance's decimal value, digit by digit. Fractions
// are compared as digit strings padded with zeros (1.50 = 1.5): "at least F" and "at most F"
// are small automata over the fraction digits. multipleOf p/10^k accepts the texts whose value
// times 10^k is an integer multiple of p: a remainder automaton over the digits (p (k + 2)
// states). (Idea: integer ranges as digit automata are classic, e.g. xgrammar's and
// llguidance's integer-range regexes; the fraction comparison and remainder automata are
// toolken's.)
#pragma once

#include <cstdint>
#include <string>

#include "automaton.h"

namespace toolken {

// |value| = ip.frac (frac without trailing zeros), sign in neg (never set for zero).
struct Decimal {
  bool neg = false;
  uint64_t ip = 0;
  std::string frac;
  bool is_zero() const { return ip == 0 && frac.empty(); }
  bool is_integer() const { return frac.empty(); }
};

// Parses JSON number text; false when the integer part has more than 18 digits or the fraction
// more than kMaxFractionDigits (the caller then refuses or clamps).
constexpr size_t kMaxFractionDigits = 40;
bool parse_decimal(const std::string& text, Decimal& out);

// Non-negative numbers (no exponent) x with lo (<, <=) x (<, <=) hi; nullptr: no such bound
// (lo nullptr means x >= 0), and the negative side; signed: the whole number line.
Frag decimal_between(Nfa& n, const Decimal* lo, bool lo_excl, const Decimal* hi, bool hi_excl);

// Number texts -?int(.frac)? whose value is a multiple of m (m > 0); throws CompileError when
// the automaton would exceed max_states.
Dfa multiple_of_dfa(const Decimal& m, size_t max_states);

}  // namespace toolken
