#include "matcher.h"

#include "json_schema_converter.h"

#include <algorithm>
#include <bitset>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace toolken {

namespace {
// Above this many stacks a step drops the rest: fewer strings accepted, never more.
constexpr size_t kMaxTops = 4096;
constexpr size_t kMaxJumpForward = 4096;

// Sets token t's bit; returns 1 if it was not set yet.
size_t add_token(std::vector<uint64_t>& acc, int32_t t) {
  uint64_t bit = uint64_t(1) << (t & 63);
  if (acc[t >> 6] & bit) return 0;
  acc[t >> 6] |= bit;
  return 1;
}

// The rule was left after d bytes at trie node i: every token of i's subtree either ends there
// (accepted: the caller continues) or has a suffix to check against the caller at run time.
size_t record_exit(const Vocabulary& v, size_t i, size_t d, std::vector<uint64_t>& acc,
                   std::vector<std::pair<int32_t, uint32_t>>& uncertain) {
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  size_t added = 0;
  for (size_t j = i; j < trie[i].skip; ++j)
    for (uint32_t k = trie[j].tok_begin; k < trie[j].tok_end; ++k) {
      if (trie[j].depth == d) added += add_token(acc, ttok[k]);
      else uncertain.push_back({ttok[k], static_cast<uint32_t>(d)});
    }
  return added;
}
}  // namespace

// ------------------------------------------------------------------------------------ Stepper
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

// ---------------------------------------------------------------------------- CompiledGrammar
CompiledGrammar::CompiledGrammar(Grammar g, std::shared_ptr<Vocabulary> vocab, bool canonical)
    : grammar_(std::move(g)), vocab_(std::move(vocab)), is_canonical_(canonical) {
  own_ = std::make_unique<MaskSlots>(grammar_.num_nodes());
  classes_.resize(grammar_.rules.size());
  classes_once_.reset(new std::once_flag[grammar_.rules.size()]);
  for (const auto& r : grammar_.rules) {
    MaskSlots* s = nullptr;
    if (r.terminal) s = vocab_->terminal_slots(r.signature, r.num_nodes);
    slots_of_rule_.push_back(s);
  }
}

const NodeMask* CompiledGrammar::node_mask(uint32_t n) const {
  uint32_t r = grammar_.node_rule[n];
  MaskSlots* shared = slots_of_rule_[r];
  size_t idx = shared ? n - grammar_.rules[r].first_node : n;
  MaskSlots* slots = shared ? shared : own_.get();
  const NodeMask* m = slots->get(idx);
  if (m) return m;
  return slots->publish(idx, compute(n));
}

size_t CompiledGrammar::memory_bytes() const {
  size_t b = sizeof(*this) + grammar_.memory_bytes() + own_->memory_bytes() + classes_memory_.load();
  // masks this grammar uses from the vocabulary's shared cache (also counted by other grammars
  // that share them), including the canonical string rule's
  std::vector<const MaskSlots*> shared;
  for (const MaskSlots* s : slots_of_rule_)
    if (s && std::find(shared.begin(), shared.end(), s) == shared.end()) shared.push_back(s);
  for (const MaskSlots* s : shared) b += s->memory_bytes();
  if (const CompiledGrammar* c = canonical()) b += c->memory_bytes();
  return b;
}

// Terminal rules are call-free DFAs: one node per depth, no frames (the common, hot case:
// string bodies, numbers, literals).
std::unique_ptr<NodeMask> CompiledGrammar::compute_terminal(uint32_t n) const {
  const Vocabulary& v = *vocab_;
  const Grammar& g = grammar_;
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  std::vector<uint32_t> node(v.max_depth() + 2), ws(v.max_depth() + 2);
  node[0] = n;
  ws[0] = 0;
  std::vector<uint64_t> acc(v.words64(), 0);
  size_t n_acc = 0;
  std::vector<std::pair<int32_t, uint32_t>> uncertain;
  auto accept = [&](int32_t t) { n_acc += add_token(acc, t); };
  size_t i = 1;
  while (i < trie.size()) {
    const auto& tn = trie[i];
    size_t d = tn.depth;
    uint32_t cur = node[d - 1];
    int64_t nx = g.next(cur, tn.byte);
    if (nx < 0) {
      i = tn.skip;
      continue;
    }
    uint32_t w = 0;
    if (g.max_ws && g.is_ws_loop[nx] && Grammar::is_json_ws(tn.byte)) {
      w = (nx == cur ? ws[d - 1] : 0) + 1;
      if (w > g.max_ws) {
        i = tn.skip;
        continue;
      }
    }
    node[d] = static_cast<uint32_t>(nx);
    ws[d] = w;
    if (g.is_final[nx]) n_acc += record_exit(v, i, d, acc, uncertain);
    if (!g.has_bytes(nx)) {
      i = tn.skip;
      continue;
    }
    for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) accept(ttok[k]);
    ++i;
  }
  return finish(acc, n_acc, uncertain);
}

