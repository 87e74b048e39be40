// Strings whose length bounds are counted in the parser state instead of unrolled into states.
//
// A `maxLength` (or `minLength`) string of up to kMaxUnrolledLength characters is an automaton
// with one copy of the character automaton per position (leaf_languages.cc). Beyond that, the
// string is a *counted rule*: the automaton of its characters without the bounds, in which the
// states reached by completing a character are marked, and the matcher counts the characters
// read (Top::count, stepper.h), as it counts structural whitespace. So a string with
// maxLength 65535 costs the states of its pattern, not 65535 copies.
//
// Exactness needs more than "count <= max" on every step: a pattern may leave only some lengths
// to finish with (`^(ab)+$` finishes after an even number of characters), so a state is entered
// only if the rule can still end within the bounds from there. For that each state s keeps the
// set S(s) of character counts with which it can reach the end (the closing quote), and the
// parser enters s with count k only when S(s) meets [min - k, max - k] (CountedString::live).
// Every state the parser keeps can then finish, and a token mask built from such states admits
// exactly the tokens a validator would.
//
// S(s) is computed once per rule. Without a maxLength only "some completion >= min - k" is ever
// asked, which the hull [shortest, longest completion] answers. With one, the sets B_l = {s : l
// in S(s)} are computed for l = 0, 1, ...: B_l is a fixed function of B_{l-1} (a step back over
// one character), so the sequence is ultimately periodic, and it is run until a set repeats
// (B_l = B_j: prefix j, period l - j). Each S(s) is then its lengths below the prefix plus its
// residues modulo the period, as sorted intervals. An analysis over its work budget (a period
// longer than the budget allows) is a compile error, never a wrong mask.
// (Idea: counters instead of unrolling, as the matcher bounds whitespace runs; llguidance's
// lexer keeps lengths in its state too. The ultimately periodic completion sets are toolken's:
// the classic result that unary regular languages are ultimately periodic.)
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "automaton.h"

namespace toolken {

// Bounds at or under this many characters are unrolled; above it (maxLength or minLength) the
// string is counted. The default of SchemaOptions::max_unrolled_length. Unrolling costs ~24
// states per character and dominated the compile tail: on all of maskbench-dev, counting above
// 64 instead of 1000 cut toolken's TTFM p99 from 1.59x llguidance's to 1.01x, with mask times
// unchanged (README).
constexpr int kMaxUnrolledLength = 64;
// Where a plain automaton is needed (propertyNames: keys are matched by their DFA, no counter),
// bounds up to this many characters are still unrolled.
constexpr int kMaxDfaUnrolledLength = 1000;
// "No upper bound" for character counts (a count can never reach it: 2^62 characters).
constexpr uint64_t kNoMaxLength = uint64_t(1) << 62;

struct LengthInterval {
  uint64_t lo, hi;  // inclusive; hi == kNoMaxLength: no end
};

// A counted rule: `dfa` is '"' content '"' (call-free, trimmed, state 0 the start, the one
// final state the one after the closing quote); completes[s]: entering s completes one
// character; S(s) (see above): lengths[begin[s], mid[s]) the lengths below `prefix` (without a
// maxLength: the hull), lengths[mid[s], begin[s + 1]) the residues r (length prefix + r +
// i * period, i >= 0) when period > 0; sorted, disjoint intervals.
struct CountedString {
  Dfa dfa;
  std::vector<uint8_t> completes;
  std::vector<uint32_t> begin, mid;
  std::vector<LengthInterval> lengths;
  uint64_t min = 0, max = kNoMaxLength;
  uint64_t prefix = 0, period = 0;
  uint64_t max_lo = 0;  // the largest shortest completion over all states
  // Counts k with k + zone_from <= min see every S(s) only through its residues (or, without a
  // maxLength, through whether it is infinite); full_window: the bounds' window [min - k, max - k]
  // then holds a whole period, so whether s is live no longer depends on k at all.
  uint64_t zone_from = 0;
  bool full_window = false;
  // Every state but the final one can complete with every length from its shortest on (a
  // string without a pattern): minLength then rejects only at the closing quote, so a count
  // below min changes the mask only for tokens that read a '"' (CompiledGrammar::compute_counted).
  bool min_at_quote_only = false;
  // Whether a state entered with count k can still end within [min, max].
  bool live(uint32_t s, uint64_t k) const;
};

// How `length_language` ended.
enum class CountedKind {
  kEmpty,      // no string of the content has a length within the bounds
  kUncounted,  // every string of the content has a length within the bounds: `plain` is the
               // quoted content, no counter needed
  kCounted,    // `counted` holds the counted rule
};

// The JSON strings (quotes included) of call-free `content` (the encoded characters between the
// quotes, e.g. a pattern's automaton; nullptr: any characters) with min <= length <= max
// characters (max = kNoMaxLength: none). Throws CompileError (without a pointer) when the
// length structure cannot be tracked exactly or exceeds `max_states` / the work budget.
CountedKind length_language(const Dfa* content, uint64_t min, uint64_t max, size_t max_states, Dfa& plain,
                            CountedString& counted);

}  // namespace toolken
