#include "stepper.h"

namespace toolken {

namespace {
// Above this many stacks a step drops the rest: fewer strings accepted, never more.
constexpr size_t kMaxTops = 4096;
constexpr uint32_t kNoWords = 0xFFFFFFFFu;  // SeenSet::off of a set without known keys
}  // namespace

Stepper::Stepper(const Grammar* g) : g_(g) {
  frames.push_back({0, 0, kEmptySeen, kNoGuard});  // root sentinel
  frames.push_back({0, 0, kEmptySeen, kNoGuard});  // unknown-caller sentinel
  sets.push_back({kNoWords, 0, 0, 0});             // kEmptySeen
  sets.push_back({kNoWords, 0, 0, 0});             // kUnknownSeen (never read)
  keys_.assign(64, 0);
  seen_keys_.assign(64, 0);
  stamp_.assign(64, 0);
}

bool Stepper::visit(uint32_t node, uint32_t frame, uint32_t seen) {
  uint64_t key = (static_cast<uint64_t>(node) << 32) | frame;
  if (count_ * 2 >= keys_.size()) {
    // grow and rehash
    std::vector<uint64_t> old_keys;
    std::vector<uint32_t> old_seen, old_stamp;
    old_keys.swap(keys_);
    old_seen.swap(seen_keys_);
    old_stamp.swap(stamp_);
    keys_.assign(old_keys.size() * 2, 0);
    seen_keys_.assign(old_keys.size() * 2, 0);
    stamp_.assign(old_keys.size() * 2, 0);
    size_t mask = keys_.size() - 1;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_stamp[i] != gen_) continue;
      size_t h = ((old_keys[i] ^ old_seen[i]) * 0x9E3779B97F4A7C15ull) >> 20;
      while (stamp_[h & mask] == gen_) ++h;
      keys_[h & mask] = old_keys[i];
      seen_keys_[h & mask] = old_seen[i];
      stamp_[h & mask] = gen_;
    }
  }
  size_t mask = keys_.size() - 1;
  size_t h = ((key ^ seen) * 0x9E3779B97F4A7C15ull) >> 20;
  while (stamp_[h & mask] == gen_) {
    if (keys_[h & mask] == key && seen_keys_[h & mask] == seen) return false;
    ++h;
  }
  keys_[h & mask] = key;
  seen_keys_[h & mask] = seen;
  stamp_[h & mask] = gen_;
  ++count_;
  return true;
}

// Feasibility after the call (idea: a count in the object's state, as the whitespace bound is a
// count; the seen set makes "each key at most once" exact): the members still needed (unseen
// required keys, then up to minProperties) must fit under maxProperties and be available, so
// that no guarded path leads into a state from which the object cannot close.
bool Stepper::guard_allows(uint32_t gi, uint32_t seen) const {
  if (seen == kUnknownSeen) return true;
  const Grammar::Guard& gd = g_->guards[gi];
  const Grammar::Object& o = g_->objects[gd.object];
  const SeenSet& s = sets[seen];
  if (gd.kind == Grammar::Guard::kClose)
    return s.req == o.num_required && s.count >= o.min && (o.num_groups == 0 || exactly_one_group(o, s));
  if (gd.kind == Grammar::Guard::kMore) return member_possible(o, s);
  return member_allows(o, s, gd.kind == Grammar::Guard::kMember ? static_cast<int64_t>(gd.key) : -1);
}

// Exactly what kMore promises: some member guard of the object passes (a live known key, or an
// additional member), so the separator it guards never leads into a dead end.
bool Stepper::member_possible(const Grammar::Object& o, const SeenSet& s) const {
  if (o.more && member_allows(o, s, -1)) return true;
  const uint32_t nw = o.words();
  for (uint32_t w = 0; w < nw; ++w) {
    uint64_t cand = o.live[w] & ~(s.off == kNoWords ? 0 : set_words[s.off + w]);
    for (; cand; cand &= cand - 1)
      if (member_allows(o, s, static_cast<int64_t>(w * 64 + __builtin_ctzll(cand)))) return true;
  }
  return false;
}

