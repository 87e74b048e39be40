// Byte-level automata used to build grammar rules.
//
// An Nfa holds states with three kinds of edges: byte ranges [lo, hi] -> state, rule calls
// (call rule R, then continue at state) and epsilon edges. Fragments (Frag) are sub-automata
// with one entry and one exit state; the exit has no outgoing edges until the fragment is
// embedded, which is what lets the combinators (seq/alt/star) just add epsilon edges.
//
// A Dfa is the subset construction of an Nfa fragment: state 0 is the start; byte edges are
// sorted, disjoint ranges; call edges are sorted by rule with one target per rule; epsilon
// edges are gone. "Deterministic" holds for bytes and for each callee separately; a byte edge
// and a call whose rule starts with that byte may still both apply (the matcher keeps a set of
// stacks for that).
//
// Implementations: automaton.cc (Nfa, determinize, trim, minimize, signatures, embed) and
// dfa_operations.cc (products, unions, repetition, quoting). JSON character encodings that
// build on these are in json_encoding.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "compile_error.h"

namespace toolken {

struct ByteEdge {
  uint8_t lo, hi;
  uint32_t to;
};
struct CallEdge {
  uint32_t rule;
  uint32_t to;
};

struct Frag {
  int start, end;
};

class Nfa {
 public:
  struct State {
    std::vector<ByteEdge> bytes;
    std::vector<CallEdge> calls;
    std::vector<int> eps;
  };
  explicit Nfa(size_t max_states = 2000000) : max_states_(max_states) {}

  int add_state();
  void add_bytes(int from, uint8_t lo, uint8_t hi, int to) { states_[from].bytes.push_back({lo, hi, static_cast<uint32_t>(to)}); }
  void add_eps(int from, int to) { states_[from].eps.push_back(to); }
  void add_call(int from, uint32_t rule, int to) { states_[from].calls.push_back({rule, static_cast<uint32_t>(to)}); }

  Frag empty();
  Frag byte_range(uint8_t lo, uint8_t hi);
  Frag literal(const std::string& bytes);
  Frag call(uint32_t rule);
  Frag seq(Frag a, Frag b);
  Frag seq(const std::vector<Frag>& parts);
  Frag alt(const std::vector<Frag>& options);  // no options: matches nothing
  Frag opt(Frag a);
  Frag star(Frag a);
  Frag plus(Frag a);
  // `gen` builds a fresh copy of the repeated fragment each call. max < 0 means unbounded.
  Frag repeat(const std::function<Frag()>& gen, int min, int max);

  const std::vector<State>& states() const { return states_; }
  size_t size() const { return states_.size(); }

 private:
  std::vector<State> states_;
  size_t max_states_;
};

struct Dfa {
  struct State {
    std::vector<ByteEdge> bytes;
    std::vector<CallEdge> calls;
    bool final = false;
  };
  std::vector<State> states;  // states[0] is the start
  bool has_calls() const;
  // Canonical text of the automaton (equal automata built the same way => equal signatures).
  std::string signature() const;
};

// Calls f(lo, hi, ea, eb) for each byte range [lo, hi] of 0..255 on which the sorted, disjoint
// edge lists [a, a_end) and [b, b_end) are both constant; ea / eb is the covering edge or nullptr.
// Stops early when f returns false. (The joint walk of two states' edges, range by range.)
template <class F>
void for_each_joint_range(const ByteEdge* a, const ByteEdge* a_end, const ByteEdge* b, const ByteEdge* b_end, F f) {
  for (int c = 0; c < 256;) {
    while (a != a_end && a->hi < c) ++a;
    while (b != b_end && b->hi < c) ++b;
    const ByteEdge* ea = a != a_end && a->lo <= c ? a : nullptr;
    const ByteEdge* eb = b != b_end && b->lo <= c ? b : nullptr;
    int end = 255;
    if (a != a_end) end = std::min(end, ea ? static_cast<int>(a->hi) : a->lo - 1);
    if (b != b_end) end = std::min(end, eb ? static_cast<int>(b->hi) : b->lo - 1);
    if (!f(c, end, ea, eb)) return;
    c = end + 1;
  }
}

// Dense ids 0, 1, ... for pairs of 32-bit values in order of first sight (open addressing,
// doubled at half load): the state table of product constructions.
class PairIndex {
 public:
  explicit PairIndex(size_t expected = 16);
  // The pair's id; `fresh` tells whether it was new.
  uint32_t intern(uint32_t x, uint32_t y, bool& fresh);
  const std::vector<std::pair<uint32_t, uint32_t>>& pairs() const { return pairs_; }
  size_t size() const { return pairs_.size(); }

 private:
  size_t slot_of(uint64_t key) const;
  std::vector<std::pair<uint32_t, uint32_t>> pairs_;
  std::vector<uint32_t> slots_;
};

// Throws the CompileError for an automaton over `max_states` states (one message for all).
[[noreturn]] void too_many_states(size_t max_states);

// Subset construction of `frag` (its end state is the only accepting one). Throws CompileError
// past `max_states`. The result is trimmed: every state can reach an accepting state, assuming
// every called rule can match something.
Dfa determinize(const Nfa& nfa, Frag frag, size_t max_states);
// Product of two call-free DFAs: accepts L(a) ∩ L(b), or L(a) \ L(b) when `subtract`.
Dfa intersect(const Dfa& a, const Dfa& b, bool subtract, size_t max_states);
// L(parts[0]) ∪ L(parts[1]) ∪ ... of call-free DFAs (one shared start when the first bytes are
// disjoint, which is the usual case of JSON leaves; a product otherwise).
// Consumes `parts`.
Dfa unite(std::vector<Dfa>& parts, size_t max_states);
// L(unit){min,max} built directly, copy by copy (max < 0: unbounded), without a subset
// construction. Returns false (out untouched) unless `unit` is call-free and prefix-free with its
// start not final and its final states without edges (one JSON character is).
bool repeat_dfa(const Dfa& unit, int min, int max, size_t max_states, Dfa& out);
// d := '"' L(d) '"' in place; false (d untouched) when a final state of d already reads '"'.
bool quote_dfa(Dfa& d);
// { w : b w in L(d) }: `d` restarted after reading byte `b` from its start (calls kept; states
// not reachable from there dropped). Empty when the start has no edge on `b`.
Dfa after_byte(const Dfa& d, uint8_t b);
// Merges equivalent states (Hopcroft's partition refinement, O(m log n)); keeps state 0 the
// start. An automaton whose start is equivalent to a dead state comes back with zero states.
Dfa minimize(const Dfa& d);
// Removes states that cannot reach an accepting state and those unreachable from the start.
// May leave zero states (empty language).
void trim(Dfa& d);

// Copies `dfa` into `nfa` (calls included) and returns the fragment; the fragment's end is a
// fresh state reached by epsilon from every accepting state.
Frag embed(Nfa& nfa, const Dfa& dfa);
// Runs call-free `dfa` over `bytes`: true when it ends in an accepting state.
bool dfa_accepts(const Dfa& dfa, const std::string& bytes);
}  // namespace toolken
