#include "rule_classes.h"

#include <bitset>
#include <unordered_map>
#include <unordered_set>

#include "automaton.h"

namespace toolken {

namespace {
constexpr size_t kClassRounds = 16;  // see RuleClasses; subtrees deeper than this are walked

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

void build_rule_classes(const Grammar& g, uint32_t r, const Grammar* cg, RuleClasses& rc) {
  const uint32_t first = g.rules[r].first_node, num = g.rules[r].num_nodes;
  const uint32_t cfirst = cg ? cg->rules[cg->root_rule].first_node : 0;
  const uint32_t cnum = cg ? cg->rules[cg->root_rule].num_nodes : 0;
  const uint32_t total = num + cnum;
  rc.num_own = num;
  rc.canonical_first = cfirst;
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
  rc.cls.push_back(prev);
  std::vector<uint32_t> key;
  // Moore rounds up to `last` (continuing from the rounds done so far)
  auto refine = [&](size_t last) {
    for (size_t round = rc.cls.size(); round <= last && !rc.fixpoint; ++round) {
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
        rc.fixpoint = true;
        break;
      }
      count = table.size();
      rc.cls.push_back(next);
      prev.swap(next);
    }
  };
  refine(1);  // round 1 picks the references; deeper agreement comes from the pair depths
  const std::vector<uint32_t>& c1 = rc.cls[std::min<size_t>(1, rc.cls.size() - 1)];
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
  rc.rep.resize(num);
  for (uint32_t s = 0; s < num; ++s) {
    if (auto it = canon_of.find(c1[s]); it != canon_of.end()) {
      rc.rep[s] = it->second;
      continue;
    }
    auto [it, fresh] = first_of.emplace(c1[s], s);
    rc.rep[s] = it->second;
    if (fresh && hub_bytes.any() && (byte_set(g, first + s) ^ hub_bytes).count() <= kHubByteDifference) {
      rc.rep[s] = hub;
      it->second = hub;  // the rest of the class derives from the hub as well
    }
  }
  std::vector<std::pair<uint32_t, uint32_t>> seeds;
  for (uint32_t x = 0; x < num; ++x)
    if (rc.rep[x] != x) seeds.push_back({x, rc.rep[x]});
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
  if (!pair_depths(rc.cls[0], seeds, edges, -1, max_pairs, rc.pair_depth)) {
    rc.pair_depth.clear();
    refine(kClassRounds);  // too many pairs: depth-bounded classes instead
  }
  if (!pair_depths(rc.cls[0], seeds, edges, '"', max_pairs, rc.pair_depth_quote_free)) rc.pair_depth_quote_free.clear();
}

}  // namespace toolken
