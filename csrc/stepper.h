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

}  // namespace toolken
