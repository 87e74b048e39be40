// The compiled byte-level grammar: rules whose bodies are DFAs over bytes and rule calls.
//
// Layout (all node ids are global; rule r owns nodes [first_node, first_node + num_nodes),
// its start is first_node):
//   byte_begin[n]..byte_begin[n+1]  : n's byte edges in byte_edges (sorted, disjoint ranges)
//   call_begin[n]..call_begin[n+1]  : n's call edges in call_edges ({callee rule, return node})
//   is_final[n]                     : the rule may end (return to its caller) at n
//   is_ws_loop[n]                   : n loops to itself on the four JSON whitespace bytes
//                                     (structural whitespace); when max_ws > 0 the matcher
//                                     allows at most max_ws such bytes in a row (see matcher.h)
// A rule is *terminal* when none of its nodes has a call edge (JSON leaves: strings, numbers,
// literals); terminal rules carry a signature (their DFA's canonical text) so per-node token
// masks can be shared across grammars of one vocabulary.
//
//
// Object guards (properties in any order, min/maxProperties): an object compiled with a key
// set is its own rule whose members are calls of *guarded* rules (rule_guard[r] != kNoGuard):
// calling member rule j is allowed only while key j is not in the caller's set of seen keys
// and the counts can still meet required/minProperties/maxProperties; calling the close rule
// ('}') only when they are met. The set lives in the parser state (stepper.h), not in the
// automaton, so the grammar stays linear in the number of properties. An object may also require
// exactly one of several groups of keys (Object::groups, from a oneOf of `required`s).
//
// Counted strings (strings whose length bounds are too long to unroll, counted_strings.h): a
// counted rule is terminal, rule_counter[r] indexes its CountedString in counters (state s of
// the counter is node first_node + s), and the matcher counts the characters read in it
// (Top::count, stepper.h), entering a node only while the string can still end within its bounds.
//
// Invariants established by GrammarBuilder::build (grammar_builder.h):
//   - every node left reachable from a rule start can reach a final node (no dead ends), and
//     every call targets a rule that matches at least one string;
//   - no rule can reach a call to itself without consuming a byte (no left recursion), so the
//     matcher's closure always terminates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "automaton.h"
#include "counted_strings.h"

namespace toolken {

constexpr uint32_t kNoGuard = 0xFFFFFFFFu;
constexpr uint32_t kUnbounded = 0xFFFFFFFFu;
constexpr uint32_t kNoCounter = 0xFFFFFFFFu;

struct Grammar {
  // What calling a guarded rule requires of (and adds to) the caller's seen-key set.
  struct Guard {
    // kMore: some member (known or additional) may still be called; guards the separator and
    // opening quote the object reads before its members fan out (json_schema_converter.cc).
    enum Kind : uint8_t { kMember, kAdditional, kClose, kMore } kind;
    uint32_t object;  // index into objects
    uint32_t key;     // kMember: key index within the object
  };
  // One object with a seen-key set. Counts are of members (known and additional).
  struct Object {
    uint32_t num_keys = 0;
    std::vector<uint64_t> required;  // bitset over keys
    uint32_t num_required = 0;
    uint32_t min = 0, max = kUnbounded;
    uint32_t avail_known = 0;  // known keys whose member rule matches something
    std::vector<uint64_t> live;  // bitset over keys whose member rule matches something (kMore asks them)
    bool more = false;         // additional/pattern members possible (unbounded supply)
    // oneOf of key groups (a oneOf whose branches only require keys, json_schema_converter.cc):
    // the object closes only with exactly one group's keys all seen. Group g is the bitset
    // groups[g * words(), (g + 1) * words()); empty: no such constraint.
    std::vector<uint64_t> groups;
    uint32_t num_groups = 0;
    uint32_t words() const { return (num_keys + 63) / 64; }
    bool is_required(uint32_t k) const { return (required[k >> 6] >> (k & 63)) & 1; }
    const uint64_t* group(uint32_t g) const { return groups.data() + static_cast<size_t>(g) * words(); }
  };
  std::vector<uint32_t> rule_guard;  // per rule: index into guards, or kNoGuard
  std::vector<Guard> guards;
  std::vector<Object> objects;
  struct Rule {
    uint32_t first_node = 0, num_nodes = 0;
    bool terminal = false;
    std::string name;       // JSON pointer of the schema it came from (for debugging)
    std::string signature;  // terminal rules only
  };
  std::vector<uint32_t> byte_begin, call_begin;
  std::vector<ByteEdge> byte_edges;
  std::vector<CallEdge> call_edges;
  std::vector<uint8_t> is_final;
  std::vector<uint8_t> is_ws_loop;
  std::vector<uint32_t> node_rule;
  uint32_t max_ws = 0;  // 0: no bound
  std::vector<uint32_t> rule_counter;   // per rule: index into counters or kNoCounter (empty: none)
  std::vector<CountedString> counters;  // their automata are the rules' nodes (dfa left empty)
  // The counter of node n's rule, or nullptr.
  const CountedString* counter_of(uint32_t n) const {
    if (counters.empty()) return nullptr;
    const uint32_t c = rule_counter[node_rule[n]];
    return c == kNoCounter ? nullptr : &counters[c];
  }
  std::vector<Rule> rules;
  uint32_t root_rule = 0;

  size_t num_nodes() const { return is_final.size(); }
  uint32_t rule_start(uint32_t r) const { return rules[r].first_node; }
  // Next node on byte `b` from `n`, or -1 (byte edges are deterministic).
  int64_t next(uint32_t n, uint8_t b) const {
    for (uint32_t i = byte_begin[n], e = byte_begin[n + 1]; i < e; ++i) {
      const ByteEdge& be = byte_edges[i];
      if (b < be.lo) return -1;
      if (b <= be.hi) return be.to;
    }
    return -1;
  }
  static bool is_json_ws(uint8_t b) { return b == ' ' || b == '\n' || b == '\t' || b == '\r'; }
  bool has_bytes(uint32_t n) const { return byte_begin[n] != byte_begin[n + 1]; }
  size_t memory_bytes() const;
  std::string to_string() const;  // human-readable dump for debugging
};

}  // namespace toolken
