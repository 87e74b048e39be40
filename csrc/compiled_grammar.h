// Compiled grammars: a Grammar for one Vocabulary plus the lazily computed, then cached,
// context-independent token mask of each node (NodeMask, vocabulary.h). Immutable once built
// except for those caches, which are filled lock-free (MaskSlots) or under std::call_once: a
// CompiledGrammar is shared by every matcher of its schema across threads.
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
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "grammar.h"
#include "rule_classes.h"
#include "vocabulary.h"

namespace toolken {

class CompiledGrammar {
 public:
  // canonical: this is the {"type": "string"} reference grammar (see classes_of in compiled_grammar.cc)
  CompiledGrammar(Grammar g, std::shared_ptr<Vocabulary> vocab, bool canonical = false);
  const Grammar& grammar() const { return grammar_; }
  const Vocabulary& vocab() const { return *vocab_; }
  const std::shared_ptr<Vocabulary>& vocab_ptr() const { return vocab_; }
  // The (lazily computed, then cached) context-independent mask of node n.
  const NodeMask* node_mask(uint32_t n) const;
  // The mask of a stack at node n of a counted rule (grammar.h) that has read `count` characters:
  // nullptr when node_mask(n) is exact for it (no token reaches a bound from this count), else
  // node_mask(n) without the tokens a bound rejects: cached per (n, count) (all counts far below
  // minLength share one), or left in `hold` once the cache is full.
  const NodeMask* count_mask(uint32_t n, uint64_t count, std::unique_ptr<NodeMask>& hold) const;
  size_t memory_bytes() const;

 private:
  std::unique_ptr<NodeMask> compute(uint32_t n) const;
  std::unique_ptr<NodeMask> compute_terminal(uint32_t n) const;
  std::unique_ptr<NodeMask> compute_counted(uint32_t n, uint64_t count) const;
  std::unique_ptr<NodeMask> compute_derived(uint32_t n, const CompiledGrammar* ref, uint32_t rep, const RuleClasses& rc) const;
  const CompiledGrammar* canonical() const;
  const RuleClasses& classes_of(uint32_t rule) const;
  // The mask of the accepted tokens (bits in `acc`; `ids`, when given, lists the same tokens
  // unsorted) and the uncertain tokens' suffixes.
  std::unique_ptr<NodeMask> finish(std::vector<uint64_t>& acc, size_t n_acc,
                                   const std::vector<std::pair<int32_t, uint32_t>>& uncertain,
                                   std::vector<int32_t>* ids = nullptr) const;
  Grammar grammar_;
  std::shared_ptr<Vocabulary> vocab_;
  std::unique_ptr<MaskSlots> own_;           // non-terminal nodes (and terminals over budget)
  std::vector<MaskSlots*> slots_of_rule_;    // per rule: where its nodes' masks live
  // per terminal rule, computed on its first mask
  mutable std::vector<std::unique_ptr<RuleClasses>> classes_;
  std::unique_ptr<std::once_flag[]> classes_once_;
  mutable std::atomic<size_t> classes_memory_{0};
  mutable std::mutex count_mu_;
  mutable std::map<std::pair<uint32_t, uint64_t>, std::unique_ptr<NodeMask>> count_masks_;
  mutable std::atomic<size_t> count_memory_{0};
  bool is_canonical_ = false;
  mutable std::unique_ptr<CompiledGrammar> canon_;
  mutable std::once_flag canon_once_;
};

}  // namespace toolken
