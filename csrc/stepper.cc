#include "stepper.h"

namespace toolken {

namespace {
// Above this many stacks a step drops the rest: fewer strings accepted, never more.
constexpr size_t kMaxTops = 4096;
}  // namespace

Stepper::Stepper(const Grammar* g) : g_(g) {
  frames.push_back({0, 0});  // root sentinel
  frames.push_back({0, 0});  // unknown-caller sentinel
  keys_.assign(64, 0);
  stamp_.assign(64, 0);
}

bool Stepper::visit(uint32_t node, uint32_t frame) {
  uint64_t key = (static_cast<uint64_t>(node) << 32) | frame;
  if (count_ * 2 >= keys_.size()) {
    // grow and rehash
    std::vector<uint64_t> old_keys;
    std::vector<uint32_t> old_stamp;
    old_keys.swap(keys_);
    old_stamp.swap(stamp_);
    keys_.assign(old_keys.size() * 2, 0);
    stamp_.assign(old_keys.size() * 2, 0);
    size_t mask = keys_.size() - 1;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_stamp[i] != gen_) continue;
      size_t h = (old_keys[i] * 0x9E3779B97F4A7C15ull) >> 20;
      while (stamp_[h & mask] == gen_) ++h;
      keys_[h & mask] = old_keys[i];
      stamp_[h & mask] = gen_;
    }
  }
  size_t mask = keys_.size() - 1;
  size_t h = (key * 0x9E3779B97F4A7C15ull) >> 20;
  while (stamp_[h & mask] == gen_) {
    if (keys_[h & mask] == key) return false;
    ++h;
  }
  keys_[h & mask] = key;
  stamp_[h & mask] = gen_;
  ++count_;
  return true;
}

void Stepper::closure(uint32_t node0, uint32_t frame0, uint32_t ws0, ParseState& out) {
  work_.clear();
  work_.push_back({node0, frame0});
  const Grammar& g = *g_;
  bool first = true;
  while (!work_.empty()) {
    auto [node, frame] = work_.back();
    work_.pop_back();
    uint32_t ws = first ? ws0 : 0;
    first = false;
    if (!visit(node, frame)) continue;
    if (g.has_bytes(node) && out.tops.size() < kMaxTops) out.tops.push_back({node, frame, ws});
    for (uint32_t i = g.call_begin[node], e = g.call_begin[node + 1]; i < e; ++i) {
      const CallEdge& c = g.call_edges[i];
      frames.push_back({c.to, frame});
      work_.push_back({g.rule_start(c.rule), static_cast<uint32_t>(frames.size() - 1)});
    }
    if (g.is_final[node]) {
      if (frame == kRootFrame) out.ended = true;
      else if (frame == kBottomFrame) out.bottom_popped = true;
      else work_.push_back({frames[frame].ret, frames[frame].parent});
    }
  }
}

void Stepper::step(const ParseState& in, uint8_t b, ParseState& out) {
  out.clear();
  const Grammar& g = *g_;
  bool ws_byte = g.max_ws && Grammar::is_json_ws(b);
  if (in.tops.size() == 1) {
    // one stack moving to a node without calls or exits: the closure is that node alone
    const Top& t = in.tops[0];
    int64_t nx = g.next(t.node, b);
    if (nx < 0) return;
    if (!g.is_final[nx] && g.call_begin[nx] == g.call_begin[nx + 1] && !(ws_byte && g.is_ws_loop[nx])) {
      if (g.has_bytes(nx)) out.tops.push_back({static_cast<uint32_t>(nx), t.frame, 0});
      return;
    }
  }
  ++gen_;
  count_ = 0;
  for (const Top& t : in.tops) {
    int64_t nx = g.next(t.node, b);
    if (nx < 0) continue;
    uint32_t ws = 0;
    if (ws_byte && g.is_ws_loop[nx]) {
      ws = (nx == t.node ? t.ws : 0) + 1;
      if (ws > g.max_ws) continue;
    }
    closure(static_cast<uint32_t>(nx), t.frame, ws, out);
  }
}

void Stepper::start(uint32_t node, uint32_t frame, ParseState& out) {
  out.clear();
  ++gen_;
  count_ = 0;
  closure(node, frame, 0, out);
}

void Stepper::pop(uint32_t f, ParseState& out) { start(frames[f].ret, frames[f].parent, out); }

}  // namespace toolken
