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

namespace toolken {

struct Grammar {
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
