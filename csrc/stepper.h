// The parser: a nondeterministic pushdown automaton over the byte grammar of grammar.h.
//
// Parser state: a set of stacks. A stack is a Top {node, frame}: the current node (one that
// has byte edges) and a frame id into a frame arena; Frame {ret, parent} is a return address
// (the node after the call edge in the caller) and the caller's own frame. Frame 0 is the root
// sentinel (returning through it means the whole value is complete: `ended`); frame 1 is the
// "unknown caller" sentinel used when computing context-independent masks (returning through
// it sets `bottom_popped`). Frames are append-only; a state stays valid as long as the arena
// is not truncated below the size it had when the state was made.
//
// Seen-key sets (object guards, grammar.h): every stack level carries the set of keys its object
// has seen so far (Top::seen; a call saves the caller's in its Frame, with the guard whose key
// the return adds). Sets are immutable, in an append-only arena like frames: id kEmptySeen is
// the empty set, kUnknownSeen stands for "not known" (a context-independent mask computed
// mid-object): a guard checked against it passes and taints the stacks it creates, so the
// mask computation can send the tokens that went through them to a run-time recheck.
//
// Counted strings (grammar.h): a top in a counted rule counts the characters read in it
// (Top::count); a byte that enters a node from which the string cannot end within its bounds is
// rejected (CountedString::live).
//
// Whitespace bound: a top at a whitespace-loop node counts the whitespace bytes consumed in a
// row to reach and stay at it (Top::ws); a byte that would exceed Grammar::max_ws is rejected.
// Above kMaxTops stacks a step drops the rest: fewer strings accepted, never more.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "grammar.h"

namespace toolken {

struct Frame {
  uint32_t ret, parent;
  uint32_t seen;   // the caller's seen-key set
  uint32_t guard;  // the called rule's guard (its key is added on return), or kNoGuard
};
struct Top {
  uint32_t node, frame;
  uint32_t seen;     // seen-key set of this level's object (kEmptySeen outside objects)
  uint16_t ws;       // structural whitespace bytes just consumed in a row at `node` (is_ws_loop)
  uint16_t tainted;  // made by a guard checked against kUnknownSeen
  uint64_t count = 0;  // characters read in a counted rule (counted_strings.h); 0 elsewhere
};
constexpr uint32_t kRootFrame = 0;
constexpr uint32_t kBottomFrame = 1;
constexpr uint32_t kEmptySeen = 0;
constexpr uint32_t kUnknownSeen = 1;

// A seen-key set: bitset words[off, off + object's words) (none for kEmptySeen), member count,
// required keys seen, known keys seen.
struct SeenSet {
  uint32_t off = 0, count = 0, req = 0, known = 0;
};

struct ParseState {
  std::vector<Top> tops;
  bool ended = false;          // the root rule returned: the value is complete
  bool bottom_popped = false;  // returned through the unknown-caller frame
  bool tainted = false;        // a tainted stack consumed the byte (see above)
  bool alive() const { return !tops.empty() || ended || bottom_popped; }
  void clear() {
    tops.clear();
    ended = bottom_popped = tainted = false;
  }
};

// Parser mechanics over one grammar with its own frame arena (not thread-safe; one per user).
class Stepper {
 public:
  explicit Stepper(const Grammar* g);
  // out = states reached from `in` by byte `b` (closed under calls and returns).
  void step(const ParseState& in, uint8_t b, ParseState& out);
  // out = closure of stack {node, frame} whose level has seen-key set `seen`.
  void start(uint32_t node, uint32_t frame, ParseState& out, uint32_t seen = kEmptySeen);
  // out = state after returning through frame `f` (f must be a real frame).
  void pop(uint32_t f, ParseState& out);
  // Arena sizes; restore() truncates frames and sets made after mark() (states made since
  // become invalid).
  struct Mark {
    size_t frames, sets, words;
  };
  Mark mark() const { return {frames.size(), sets.size(), set_words.size()}; }
  void restore(const Mark& m) {
    frames.resize(m.frames);
    sets.resize(m.sets);
    set_words.resize(m.words);
  }
  // Back to the sentinels only.
  void clear_arenas() { restore({2, 2, 0}); }
  std::vector<Frame> frames;
  std::vector<SeenSet> sets;
  std::vector<uint64_t> set_words;

 private:
  struct Item {
    uint32_t node, frame, seen;
    bool tainted;
  };
  void closure(uint32_t node, uint32_t frame, uint32_t ws, uint32_t seen, bool tainted, uint64_t count, ParseState& out);
  // The count after entering node `nx` with `k` characters read (0 outside counted rules); false
  // when the string cannot end within its bounds from there.
  bool enter(uint32_t nx, uint64_t k, uint64_t& count) const;
  bool visit(uint32_t node, uint32_t frame, uint32_t seen);
  // Whether calling a rule with guard `gi` is allowed from set `seen` (kUnknownSeen: yes).
  bool guard_allows(uint32_t gi, uint32_t seen) const;
  // Object groups (grammar.h): whether some group can still be the only complete one after adding
  // key `add_key` (-1: none) to `s` with `count` members; whether exactly one is complete in `s`.
  bool groups_feasible(const Grammar::Object& o, const SeenSet& s, int64_t add_key, int64_t count) const;
  bool member_allows(const Grammar::Object& o, const SeenSet& s, int64_t key) const;
  bool member_possible(const Grammar::Object& o, const SeenSet& s) const;
  bool exactly_one_group(const Grammar::Object& o, const SeenSet& s) const;
  // The set after returning through a call with guard `gi` made from `seen`.
  uint32_t after_return(uint32_t seen, uint32_t gi);
  const Grammar* g_;
  // open-addressing set of visited (node, frame, seen) keys for one step
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> seen_keys_;
  std::vector<uint32_t> stamp_;
  uint32_t gen_ = 1;
  size_t count_ = 0;
  std::vector<Item> work_;
  mutable std::vector<uint64_t> group_scratch_;
};

}  // namespace toolken