// A member call (known key `key`, or an additional member when key < 0) keeps the object closable.
bool Stepper::member_allows(const Grammar::Object& o, const SeenSet& s, int64_t key) const {
  int64_t missing = static_cast<int64_t>(o.num_required) - s.req;
  int64_t count = static_cast<int64_t>(s.count) + 1, known = s.known;
  if (key >= 0) {
    const uint32_t k = static_cast<uint32_t>(key);
    if (s.off != kNoWords && ((set_words[s.off + (k >> 6)] >> (k & 63)) & 1)) return false;
    ++known;
    if (o.is_required(k)) --missing;
  }
  if (o.max != kUnbounded && count + missing > static_cast<int64_t>(o.max)) return false;
  if (!o.more && count + (static_cast<int64_t>(o.avail_known) - known) < static_cast<int64_t>(o.min)) return false;
  return o.num_groups == 0 || groups_feasible(o, s, key, count);
}

// Exactly one group complete at the close (Object::groups): some group i can be completed
// together with the required keys without completing another group, within maxProperties
// (keys only accumulate, so a second complete group is final; fillers for minProperties are
// additional members, which complete no group: the converter refuses groups otherwise).
bool Stepper::groups_feasible(const Grammar::Object& o, const SeenSet& s, int64_t add_key, int64_t count) const {
  const uint32_t nw = o.words();
  std::vector<uint64_t>& have = group_scratch_;
  have.assign(nw, 0);
  if (s.off != kNoWords) std::copy(set_words.begin() + s.off, set_words.begin() + s.off + nw, have.begin());
  if (add_key >= 0) have[add_key >> 6] |= uint64_t(1) << (add_key & 63);
  for (uint32_t i = 0; i < o.num_groups; ++i) {
    const uint64_t* gi = o.group(i);
    int64_t extra = 0;
    for (uint32_t w = 0; w < nw; ++w) extra += __builtin_popcountll((gi[w] | o.required[w]) & ~have[w]);
    if (o.max != kUnbounded && count + extra > static_cast<int64_t>(o.max)) continue;
    bool alone = true;
    for (uint32_t j = 0; j < o.num_groups && alone; ++j) {
      if (j == i) continue;
      const uint64_t* gj = o.group(j);
      bool inside = true;
      for (uint32_t w = 0; w < nw && inside; ++w) inside = (gj[w] & ~(have[w] | gi[w] | o.required[w])) == 0;
      alone = !inside;
    }
    if (alone) return true;
  }
  return false;
}

bool Stepper::exactly_one_group(const Grammar::Object& o, const SeenSet& s) const {
  const uint32_t nw = o.words();
  uint32_t complete = 0;
  for (uint32_t i = 0; i < o.num_groups && complete < 2; ++i) {
    const uint64_t* gi = o.group(i);
    bool inside = true;
    for (uint32_t w = 0; w < nw && inside; ++w) inside = (gi[w] & ~(s.off == kNoWords ? 0 : set_words[s.off + w])) == 0;
    complete += inside;
  }
  return complete == 1;
}

uint32_t Stepper::after_return(uint32_t seen, uint32_t gi) {
  if (gi == kNoGuard || seen == kUnknownSeen) return seen;
  const Grammar::Guard& gd = g_->guards[gi];
  if (gd.kind == Grammar::Guard::kClose || gd.kind == Grammar::Guard::kMore) return seen;
  SeenSet s = sets[seen];
  ++s.count;
  if (gd.kind == Grammar::Guard::kMember) {
    const Grammar::Object& o = g_->objects[gd.object];
    const uint32_t nw = o.words(), off = static_cast<uint32_t>(set_words.size());
    if (s.off == kNoWords) set_words.resize(off + nw, 0);
    else set_words.insert(set_words.end(), set_words.begin() + s.off, set_words.begin() + s.off + nw);
    set_words[off + (gd.key >> 6)] |= uint64_t(1) << (gd.key & 63);
    s.off = off;
    ++s.known;
    if (o.is_required(gd.key)) ++s.req;
  }
  sets.push_back(s);
  return static_cast<uint32_t>(sets.size() - 1);
}