namespace {
constexpr size_t kClassRounds = 16;          // see RuleClasses; subtrees deeper than this are walked
constexpr size_t kMaxClassStates = 1 << 17;  // larger rules: every node walks the whole trie
}  // namespace

namespace {
// {"type": "string"}: its node masks (kept in the vocabulary's shared cache) are the reference
// that string-like rules of every grammar derive theirs from.
const Grammar& canonical_string_grammar() {
  static const Grammar g = [] {
    SchemaOptions o;
    o.flexible_whitespace = false;
    return json_schema_to_grammar("{\"type\":\"string\"}", o);
  }();
  return g;
}

// Exact hash-consing of per-state signatures (flat key storage, open addressing).
class SignatureTable {
 public:
  explicit SignatureTable(size_t n) : slots_(std::max<size_t>(16, size_t(1) << (64 - __builtin_clzll(n * 2 + 1))), kEmpty) {}
  uint32_t intern(const std::vector<uint32_t>& key) {
    uint64_t h = 1469598103934665603ull;
    for (uint32_t x : key) h = (h ^ x) * 1099511628211ull;
    size_t mask = slots_.size() - 1;
    for (size_t i = (h ^ (h >> 29)) & mask;; i = (i + 1) & mask) {
      uint32_t id = slots_[i];
      if (id == kEmpty) {
        id = static_cast<uint32_t>(begin_.size());
        begin_.push_back(static_cast<uint32_t>(keys_.size()));
        keys_.insert(keys_.end(), key.begin(), key.end());
        len_.push_back(static_cast<uint32_t>(key.size()));
        slots_[i] = id;
        return id;
      }
      if (len_[id] == key.size() && std::equal(key.begin(), key.end(), keys_.begin() + begin_[id])) return id;
    }
  }
  size_t size() const { return begin_.size(); }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  std::vector<uint32_t> slots_, begin_, len_, keys_;
};

// Agreement depths (see RuleClasses::pair_depth) of the joint-state pairs reachable from `seeds`
// by reading the same bytes. edges(x, begin, end) sets x's byte edges [begin, end) and returns
// the map from an edge target to its joint index. Depth(p) is -1 when p's states differ in round 0, 0 when they read different
// byte sets, else 1 + the least depth of its successor pairs (unbounded without a differing
// pair in reach), computed by a breadth-first pass backwards from the differing pairs. A chain of
// maxLength states paired with the string body thus learns, in one linear pass, that it agrees
// with the body up to its remaining length, which a fixed number of refinement rounds cannot.
// With skip_byte >= 0, strings containing that byte are left out (depths over the other bytes).
template <class Edges>
bool pair_depths(const std::vector<uint32_t>& cls0, const std::vector<std::pair<uint32_t, uint32_t>>& seeds, Edges edges,
                 int skip_byte, size_t max_pairs, std::vector<std::pair<uint64_t, int32_t>>& out) {
  constexpr int32_t kInf = RuleClasses::kAgreeAlways;
  PairIndex ids(seeds.size() * 2);
  std::vector<std::pair<uint32_t, uint32_t>> pred;  // (successor, predecessor)
  std::vector<int32_t> base;
  base.reserve(seeds.size() * 2);
  pred.reserve(seeds.size() * 4);
  bool fresh;
  for (const auto& [x, y] : seeds) ids.intern(x, y, fresh);
  for (size_t k = 0; k < ids.size(); ++k) {
    if (ids.size() > max_pairs) return false;
    auto [x, y] = ids.pairs()[k];
    if (cls0[x] != cls0[y]) {
      base.push_back(-1);
      continue;
    }
    const ByteEdge *xa, *xe, *ya, *ye;
    auto mx = edges(x, xa, xe), my = edges(y, ya, ye);
    bool differ = false;
    // a range is constant on both sides, so leaving out skip_byte only matters when it is alone
    for_each_joint_range(xa, xe, ya, ye, [&](int lo, int hi, const ByteEdge* ex, const ByteEdge* ey) {
      if (lo == skip_byte && hi == skip_byte) return true;
      if ((ex == nullptr) != (ey == nullptr)) differ = true;
      else if (ex) pred.push_back({ids.intern(mx(ex->to), my(ey->to), fresh), static_cast<uint32_t>(k)});
      return !differ;
    });
    base.push_back(differ ? 0 : kInf);
  }
  // successors -> predecessors (CSR), then levels of increasing depth
  const size_t n = ids.size();
  std::vector<uint32_t> begin(n + 1, 0), preds(pred.size());
  for (const auto& e : pred) ++begin[e.first + 1];
  for (size_t k = 0; k < n; ++k) begin[k + 1] += begin[k];
  {
    std::vector<uint32_t> fill(begin.begin(), begin.end() - 1);
    for (const auto& e : pred) preds[fill[e.first]++] = e.second;
  }
  std::vector<int32_t> depth(n, kInf);
  std::vector<std::vector<uint32_t>> level(2);  // level[L]: pairs of depth L - 1
  for (size_t k = 0; k < n; ++k)
    if (base[k] != kInf) level[base[k] + 1].push_back(static_cast<uint32_t>(k));
  for (size_t L = 0; L < level.size(); ++L)
    for (size_t i = 0; i < level[L].size(); ++i) {
      uint32_t k = level[L][i];
      if (depth[k] != kInf) continue;
      depth[k] = static_cast<int32_t>(L) - 1;
      for (uint32_t j = begin[k]; j < begin[k + 1]; ++j)
        if (depth[preds[j]] == kInf) {
          if (level.size() <= L + 1) level.emplace_back();
          level[L + 1].push_back(preds[j]);
        }
    }
  out.resize(n);
  for (size_t k = 0; k < n; ++k) {
    auto [x, y] = ids.pairs()[k];
    out[k] = {(static_cast<uint64_t>(x) << 32) | y, depth[k]};
  }
  std::sort(out.begin(), out.end());
  return true;
}
}  // namespace

