// Equivalence classes of the states of one call-free (terminal) rule, used to derive one
// node's token mask from another's (compiled_grammar.h, CompiledGrammar::compute_derived).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <utility>
#include <vector>

#include "grammar.h"

namespace toolken {

// Equivalences of the states of one call-free rule, for derived masks. States s, t of class
// cls[j] agree on every string of at most j bytes (each prefix dead in both or alive in both,
// final in both or neither, with bytes left in both or neither), so a trie subtree of height <= j
// gets the same token outcomes from s and t. cls holds Moore's rounds 0 and 1 (round 1 picks each
// state's reference); the exact pair depths below answer deeper questions, and only when they
// overflow are the rounds continued (up to a fixed depth).
struct RuleClasses {
  std::vector<std::vector<uint32_t>> cls;  // cls[j][local state], rounds 0..cls.size()-1
  bool fixpoint = false;                   // cls.back() is stable: valid at every depth
  std::vector<uint32_t> rep;               // local -> reference (>= num_own: canonical state - num_own); empty: none
  uint32_t num_own = 0;                    // the rule's states; then the canonical rule's, in the joint numbering
  uint32_t canonical_first = 0;            // first node of the canonical rule in its grammar
  // Exact agreement depth of the pairs a derived walk meets (sorted by a << 32 | b): the largest j
  // such that a and b agree on every string of at most j bytes, kAgreeAlways for all of them.
  // Unlike cls it has no depth limit, which bounded strings need (their states agree with the
  // string body up to the remaining length). pair_depth_quote_free: the same over strings without
  // '"', for trie subtrees without a quote (a minLength string agrees with the body on those).
  // Empty when there were too many pairs.
  static constexpr int32_t kAgreeAlways = 0x7FFFFFFF;
  std::vector<std::pair<uint64_t, int32_t>> pair_depth, pair_depth_quote_free;
  static bool agree(const std::vector<std::pair<uint64_t, int32_t>>& table, uint64_t key, size_t depth) {
    auto it = std::lower_bound(table.begin(), table.end(), std::make_pair(key, INT32_MIN));
    return it != table.end() && it->first == key && (it->second == kAgreeAlways || static_cast<int64_t>(it->second) >= static_cast<int64_t>(depth));
  }
  // a and b agree on the strings of a trie subtree of height `depth` (without '"' if quote_free)
  bool equivalent(uint32_t a, uint32_t b, size_t depth, bool quote_free = false) const {
    const uint64_t key = (static_cast<uint64_t>(a) << 32) | b;
    if (agree(pair_depth, key, depth) || (quote_free && agree(pair_depth_quote_free, key, depth))) return true;
    if (depth >= cls.size()) {
      if (!fixpoint) return false;
      depth = cls.size() - 1;
    }
    return cls[depth][a] == cls[depth][b];
  }
  size_t memory_bytes() const {
    size_t b = sizeof(*this) + rep.size() * 4 + (pair_depth.size() + pair_depth_quote_free.size()) * sizeof(pair_depth[0]);
    for (const auto& c : cls) b += c.size() * 4;
    return b;
  }
};

// Fills `rc` for rule `r` of `g`: classes over the rule's states followed by the states of the
// canonical string rule of `canonical` (nullptr: none), so that a state can take a canonical
// state as its reference; rep: the canonical state of the same round-1 class, else the rule's
// lowest such state, else for a state whose next bytes are almost a string body's, the
// canonical body state; then the exact pair depths of the pairs (state, reference).
void build_rule_classes(const Grammar& g, uint32_t r, const Grammar* canonical, RuleClasses& rc);

}  // namespace toolken