bool Stepper::enter(uint32_t nx, uint64_t k, uint64_t& count) const {
  const CountedString* c = g_->counter_of(nx);
  if (!c) {
    count = 0;
    return true;
  }
  const uint32_t s = nx - g_->rules[g_->node_rule[nx]].first_node;
  uint64_t x = k + c->completes[s];
  if (c->max == kNoMaxLength && x > c->min) x = c->min;  // without a maximum, counts past min are alike
  count = x;
  return c->live(s, x);
}

void Stepper::closure(uint32_t node0, uint32_t frame0, uint32_t ws0, uint32_t seen0, bool tainted0, uint64_t count0, ParseState& out) {
  work_.clear();
  work_.push_back({node0, frame0, seen0, tainted0});
  const Grammar& g = *g_;
  bool first = true;
  while (!work_.empty()) {
    Item it = work_.back();
    work_.pop_back();
    uint32_t ws = first ? ws0 : 0;
    uint64_t count = first ? count0 : 0;  // a rule entered by a call starts at count 0
    first = false;
    if (!visit(it.node, it.frame, it.seen)) continue;
    if (g.has_bytes(it.node) && out.tops.size() < kMaxTops)
      out.tops.push_back({it.node, it.frame, it.seen, static_cast<uint16_t>(ws), static_cast<uint16_t>(it.tainted), count});
    for (uint32_t i = g.call_begin[it.node], e = g.call_begin[it.node + 1]; i < e; ++i) {
      const CallEdge& c = g.call_edges[i];
      const uint32_t gi = g.rule_guard.empty() ? kNoGuard : g.rule_guard[c.rule];
      bool tainted = it.tainted;
      if (gi != kNoGuard) {
        if (!guard_allows(gi, it.seen)) continue;
        tainted = tainted || it.seen == kUnknownSeen;
      }
      frames.push_back({c.to, it.frame, it.seen, gi});
      work_.push_back({g.rule_start(c.rule), static_cast<uint32_t>(frames.size() - 1), kEmptySeen, tainted});
    }
    if (g.is_final[it.node]) {
      if (it.tainted && it.frame <= kBottomFrame) out.tainted = true;
      if (it.frame == kRootFrame) out.ended = true;
      else if (it.frame == kBottomFrame) out.bottom_popped = true;
      else {
        const Frame f = frames[it.frame];
        work_.push_back({f.ret, f.parent, after_return(f.seen, f.guard), it.tainted});
      }
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
    uint64_t count;
    if (!enter(static_cast<uint32_t>(nx), t.count, count)) return;
    if (!g.is_final[nx] && g.call_begin[nx] == g.call_begin[nx + 1] && !(ws_byte && g.is_ws_loop[nx])) {
      if (g.has_bytes(nx)) out.tops.push_back({static_cast<uint32_t>(nx), t.frame, t.seen, 0, t.tainted, count});
      out.tainted = t.tainted;
      return;
    }
  }
  ++gen_;
  count_ = 0;
  for (const Top& t : in.tops) {
    int64_t nx = g.next(t.node, b);
    if (nx < 0) continue;
    uint64_t count;
    if (!enter(static_cast<uint32_t>(nx), t.count, count)) continue;
    uint32_t ws = 0;
    if (ws_byte && g.is_ws_loop[nx]) {
      ws = (nx == t.node ? t.ws : 0) + 1;
      if (ws > g.max_ws) continue;
    }
    if (t.tainted) out.tainted = true;
    closure(static_cast<uint32_t>(nx), t.frame, ws, t.seen, t.tainted, count, out);
  }
}

void Stepper::start(uint32_t node, uint32_t frame, ParseState& out, uint32_t seen) {
  out.clear();
  ++gen_;
  count_ = 0;
  closure(node, frame, 0, seen, false, 0, out);
}

void Stepper::pop(uint32_t f, ParseState& out) {
  const Frame fr = frames[f];
  uint32_t seen = after_return(fr.seen, fr.guard);
  start(fr.ret, fr.parent, out, seen);
}

}  // namespace toolken