const CompiledGrammar* CompiledGrammar::canonical() const {
  if (is_canonical_) return nullptr;
  std::call_once(canon_once_, [&]() { canon_.reset(new CompiledGrammar(canonical_string_grammar(), vocab_, true)); });
  return canon_.get();
}

// Classes over the rule's states followed by the canonical string rule's (so that a state can
// take a canonical state as its reference); rep: the canonical state of the same round-1 class,
// else the rule's lowest such state, else for a state whose next bytes are almost a string
// body's, the canonical body state.
const RuleClasses& CompiledGrammar::classes_of(uint32_t r) const {
  std::call_once(classes_once_[r], [&]() {
    auto rc = std::make_unique<RuleClasses>();
    const Grammar& g = grammar_;
    const uint32_t first = g.rules[r].first_node, num = g.rules[r].num_nodes;
    // worth it when walking the trie costs more than refining the rule's states (real
    // vocabularies: always; a tiny test vocabulary with a huge rule: walk instead)
    bool ok = num > 1 && num <= kMaxClassStates && num < 4 * vocab_->trie().size();
    for (uint32_t s = 0; ok && s < num; ++s) ok = !g.is_ws_loop[first + s];  // ws counts depend on node identity
    if (ok) {
      const CompiledGrammar* canon = canonical();
      const Grammar* cg = canon && canon->grammar().rules[canon->grammar().root_rule].terminal ? &canon->grammar() : nullptr;
      const uint32_t cfirst = cg ? cg->rules[cg->root_rule].first_node : 0;
      const uint32_t cnum = cg ? cg->rules[cg->root_rule].num_nodes : 0;
      const uint32_t total = num + cnum;
      rc->num_own = num;
      rc->canonical_first = cfirst;
      // (grammar, global node, offset of its rule's states in the joint numbering)
      auto where = [&](uint32_t x, const Grammar*& gg, uint32_t& node, uint32_t& base) {
        if (x < num) {
          gg = &g;
          node = first + x;
          base = first;
        } else {
          gg = cg;
          node = cfirst + (x - num);
          base = cfirst;
        }
      };
      std::vector<uint32_t> prev(total);
      for (uint32_t x = 0; x < total; ++x) {
        const Grammar* gg;
        uint32_t node, base;
        where(x, gg, node, base);
        prev[x] = (gg->is_final[node] ? 2u : 0u) | (gg->has_bytes(node) ? 1u : 0u);
      }
      size_t count = std::unordered_set<uint32_t>(prev.begin(), prev.end()).size();
      rc->cls.push_back(prev);
      std::vector<uint32_t> key;
      // Moore rounds up to `last` (continuing from the rounds done so far)
      auto refine = [&](size_t last) {
        for (size_t round = rc->cls.size(); round <= last && !rc->fixpoint; ++round) {
          SignatureTable table(total);  // at most one class per state
          std::vector<uint32_t> next(total);
          for (uint32_t x = 0; x < total; ++x) {
            const Grammar* gg;
            uint32_t node, base;
            where(x, gg, node, base);
            const uint32_t off = x < num ? 0 : num;
            key.assign(1, prev[x]);
            int lo = -1, hi = -1;
            uint32_t c = 0;
            auto flush = [&]() {
              if (lo >= 0) key.insert(key.end(), {static_cast<uint32_t>(lo << 8 | hi), c});
            };
            for (uint32_t e = gg->byte_begin[node]; e < gg->byte_begin[node + 1]; ++e) {
              const ByteEdge& be = gg->byte_edges[e];
              uint32_t tc = prev[be.to - base + off];
              if (lo >= 0 && tc == c && be.lo == hi + 1) {
                hi = be.hi;
                continue;
              }
              flush();
              lo = be.lo;
              hi = be.hi;
              c = tc;
            }
            flush();
            next[x] = table.intern(key);
          }
          if (table.size() == count) {  // refinement only splits: same count, same partition
            rc->fixpoint = true;
            break;
          }
          count = table.size();
          rc->cls.push_back(next);
          prev.swap(next);
        }
      };
      refine(1);  // round 1 picks the references; deeper agreement comes from the pair depths
      const std::vector<uint32_t>& c1 = rc->cls[std::min<size_t>(1, rc->cls.size() - 1)];
      std::unordered_map<uint32_t, uint32_t> canon_of, first_of;
      for (uint32_t x = num; x < total; ++x) canon_of.emplace(c1[x], x);
      // the canonical state with the most next bytes (the string body) and its byte set
      auto byte_set = [&](const Grammar& gg, uint32_t node) {
        std::bitset<256> bs;
        for (uint32_t e = gg.byte_begin[node]; e < gg.byte_begin[node + 1]; ++e)
          for (int c = gg.byte_edges[e].lo; c <= gg.byte_edges[e].hi; ++c) bs.set(c);
        return bs;
      };
      uint32_t hub = 0;
      std::bitset<256> hub_bytes;
      for (uint32_t x = num; x < total; ++x) {
        std::bitset<256> bs = byte_set(*cg, cfirst + (x - num));
        if (bs.count() > hub_bytes.count()) {
          hub = x;
          hub_bytes = bs;
        }
      }
      constexpr size_t kHubByteDifference = 8;
      rc->rep.resize(num);
      for (uint32_t s = 0; s < num; ++s) {
        if (auto it = canon_of.find(c1[s]); it != canon_of.end()) {
          rc->rep[s] = it->second;
          continue;
        }
        auto [it, fresh] = first_of.emplace(c1[s], s);
        rc->rep[s] = it->second;
        if (fresh && hub_bytes.any() && (byte_set(g, first + s) ^ hub_bytes).count() <= kHubByteDifference) {
          rc->rep[s] = hub;
          it->second = hub;  // the rest of the class derives from the hub as well
        }
      }
      std::vector<std::pair<uint32_t, uint32_t>> seeds;
      for (uint32_t x = 0; x < num; ++x)
        if (rc->rep[x] != x) seeds.push_back({x, rc->rep[x]});
      auto edges = [&](uint32_t x, const ByteEdge*& a, const ByteEdge*& e) {
        const Grammar* gg;
        uint32_t node, base;
        where(x, gg, node, base);
        a = gg->byte_edges.data() + gg->byte_begin[node];
        e = gg->byte_edges.data() + gg->byte_begin[node + 1];
        const uint32_t off = x < num ? 0 : num;
        return [base, off](uint32_t to) { return to - base + off; };
      };
      const size_t max_pairs = 8 * static_cast<size_t>(total) + 4096;
      if (!pair_depths(rc->cls[0], seeds, edges, -1, max_pairs, rc->pair_depth)) {
        rc->pair_depth.clear();
        refine(kClassRounds);  // too many pairs: depth-bounded classes instead
      }
      if (!pair_depths(rc->cls[0], seeds, edges, '"', max_pairs, rc->pair_depth_quote_free)) rc->pair_depth_quote_free.clear();
    }
    classes_memory_ += rc->memory_bytes();
    classes_[r] = std::move(rc);
  });
  return *classes_[r];
}

