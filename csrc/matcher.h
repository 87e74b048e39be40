// The per-sequence Matcher: the parser state (a set of stacks, stepper.h) after each accepted
// token, kept as a history for rollback, and the mask of the next tokens.
//
// Masks (after xgrammar's adaptive token mask cache and llguidance's trie walk): for each top
// {n, f}, mask |= NodeMask(n).accepted, then each uncertain suffix of NodeMask(n) is run from
// the state obtained by returning through f; a suffix that survives sets its tokens' bits; and
// each recheck token of NodeMask(n) (one whose walk went through an object guard, vocabulary.h)
// is run whole from the top itself, with its real seen-key set.
// Stop tokens are allowed exactly when `ended`.
//
// Whitespace bound: a top at a whitespace-loop node counts the whitespace bytes consumed in a
// row to reach and stay at it; a byte that would exceed Grammar::max_ws is rejected. Only a token's *leading*
// whitespace depends on that count, so a top with count k uses NodeMask(n) minus the tokens
// whose leading whitespace exceeds max_ws - k.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "compiled_grammar.h"
#include "stepper.h"

namespace toolken {

class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const CompiledGrammar> cg);
  Matcher(const Matcher& other);

  // Writes the allowed-token bitmask (ceil(size/32) int32 words, bit i%32 of word i/32).
  void fill_next_token_bitmask(int32_t* row);
  bool accept_token(int64_t id);
  bool accept_bytes(const std::string& bytes);  // no stop token; false (state unchanged) if rejected
  void rollback(size_t n);                      // throws ArgumentError past the start
  void reset();
  bool is_terminated() const { return history_.back().terminated; }
  bool can_terminate() const { return !is_terminated() && history_.back().state.ended; }
  size_t num_accepted() const { return history_.size() - 1; }
  std::string find_jump_forward_bytes();
  const CompiledGrammar& compiled() const { return *cg_; }
  // Serializes the methods above across threads: the bindings hold it (with the GIL released
  // while waiting) around every call, so one Matcher shared by several Python threads is safe.
  // The methods themselves do not lock (a batch fill locks each matcher it fills).
  std::mutex& mutex() const { return mu_; }

 private:
  struct Entry {
    ParseState state;
    Stepper::Mark arenas;
    bool terminated;
  };
  // Sets the bits of the tokens of `sx` whose bytes are accepted from `start` (suffixes sorted:
  // shared prefixes are stepped once); tokens with more than `ws_budget` leading whitespace bytes
  // are skipped. Restores the stepper's arenas.
  // When `record` is given, the ids of the tokens that pass are appended to it.
  void run_suffixes(const ParseState& start, const Suffixes& sx, uint32_t ws_budget, std::vector<int32_t>* record = nullptr);
  // Suffix outcomes already computed for this sequence: the tokens of `sx` that pass from the
  // continuation of frame `frame` with `ws_budget`. That continuation is fixed while the frame
  // lives (frames are immutable, append-only), so every position inside one string or number
  // value reuses the first position's run instead of stepping its closing suffixes ('",', '"}',
  // ...) again. Entries past the arena are dropped on rollback and reset.
  struct SuffixMemo {
    std::shared_ptr<const Suffixes> sx;  // held, so the address cannot be reused by another set
    uint32_t frame, ws_budget;
    std::vector<int32_t> toks;
  };
  std::vector<SuffixMemo> memo_;
  size_t memo_next_ = 0;  // the entry replaced next once memo_ is full
  std::shared_ptr<const CompiledGrammar> cg_;
  mutable std::mutex mu_;  // not copied: a copy has its own
  Stepper stepper_;
  std::vector<Entry> history_;
  // scratch
  std::vector<uint64_t> words_;
  std::vector<ParseState> scratch_;
  ParseState tmp_a_, tmp_b_;
};

}  // namespace toolken
