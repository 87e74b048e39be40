#include "counted_strings.h"

#include <algorithm>
#include <deque>
#include <unordered_map>

#include "compile_error.h"
#include "json_encoding.h"

namespace toolken {

namespace {
// Edge visits the length analysis may spend (lengths x edges); beyond it the string is refused.
constexpr uint64_t kMaxLengthWork = 40000000;
// Intervals over all states of one counted rule.
constexpr size_t kMaxLengthIntervals = size_t(1) << 20;
constexpr uint64_t kInf = ~uint64_t(0);

// One JSON-encoded character of any code point, minimal (prefix-free: its final states have no
// edges, its start is not final).
const Dfa& one_char() {
  static const Dfa d = [] {
    Nfa n;
    Frag f = json_char(n, {{0, kMaxCodePoint}});
    return minimize(determinize(n, f, 1000));
  }();
  return d;
}

// '"' (content ∩ characters*) '"' with the states after a completed character split off
// (completes = 1). Product states are (content state, character state, completed bit); the
// character automaton restarts at its start after each character.
void build_marked(const Dfa* content, size_t max_states, Dfa& out, std::vector<uint8_t>& completes) {
  const Dfa& u = one_char();
  Dfa any;
  if (!content) {
    if (!repeat_dfa(u, 0, -1, max_states, any)) throw CompileError("internal: the JSON character automaton is not prefix-free");
    content = &any;
  }
  const Dfa& c = *content;
  PairIndex ids;
  std::vector<Dfa::State> prod;
  std::vector<uint8_t> done;
  auto intern = [&](uint32_t cs, uint32_t us, uint8_t bit) -> uint32_t {
    bool fresh;
    uint32_t id = ids.intern(cs, us * 2 + bit, fresh);
    if (fresh) {
      if (ids.size() > max_states) too_many_states(max_states);
      done.push_back(bit);
    }
    return id;
  };
  intern(0, 0, 0);
  for (size_t cur = 0; cur < ids.size(); ++cur) {
    const auto [cs, key] = ids.pairs()[cur];
    const uint32_t us = key / 2;
    const Dfa::State& sc = c.states[cs];
    const Dfa::State& su = u.states[us];
    Dfa::State st;
    st.final = sc.final && us == 0;
    for_each_joint_range(sc.bytes.data(), sc.bytes.data() + sc.bytes.size(), su.bytes.data(), su.bytes.data() + su.bytes.size(),
                         [&](int lo, int hi, const ByteEdge* ea, const ByteEdge* eb) {
                           if (!ea || !eb) return true;
                           const bool fin = u.states[eb->to].final;
                           uint32_t to = intern(ea->to, fin ? 0 : eb->to, fin ? 1 : 0);
                           if (!st.bytes.empty() && st.bytes.back().to == to && st.bytes.back().hi + 1 == lo)
                             st.bytes.back().hi = static_cast<uint8_t>(hi);
                           else
                             st.bytes.push_back({static_cast<uint8_t>(lo), static_cast<uint8_t>(hi), to});
                           return true;
                         });
    prod.push_back(std::move(st));
  }
  // quote: 0 = before '"', product state p = p + 1, close = size + 1 (the one final state)
  const uint32_t close = static_cast<uint32_t>(prod.size() + 1);
  out.states.assign(prod.size() + 2, Dfa::State{});
  completes.assign(prod.size() + 2, 0);
  out.states[0].bytes.push_back({'"', '"', 1});
  for (size_t p = 0; p < prod.size(); ++p) {
    Dfa::State& st = out.states[p + 1];
    completes[p + 1] = done[p];
    for (const ByteEdge& e : prod[p].bytes) {
      if (prod[p].final && e.lo <= '"' && '"' <= e.hi) throw CompileError("internal: a string content automaton reads a raw quote");
      st.bytes.push_back({e.lo, e.hi, e.to + 1});
    }
    if (prod[p].final) {
      auto pos = std::lower_bound(st.bytes.begin(), st.bytes.end(), '"', [](const ByteEdge& x, int ch) { return x.hi < ch; });
      st.bytes.insert(pos, ByteEdge{'"', '"', close});
    }
  }
  out.states[close].final = true;
}

// Keeps the states reachable from the start that can reach the final state (BFS order), with
// their marks; false when the start cannot (empty language).
bool trim_marked(Dfa& d, std::vector<uint8_t>& completes) {
  const size_t n = d.states.size();
  std::vector<std::vector<uint32_t>> rev(n);
  for (size_t s = 0; s < n; ++s)
    for (const auto& e : d.states[s].bytes) rev[e.to].push_back(static_cast<uint32_t>(s));
  std::vector<char> co(n, 0);
  std::vector<uint32_t> stack;
  for (size_t s = 0; s < n; ++s)
    if (d.states[s].final) {
      co[s] = 1;
      stack.push_back(static_cast<uint32_t>(s));
    }
  while (!stack.empty()) {
    uint32_t s = stack.back();
    stack.pop_back();
    for (uint32_t p : rev[s])
      if (!co[p]) {
        co[p] = 1;
        stack.push_back(p);
      }
  }
  if (!co[0]) return false;
  std::vector<int64_t> id(n, -1);
  std::vector<uint32_t> order{0};
  id[0] = 0;
  for (size_t i = 0; i < order.size(); ++i)
    for (const auto& e : d.states[order[i]].bytes)
      if (co[e.to] && id[e.to] < 0) {
        id[e.to] = static_cast<int64_t>(order.size());
        order.push_back(e.to);
      }
  Dfa out;
  std::vector<uint8_t> marks;
  for (uint32_t s : order) {
    Dfa::State st;
    st.final = d.states[s].final;
    for (const auto& e : d.states[s].bytes)
      if (id[e.to] >= 0) st.bytes.push_back({e.lo, e.hi, static_cast<uint32_t>(id[e.to])});
    out.states.push_back(std::move(st));
    marks.push_back(completes[s]);
  }
  d = std::move(out);
  completes = std::move(marks);
  return true;
}

// The completion-length analysis of a trimmed marked automaton (see the header).
struct LengthAnalysis {
  std::vector<std::vector<uint32_t>> succ, pred;  // distinct successors / predecessors
  std::vector<uint64_t> lo, hi;                    // hi: kInf when unbounded
  std::vector<char> infinite;                      // infinitely many completions
};

// Shortest costs to the final state (sources: dist0 != kInf), an edge s -> t costing completes[t].
std::vector<uint64_t> shortest_back(const LengthAnalysis& a, const std::vector<uint8_t>& completes, std::vector<uint64_t> dist) {
  std::deque<uint32_t> q;
  for (uint32_t s = 0; s < dist.size(); ++s)
    if (dist[s] != kInf) q.push_back(s);
  std::vector<uint64_t> seen(dist.size(), kInf);
  while (!q.empty()) {
    uint32_t s = q.front();
    q.pop_front();
    if (seen[s] == dist[s]) continue;
    seen[s] = dist[s];
    for (uint32_t p : a.pred[s]) {
      uint64_t nd = dist[s] + completes[s];
      if (nd < dist[p]) {
        dist[p] = nd;
        if (completes[s]) q.push_back(p);
        else q.push_front(p);
      }
    }
  }
  return dist;
}

void analyse(const Dfa& d, const std::vector<uint8_t>& completes, LengthAnalysis& a) {
  const size_t n = d.states.size();
  a.succ.assign(n, {});
  a.pred.assign(n, {});
  for (uint32_t s = 0; s < n; ++s) {
    for (const auto& e : d.states[s].bytes) a.succ[s].push_back(e.to);
    std::sort(a.succ[s].begin(), a.succ[s].end());
    a.succ[s].erase(std::unique(a.succ[s].begin(), a.succ[s].end()), a.succ[s].end());
    for (uint32_t t : a.succ[s]) a.pred[t].push_back(s);
  }
  std::vector<uint64_t> init(n, kInf);
  for (uint32_t s = 0; s < n; ++s)
    if (d.states[s].final) init[s] = 0;
  a.lo = shortest_back(a, completes, init);
  // Kahn's order on the whole graph: the states never removed lie on or before a cycle
  std::vector<uint32_t> outdeg(n), order;
  for (uint32_t s = 0; s < n; ++s) outdeg[s] = static_cast<uint32_t>(a.succ[s].size());
  for (uint32_t s = 0; s < n; ++s)
    if (!outdeg[s]) order.push_back(s);
  for (size_t i = 0; i < order.size(); ++i)
    for (uint32_t p : a.pred[order[i]])
      if (--outdeg[p] == 0) order.push_back(p);
  a.infinite.assign(n, 1);
  a.hi.assign(n, kInf);
  for (uint32_t s : order) {  // successors come first
    a.infinite[s] = 0;
    uint64_t h = 0;
    for (uint32_t t : a.succ[s]) h = std::max(h, a.hi[t] + completes[t]);
    a.hi[s] = h;
  }
  // a cycle must complete a character (the character automaton is acyclic)
  std::vector<uint32_t> zero_out(n, 0), zorder;
  for (uint32_t s = 0; s < n; ++s)
    for (uint32_t t : a.succ[s]) zero_out[s] += !completes[t];
  for (uint32_t s = 0; s < n; ++s)
    if (!zero_out[s]) zorder.push_back(s);
  for (size_t i = 0; i < zorder.size(); ++i)
    if (!completes[zorder[i]])
      for (uint32_t p : a.pred[zorder[i]])
        if (--zero_out[p] == 0) zorder.push_back(p);
  if (zorder.size() != n) throw CompileError("internal: a string automaton cycles without completing a character");
}
}  // namespace

namespace {
// Whether some interval of [first, last) (sorted, disjoint) meets [a, b].
bool meets(const LengthInterval* first, const LengthInterval* last, uint64_t a, uint64_t b) {
  const LengthInterval* it = std::lower_bound(first, last, a, [](const LengthInterval& x, uint64_t v) { return x.hi < v; });
  return it != last && it->lo <= b;
}
}  // namespace

bool CountedString::live(uint32_t s, uint64_t k) const {
  if (max != kNoMaxLength && k > max) return false;
  const uint64_t a = k >= min ? 0 : min - k;
  const uint64_t b = max == kNoMaxLength ? kNoMaxLength : max - k;
  const LengthInterval* p0 = lengths.data() + begin[s];
  const LengthInterval* pm = lengths.data() + mid[s];
  const LengthInterval* pe = lengths.data() + begin[s + 1];
  if (meets(p0, pm, a, b)) return true;
  if (period == 0 || b < prefix || pm == pe) return false;
  const uint64_t lo = std::max(a, prefix);
  if (b - lo + 1 >= period) return true;  // the window holds every residue
  const uint64_t ra = (lo - prefix) % period, rb = (b - prefix) % period;
  if (ra <= rb) return meets(pm, pe, ra, rb);
  return meets(pm, pe, ra, period - 1) || meets(pm, pe, 0, rb);
}

CountedKind length_language(const Dfa* content, uint64_t min, uint64_t max, size_t max_states, Dfa& plain, CountedString& cs) {
  if (max < min) return CountedKind::kEmpty;
  if (content && content->states.empty()) return CountedKind::kEmpty;
  Dfa d;
  std::vector<uint8_t> completes;
  build_marked(content, max_states, d, completes);
  if (!trim_marked(d, completes)) return CountedKind::kEmpty;
  const size_t n = d.states.size();
  LengthAnalysis a;
  analyse(d, completes, a);
  const bool bounded = max != kNoMaxLength;
  // every string of the content within the bounds: no counter
  if (a.lo[0] >= min && (!bounded || (!a.infinite[0] && a.hi[0] <= max))) {
    plain = d.states.size() <= 20000 ? minimize(d) : std::move(d);
    return CountedKind::kUncounted;
  }
  cs.min = min;
  cs.max = max;
  std::vector<std::vector<LengthInterval>> sets(n);
  std::vector<uint64_t> cut(n, 0);  // sets[s][0, cut[s]): below `prefix`; the rest: residues
  if (!bounded) {
    // only "some completion >= need" is ever asked: the hull [lo, hi] answers it exactly
    uint64_t finite_hi = 0;
    for (uint32_t s = 0; s < n; ++s) {
      sets[s].push_back({a.lo[s], a.infinite[s] ? kNoMaxLength : a.hi[s]});
      cut[s] = 1;
      if (!a.infinite[s]) finite_hi = std::max(finite_hi, a.hi[s]);
    }
    cs.zone_from = finite_hi + 1;
    cs.full_window = true;
  } else {
    // B_l = {states that can end after exactly l more characters} = step(B_{l-1}); the sequence
    // of sets is ultimately periodic: run it until a set repeats
    uint64_t edges = 0;
    for (uint32_t s = 0; s < n; ++s) edges += a.succ[s].size() + 1;
    std::vector<uint64_t> in_layer(n, kInf);
    std::vector<std::vector<uint32_t>> layers;
    std::unordered_multimap<uint64_t, uint32_t> by_hash;
    uint64_t work = 0;
    size_t total = 0;
    std::vector<uint32_t> cur;
    for (uint64_t l = 0;; ++l) {
      cur.clear();
      auto put = [&](uint32_t s) {
        if (in_layer[s] == l) return;
        in_layer[s] = l;
        cur.push_back(s);
      };
      if (l == 0) {
        for (uint32_t s = 0; s < n; ++s)
          if (d.states[s].final) put(s);
      } else {
        for (uint32_t t : layers.back())
          if (completes[t])
            for (uint32_t p : a.pred[t]) put(p);
      }
      for (size_t i = 0; i < cur.size(); ++i)  // closure over edges that complete nothing
        if (!completes[cur[i]])
          for (uint32_t p : a.pred[cur[i]]) put(p);
      std::sort(cur.begin(), cur.end());
      uint64_t h = 0x9E3779B97F4A7C15ull ^ cur.size();
      for (uint32_t s : cur) h = (h ^ s) * 0x100000001B3ull;
      int64_t again = -1;
      for (auto [it, end] = by_hash.equal_range(h); it != end && again < 0; ++it)
        if (layers[it->second] == cur) again = it->second;
      if (again >= 0) {
        cs.prefix = static_cast<uint64_t>(again);
        cs.period = l - cs.prefix;
        break;
      }
      work += edges;
      if (work > kMaxLengthWork)
        throw CompileError("schema too large: a string's length structure exceeds the analysis budget (" +
                           std::to_string(l) + " lengths without a period)");
      for (uint32_t s : cur) {
        auto& v = sets[s];
        if (!v.empty() && v.back().hi + 1 == l) {
          v.back().hi = l;
        } else {
          v.push_back({l, l});
          if (++total > kMaxLengthIntervals) throw CompileError("schema too large: a string's length structure exceeds the analysis budget");
        }
      }
      by_hash.emplace(h, static_cast<uint32_t>(layers.size()));
      layers.push_back(cur);
    }
    // below `prefix`: absolute lengths; from it on: residues modulo `period`
    for (uint32_t s = 0; s < n; ++s) {
      std::vector<LengthInterval> v;
      for (const auto& x : sets[s]) {
        if (x.hi < cs.prefix) v.push_back(x);
        else if (x.lo < cs.prefix) v.push_back({x.lo, cs.prefix - 1});
      }
      cut[s] = v.size();
      for (const auto& x : sets[s])
        if (x.hi >= cs.prefix) v.push_back({std::max(x.lo, cs.prefix) - cs.prefix, x.hi - cs.prefix});
      sets[s] = std::move(v);
    }
    cs.zone_from = cs.prefix;
    cs.full_window = max - min + 1 >= cs.period;
  }
  cs.begin.assign(n + 1, 0);
  cs.mid.assign(n, 0);
  for (uint32_t s = 0; s < n; ++s) {
    cs.mid[s] = static_cast<uint32_t>(cs.lengths.size() + cut[s]);
    cs.lengths.insert(cs.lengths.end(), sets[s].begin(), sets[s].end());
    cs.begin[s + 1] = static_cast<uint32_t>(cs.lengths.size());
    cs.max_lo = std::max(cs.max_lo, a.lo[s]);
  }
  cs.min_at_quote_only = true;
  for (uint32_t s = 0; s < n && cs.min_at_quote_only; ++s) {
    if (d.states[s].final) continue;
    const uint32_t b = cs.begin[s], m = cs.mid[s], e = cs.begin[s + 1];
    if (!bounded) {  // the hull: [shortest, longest]
      cs.min_at_quote_only = m > b && cs.lengths[m - 1].hi == kNoMaxLength;
      continue;
    }
    // every residue, and below the prefix one run from the shortest up to the prefix (or none)
    const bool all_residues = e - m == 1 && cs.lengths[m].lo == 0 && cs.lengths[m].hi + 1 == cs.period;
    cs.min_at_quote_only = all_residues && (m == b || (m - b == 1 && cs.lengths[b].hi + 1 == cs.prefix));
  }
  if (!cs.live(0, 0)) return CountedKind::kEmpty;
  cs.dfa = std::move(d);
  cs.completes = std::move(completes);
  return CountedKind::kCounted;
}

}  // namespace toolken