// The mask of terminal node n derived from that of `rep`, an equivalent-looking node of the same
// rule: walk the trie from both nodes at once and skip every subtree whose outcomes must be the
// same from both (same node, states that agree up to the subtree's height (on its quote-free
// strings when it has no '"'), or both rejecting its first byte, after the same rule exits), so
// that only the tokens whose outcome may differ are computed. Bounded strings
// (one DFA state per position) and key strings that exclude known names are the cases that
// need it: their states differ only on the few tokens that reach the bound or the name.
// (Idea: llguidance computes masks by a trie walk that prunes subtrees; xgrammar shares masks
// between grammar positions; the pairing with a reference node is toolken's.)
std::unique_ptr<NodeMask> CompiledGrammar::compute_derived(uint32_t n, const CompiledGrammar* ref, uint32_t rep,
                                                           const RuleClasses& rc) const {
  const NodeMask* base = ref->node_mask(rep);
  const Vocabulary& v = *vocab_;
  const Grammar& g = grammar_;
  const Grammar& gb = ref->grammar_;
  const bool same_grammar = ref == this;
  const uint32_t bfirst = gb.rules[gb.node_rule[rep]].first_node, boff = same_grammar ? 0 : rc.num_own;
  const auto& trie = v.trie();
  const auto& height = v.trie_height();
  const auto& quote_below = v.trie_quote_below();
  const auto& ttok = v.trie_tokens();
  const uint32_t first = g.rules[g.node_rule[n]].first_node;
  constexpr uint32_t kNone = 0xFFFFFFFFu;
  std::vector<uint32_t> a(v.max_depth() + 2), b(v.max_depth() + 2);
  std::vector<char> same(v.max_depth() + 2);
  std::vector<uint32_t> exits;  // depths at which n's walk left the rule, on the current path
  std::vector<uint64_t> expl(v.words64(), 0);  // tokens whose outcome is computed here
  std::vector<int32_t> accepted;
  std::vector<std::pair<int32_t, uint32_t>> uncertain;
  auto cut = [&](size_t i) {  // n cannot go on below i: outcomes from the exits on the path
    for (size_t j = i; j < trie[i].skip; ++j)
      for (uint32_t k = trie[j].tok_begin; k < trie[j].tok_end; ++k) {
        int32_t t = ttok[k];
        expl[t >> 6] |= uint64_t(1) << (t & 63);
        for (uint32_t e : exits) {
          if (e == trie[j].depth) accepted.push_back(t);
          else uncertain.push_back({t, e});
        }
      }
  };
  a[0] = n;
  b[0] = rep;
  same[0] = 1;
  size_t i = 1;
  while (i < trie.size()) {
    const auto& tn = trie[i];
    const size_t d = tn.depth;
    while (!exits.empty() && exits.back() >= d) exits.pop_back();
    int64_t na = g.next(a[d - 1], tn.byte);
    int64_t nb = b[d - 1] == kNone ? -1 : gb.next(b[d - 1], tn.byte);
    if (na < 0) {
      // the reference rejects the subtree too, after the same path: its outcomes hold
      if (!(same[d - 1] && nb < 0)) cut(i);
      i = tn.skip;
      continue;
    }
    if (same[d - 1] && nb >= 0 &&
        ((same_grammar && na == nb) ||
         rc.equivalent(static_cast<uint32_t>(na - first), static_cast<uint32_t>(nb - bfirst + boff), height[i], !quote_below[i]))) {
      i = tn.skip;  // the reference's outcomes hold for the whole subtree
      continue;
    }
    const bool fa = g.is_final[na], fb = nb >= 0 && gb.is_final[nb];
    a[d] = static_cast<uint32_t>(na);
    b[d] = nb >= 0 ? static_cast<uint32_t>(nb) : kNone;
    same[d] = same[d - 1] && nb >= 0 && fa == fb;
    if (fa) exits.push_back(static_cast<uint32_t>(d));
    if (!g.has_bytes(na)) {
      cut(i);
      i = tn.skip;
      continue;
    }
    for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) {
      int32_t t = ttok[k];
      expl[t >> 6] |= uint64_t(1) << (t & 63);
      accepted.push_back(t);
    }
    ++i;
  }
  // accepted: the reference's outside the explicit tokens, plus n's own
  std::vector<uint64_t> acc(v.words64(), 0);
  if (base->dense) acc = base->bits;
  else
    for (int32_t t : base->ids) acc[t >> 6] |= uint64_t(1) << (t & 63);
  size_t n_acc = 0;
  for (size_t w = 0; w < acc.size(); ++w) {
    acc[w] &= ~expl[w];
  }
  for (int32_t t : accepted) acc[t >> 6] |= uint64_t(1) << (t & 63);
  for (uint64_t w : acc) n_acc += __builtin_popcountll(w);
  auto m = NodeMask::from_bits(std::move(acc), n_acc, v.size());
  // uncertain suffixes: the reference's groups without explicit tokens, merged (sorted) with n's
  std::map<std::string, std::vector<int32_t>> own;
  for (const auto& [t, k] : uncertain)
    if (!m->accepts(t)) own[v.token(t).substr(k)].push_back(t);
  const Suffixes empty;
  const Suffixes& bs = base->suffixes ? *base->suffixes : empty;
  bool touched = !own.empty();
  for (size_t k = 0; k < bs.toks.size() && !touched; ++k) touched = (expl[bs.toks[k] >> 6] >> (bs.toks[k] & 63)) & 1;
  if (!touched) {  // the common case: share the reference's suffixes
    m->suffixes = base->suffixes;
    m->owns_suffixes = false;
    return m;
  }
  auto sx = std::make_shared<Suffixes>();
  std::vector<int32_t> toks;
  auto emit = [&](std::string_view s, std::vector<int32_t>& list) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    if (list.empty()) return;
    sx->data.append(s.data(), s.size());
    sx->off.push_back(static_cast<uint32_t>(sx->data.size()));
    sx->toks.insert(sx->toks.end(), list.begin(), list.end());
    sx->tok_off.push_back(static_cast<uint32_t>(sx->toks.size()));
  };
  auto it = own.begin();
  for (size_t si = 0; si < bs.size(); ++si) {
    std::string_view s(bs.data.data() + bs.off[si], bs.off[si + 1] - bs.off[si]);
    for (; it != own.end() && std::string_view(it->first) < s; ++it) emit(it->first, it->second);
    toks.clear();
    for (uint32_t k = bs.tok_off[si]; k < bs.tok_off[si + 1]; ++k) {
      int32_t t = bs.toks[k];
      if (!((expl[t >> 6] >> (t & 63)) & 1)) toks.push_back(t);
    }
    if (it != own.end() && std::string_view(it->first) == s) {
      toks.insert(toks.end(), it->second.begin(), it->second.end());
      ++it;
    }
    emit(s, toks);
  }
  for (; it != own.end(); ++it) emit(it->first, it->second);
  m->suffixes = std::move(sx);
  return m;
}

