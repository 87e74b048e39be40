// The run-time side: a nondeterministic pushdown parser over the byte grammar, compiled
// grammars with their lazily computed per-node masks, and the per-sequence Matcher.
//
// Parser state: a set of stacks. A stack is a Top {node, frame}: the current node (one that
// has byte edges) and a frame id into a frame arena; Frame {ret, parent} is a return address
// (the node after the call edge in the caller) and the caller's own frame. Frame 0 is the root
// sentinel (returning through it means the whole value is complete: `ended`); frame 1 is the
// "unknown caller" sentinel used when computing context-independent masks (returning through
// it sets `bottom_popped`). Frames are append-only; a state stays valid as long as the arena
// is not truncated below the size it had when the state was made.
//
// Masks (after xgrammar's adaptive token mask cache and llguidance's trie walk): for each top
// {n, f}, mask |= NodeMask(n).accepted, then each uncertain suffix of NodeMask(n) is run from
// the state obtained by returning through f; a suffix that survives sets its tokens' bits.
// Stop tokens are allowed exactly when `ended`.
//
// Masks of call-free (terminal) nodes are either walked over the whole trie or derived from a
// reference node's mask (CompiledGrammar::compute_derived): a node of the same rule with the same
// one-byte behaviour, or a node of the vocabulary-shared {"type": "string"} rule; a paired walk
// visits only the trie subtrees whose outcome can differ (RuleClasses bounds how deep two states
// agree), which is what keeps maxLength strings and additional-property keys cheap.
//
// Whitespace bound: a top at a whitespace-loop node counts the whitespace bytes consumed in a
// row to reach and stay at it; a byte that would exceed Grammar::max_ws is rejected. Only a token's *leading*
// whitespace depends on that count, so a top with count k uses NodeMask(n) minus the tokens
// whose leading whitespace exceeds max_ws - k.
#pragma once

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "grammar.h"
#include "vocabulary.h"

namespace toolken {

struct Frame {
  uint32_t ret, parent;
};
struct Top {
  uint32_t node, frame;
  uint32_t ws;  // structural whitespace bytes just consumed in a row at `node` (is_ws_loop)
};
constexpr uint32_t kRootFrame = 0;
constexpr uint32_t kBottomFrame = 1;

struct ParseState {
  std::vector<Top> tops;
  bool ended = false;          // the root rule returned: the value is complete
  bool bottom_popped = false;  // returned through the unknown-caller frame
  bool alive() const { return !tops.empty() || ended || bottom_popped; }
  void clear() {
    tops.clear();
    ended = bottom_popped = false;
  }
};

// Parser mechanics over one grammar with its own frame arena (not thread-safe; one per user).
class Stepper {
 public:
  explicit Stepper(const Grammar* g);
  // out = states reached from `in` by byte `b` (closed under calls and returns).
  void step(const ParseState& in, uint8_t b, ParseState& out);
  // out = closure of stack {node, frame}.
  void start(uint32_t node, uint32_t frame, ParseState& out);
  // out = state after returning through frame `f` (f must be a real frame).
  void pop(uint32_t f, ParseState& out);
  std::vector<Frame> frames;

 private:
  void closure(uint32_t node, uint32_t frame, uint32_t ws, ParseState& out);
  bool visit(uint32_t node, uint32_t frame);
  const Grammar* g_;
  // open-addressing set of visited (node, frame) keys for one step
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> stamp_;
  uint32_t gen_ = 1;
  size_t count_ = 0;
  std::vector<std::pair<uint32_t, uint32_t>> work_;
};

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

class CompiledGrammar {
 public:
  // canonical: this is the {"type": "string"} reference grammar (see classes_of in matcher.cc)
  CompiledGrammar(Grammar g, std::shared_ptr<Vocabulary> vocab, bool canonical = false);
  const Grammar& grammar() const { return grammar_; }
  const Vocabulary& vocab() const { return *vocab_; }
  const std::shared_ptr<Vocabulary>& vocab_ptr() const { return vocab_; }
  // The (lazily computed, then cached) context-independent mask of node n.
  const NodeMask* node_mask(uint32_t n) const;
  size_t memory_bytes() const;

 private:
  std::unique_ptr<NodeMask> compute(uint32_t n) const;
  std::unique_ptr<NodeMask> compute_terminal(uint32_t n) const;
  std::unique_ptr<NodeMask> compute_derived(uint32_t n, const CompiledGrammar* ref, uint32_t rep, const RuleClasses& rc) const;
  const CompiledGrammar* canonical() const;
  const RuleClasses& classes_of(uint32_t rule) const;
  std::unique_ptr<NodeMask> finish(std::vector<uint64_t>& acc, size_t n_acc,
                                   const std::vector<std::pair<int32_t, uint32_t>>& uncertain) const;
  Grammar grammar_;
  std::shared_ptr<Vocabulary> vocab_;
  std::unique_ptr<MaskSlots> own_;           // non-terminal nodes (and terminals over budget)
  std::vector<MaskSlots*> slots_of_rule_;    // per rule: where its nodes' masks live
  // per terminal rule, computed on its first mask
  mutable std::vector<std::unique_ptr<RuleClasses>> classes_;
  std::unique_ptr<std::once_flag[]> classes_once_;
  mutable std::atomic<size_t> classes_memory_{0};
  bool is_canonical_ = false;
  mutable std::unique_ptr<CompiledGrammar> canon_;
  mutable std::once_flag canon_once_;
};

class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const CompiledGrammar> cg);
  Matcher(const Matcher& other);

  // Writes the allowed-token bitmask (ceil(size/32) int32 words, bit i%32 of word i/32).
  void fill_next_token_bitmask(int32_t* row);
  bool accept_token(int64_t id);
  bool accept_bytes(const std::string& bytes);  // no stop token; false (state unchanged) if rejected
  void rollback(size_t n);                      // throws std::out_of_range past the start
  void reset();
  bool is_terminated() const { return history_.back().terminated; }
  bool can_terminate() const { return !is_terminated() && history_.back().state.ended; }
  size_t num_accepted() const { return history_.size() - 1; }
  std::string find_jump_forward_bytes();
  const CompiledGrammar& compiled() const { return *cg_; }

 private:
  struct Entry {
    ParseState state;
    size_t frames_size;
    bool terminated;
  };
  std::shared_ptr<const CompiledGrammar> cg_;
  Stepper stepper_;
  std::vector<Entry> history_;
  // scratch
  std::vector<uint64_t> words_;
  std::vector<ParseState> scratch_;
  ParseState tmp_a_, tmp_b_;
};

}  // namespace toolken
