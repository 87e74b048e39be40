// The known property names of an object schema as one deterministic trie over their JSON
// encodings (every spelling json_string_literal allows: raw UTF-8, short and \uXXXX escapes,
// quotes included), for the ordered key dispatch of object rules.
//
// Why: properties come in schema order and optional ones may be skipped, so after property i-1
// the next key is any name of [i, r_i] (r_i: the first required one). One Nfa branch per name
// and position makes every subset of the subset construction hold up to N names: quadratic in
// the number of properties. Instead the object rule walks this one trie carrying the interval
// [lo, hi] of names still allowed, narrowed at each node to the names below it (narrow()): the
// states (node, lo, hi) are exactly the minimal DFA's, Σ_u |keys(u)| of them (about 15 per
// short name), and each is built once.
//
// Layout: node 0 is the root (before the opening quote). edges(u): sorted, disjoint byte ranges
// to child nodes; keys(u): sorted indices of the names whose literal passes through u;
// final_key(u): the name whose literal ends at u, -1 for none (literals are prefix-free: a final
// node has no edges). Built by a subset construction over (name, literal-DFA state) pairs; a pair
// belongs only to the nodes on its own path, so the cost is linear in the literals' total size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "automaton.h"

namespace toolken {

class KeyTrie {
 public:
  // Throws CompileError past max_states trie nodes.
  KeyTrie(const std::vector<std::string>& names, size_t max_states);
  size_t size() const { return edges_.size(); }
  const std::vector<ByteEdge>& edges(uint32_t u) const { return edges_[u]; }
  const std::vector<uint32_t>& keys(uint32_t u) const { return keys_[u]; }
  int64_t final_key(uint32_t u) const { return final_[u]; }
  // Narrows [lo, hi] to the first and last names of keys(u) inside it; false when none is.
  bool narrow(uint32_t u, uint32_t& lo, uint32_t& hi) const;

 private:
  std::vector<std::vector<ByteEdge>> edges_;
  std::vector<std::vector<uint32_t>> keys_;
  std::vector<int64_t> final_;
};

}  // namespace toolken