std::unique_ptr<NodeMask> CompiledGrammar::compute(uint32_t n) const {
  const uint32_t r = grammar_.node_rule[n];
  if (grammar_.rules[r].terminal) {
    const RuleClasses& rc = classes_of(r);
    const uint32_t first = grammar_.rules[r].first_node;
    if (!rc.rep.empty()) {
      const uint32_t x = rc.rep[n - first];
      if (x >= rc.num_own) return compute_derived(n, canonical(), rc.canonical_first + (x - rc.num_own), rc);
      if (x != n - first) return compute_derived(n, this, first + x, rc);
    }
    return compute_terminal(n);
  }
  const Vocabulary& v = *vocab_;
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  Stepper st(&grammar_);
  std::vector<ParseState> states(v.max_depth() + 2);
  std::vector<size_t> mark(v.max_depth() + 2, 2);
  states[0].tops.push_back({n, kBottomFrame, 0});
  std::vector<uint64_t> acc(v.words64(), 0);
  size_t n_acc = 0;
  std::vector<std::pair<int32_t, uint32_t>> uncertain;  // (token, bytes consumed inside the rule)
  auto accept = [&](int32_t t) { n_acc += add_token(acc, t); };
  size_t i = 1;
  while (i < trie.size()) {
    const auto& tn = trie[i];
    size_t d = tn.depth;
    st.frames.resize(mark[d - 1]);
    ParseState& cur = states[d];
    st.step(states[d - 1], tn.byte, cur);
    mark[d] = st.frames.size();
    if (cur.bottom_popped) n_acc += record_exit(v, i, d, acc, uncertain);
    if (cur.tops.empty()) {
      i = tn.skip;
      continue;
    }
    for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) accept(ttok[k]);
    ++i;
  }
  return finish(acc, n_acc, uncertain);
}

std::unique_ptr<NodeMask> CompiledGrammar::finish(std::vector<uint64_t>& acc, size_t n_acc,
                                                  const std::vector<std::pair<int32_t, uint32_t>>& uncertain) const {
  const Vocabulary& v = *vocab_;
  auto m = NodeMask::from_bits(std::move(acc), n_acc, v.size());
  // group uncertain tokens by suffix (skip tokens already accepted)
  std::map<std::string, std::vector<int32_t>> groups;
  for (const auto& [t, k] : uncertain)
    if (!m->accepts(t)) groups[v.token(t).substr(k)].push_back(t);
  auto sx = std::make_shared<Suffixes>();
  for (auto& [s, toks] : groups) {
    std::sort(toks.begin(), toks.end());
    toks.erase(std::unique(toks.begin(), toks.end()), toks.end());
    sx->data += s;
    sx->off.push_back(static_cast<uint32_t>(sx->data.size()));
    sx->toks.insert(sx->toks.end(), toks.begin(), toks.end());
    sx->tok_off.push_back(static_cast<uint32_t>(sx->toks.size()));
  }
  m->suffixes = std::move(sx);
  return m;
}

// ------------------------------------------------------------------------------------ Matcher
Matcher::Matcher(std::shared_ptr<const CompiledGrammar> cg) : cg_(std::move(cg)), stepper_(&cg_->grammar()) { reset(); }

Matcher::Matcher(const Matcher& o)
    : cg_(o.cg_), stepper_(&cg_->grammar()), history_(o.history_) {
  stepper_.frames = o.stepper_.frames;
}

void Matcher::reset() {
  history_.clear();
  stepper_.frames.resize(2);
  Entry e;
  const Grammar& g = cg_->grammar();
  stepper_.start(g.rule_start(g.root_rule), kRootFrame, e.state);
  e.frames_size = stepper_.frames.size();
  e.terminated = false;
  history_.push_back(std::move(e));
}

void Matcher::rollback(size_t n) {
  if (n > num_accepted()) throw std::out_of_range("cannot roll back " + std::to_string(n) + " tokens: only " + std::to_string(num_accepted()) + " accepted");
  history_.resize(history_.size() - n);
  stepper_.frames.resize(history_.back().frames_size);
}

bool Matcher::accept_bytes(const std::string& bytes) {
  const Entry& cur = history_.back();
  if (cur.terminated) return false;
  if (bytes.empty()) return true;
  size_t mark = stepper_.frames.size();
  const ParseState* in = &cur.state;
  ParseState* out = &tmp_a_;
  for (size_t i = 0; i < bytes.size(); ++i) {
    stepper_.step(*in, static_cast<uint8_t>(bytes[i]), *out);
    if (!out->alive()) {
      stepper_.frames.resize(mark);
      return false;
    }
    in = out;
    out = out == &tmp_a_ ? &tmp_b_ : &tmp_a_;
  }
  Entry e{*in, stepper_.frames.size(), false};
  history_.push_back(std::move(e));
  return true;
}

bool Matcher::accept_token(int64_t id) {
  const Vocabulary& v = cg_->vocab();
  const Entry& cur = history_.back();
  if (cur.terminated || id < 0 || static_cast<size_t>(id) >= v.size()) return false;
  if (v.is_stop(id)) {
    if (!cur.state.ended) return false;
    Entry e{ParseState{}, stepper_.frames.size(), true};
    e.state.ended = true;
    history_.push_back(std::move(e));
    return true;
  }
  if (static_cast<size_t>(id) >= v.num_tokens() || v.token(id).empty()) return false;
  return accept_bytes(v.token(id));
}

void Matcher::fill_next_token_bitmask(int32_t* row) {
  const Vocabulary& v = cg_->vocab();
  size_t nw64 = v.words64();
  size_t nw32 = (v.size() + 31) / 32;
  words_.assign(nw64, 0);
  const Entry& cur = history_.back();
  if (!cur.terminated) {
    if (cur.state.ended)
      for (int32_t s : v.stop_ids()) words_[s >> 6] |= uint64_t(1) << (s & 63);
    std::vector<uint32_t> done_nodes;
    size_t mark = stepper_.frames.size();
    const uint32_t max_ws = cg_->grammar().max_ws;
    // tops that already consumed whitespace first, most consumed first (see matcher.h)
    std::vector<Top> tops(cur.state.tops);
    std::stable_sort(tops.begin(), tops.end(), [](const Top& a, const Top& b) { return a.ws > b.ws; });
    for (const Top& top : tops) {
      const NodeMask* nm = cg_->node_mask(top.node);
      if (top.ws > 0 || std::find(done_nodes.begin(), done_nodes.end(), top.node) == done_nodes.end()) {
        if (top.ws == 0) done_nodes.push_back(top.node);
        if (nm->dense) {
          const uint64_t* b = nm->bits.data();
          for (size_t w = 0; w < nw64; ++w) words_[w] |= b[w];
        } else {
          for (int32_t t : nm->ids) words_[t >> 6] |= uint64_t(1) << (t & 63);
        }
        if (top.ws > 0) {
          uint32_t budget = max_ws - top.ws;
          for (int32_t t : v.ws_led_tokens()) {
            if (v.lead_ws(t) <= budget) break;
            words_[t >> 6] &= ~(uint64_t(1) << (t & 63));
          }
        }
      }
      const uint32_t ws_budget = top.ws > 0 ? max_ws - top.ws : 0xFFFFFFFFu;
      size_t ns = nm->num_suffixes();
      if (ns == 0 || top.frame == kRootFrame) continue;
      const Suffixes& sx = *nm->suffixes;
      // run the suffixes from the caller's continuation, sharing prefixes (suffixes are sorted)
      if (scratch_.size() < 2) scratch_.resize(2);
      stepper_.frames.resize(mark);
      stepper_.pop(top.frame, scratch_[0]);
      std::vector<size_t> fmark{stepper_.frames.size()};
      size_t valid = 0;  // scratch_[0..valid] are computed for the previous suffix and alive
      const char* prev = nullptr;
      size_t prev_len = 0;
      for (size_t si = 0; si < ns; ++si) {
        const char* s = sx.data.data() + sx.off[si];
        size_t len = sx.off[si + 1] - sx.off[si];
        size_t lcp = 0;
        if (prev)
          while (lcp < len && lcp < prev_len && s[lcp] == prev[lcp]) ++lcp;
        prev = s;
        prev_len = len;
        if (lcp > valid) continue;  // shares a prefix that already failed (valid stays)
        if (scratch_.size() < len + 1) scratch_.resize(len + 1);
        if (fmark.size() < len + 1) fmark.resize(len + 1);
        bool ok = true;
        size_t d = lcp;
        for (; d < len; ++d) {
          stepper_.frames.resize(fmark[d]);
          stepper_.step(scratch_[d], static_cast<uint8_t>(s[d]), scratch_[d + 1]);
          fmark[d + 1] = stepper_.frames.size();
          if (!scratch_[d + 1].alive()) {
            ok = false;
            break;
          }
        }
        valid = ok ? len : d;
        if (!ok) {
          // mark the failing prefix: later suffixes sharing s[0..d] skip via lcp > valid
          continue;
        }
        for (uint32_t k = sx.tok_off[si]; k < sx.tok_off[si + 1]; ++k) {
          int32_t t = sx.toks[k];
          if (v.lead_ws(t) > ws_budget) continue;
          words_[t >> 6] |= uint64_t(1) << (t & 63);
        }
      }
      stepper_.frames.resize(mark);
    }
  }
  std::memcpy(row, words_.data(), nw32 * 4);
}

std::string Matcher::find_jump_forward_bytes() {
  std::string out;
  const Entry& cur = history_.back();
  if (cur.terminated) return out;
  const Grammar& g = cg_->grammar();
  size_t mark = stepper_.frames.size();
  ParseState a = cur.state, b;
  while (out.size() < kMaxJumpForward && !a.ended && !a.tops.empty()) {
    int only = -1;
    bool unique = true;
    for (const Top& t : a.tops) {
      for (uint32_t i = g.byte_begin[t.node]; i < g.byte_begin[t.node + 1] && unique; ++i) {
        const ByteEdge& e = g.byte_edges[i];
        if (e.lo != e.hi || (only >= 0 && only != e.lo)) unique = false;
        else only = e.lo;
      }
      if (!unique) break;
    }
    if (!unique || only < 0) break;
    stepper_.step(a, static_cast<uint8_t>(only), b);
    if (!b.alive()) break;
    out.push_back(static_cast<char>(only));
    std::swap(a, b);
  }
  stepper_.frames.resize(mark);
  return out;
}

}  // namespace toolken
