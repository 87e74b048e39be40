#include "automaton.h"

#include "json_value.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <functional>

namespace toolken {

// ---------------------------------------------------------------- Nfa combinators
int Nfa::add_state() {
  if (states_.size() >= max_states_) throw CompileError("schema too large: automaton state limit exceeded");
  states_.emplace_back();
  return static_cast<int>(states_.size() - 1);
}

Frag Nfa::empty() {
  int s = add_state(), e = add_state();
  add_eps(s, e);
  return {s, e};
}

Frag Nfa::byte_range(uint8_t lo, uint8_t hi) {
  int s = add_state(), e = add_state();
  add_bytes(s, lo, hi, e);
  return {s, e};
}

Frag Nfa::literal(const std::string& bytes) {
  int s = add_state(), cur = s;
  for (unsigned char c : bytes) {
    int n = add_state();
    add_bytes(cur, c, c, n);
    cur = n;
  }
  return {s, cur};
}

Frag Nfa::call(uint32_t rule) {
  int s = add_state(), e = add_state();
  add_call(s, rule, e);
  return {s, e};
}

Frag Nfa::seq(Frag a, Frag b) {
  add_eps(a.end, b.start);
  return {a.start, b.end};
}

Frag Nfa::seq(const std::vector<Frag>& parts) {
  if (parts.empty()) return empty();
  Frag f = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) f = seq(f, parts[i]);
  return f;
}

Frag Nfa::alt(const std::vector<Frag>& options) {
  int s = add_state(), e = add_state();
  for (const Frag& o : options) {
    add_eps(s, o.start);
    add_eps(o.end, e);
  }
  return {s, e};
}

Frag Nfa::opt(Frag a) {
  int s = add_state(), e = add_state();
  add_eps(s, a.start);
  add_eps(a.end, e);
  add_eps(s, e);
  return {s, e};
}

Frag Nfa::star(Frag a) {
  int s = add_state(), e = add_state();
  add_eps(s, a.start);
  add_eps(a.end, s);
  add_eps(s, e);
  return {s, e};
}

Frag Nfa::plus(Frag a) {
  int e = add_state();
  add_eps(a.end, a.start);
  add_eps(a.end, e);
  return {a.start, e};
}

Frag Nfa::repeat(const std::function<Frag()>& gen, int min, int max) {
  if (max >= 0 && max < min) return alt({});
  Frag f = empty();
  for (int i = 0; i < min; ++i) f = seq(f, gen());
  if (max < 0) return seq(f, star(gen()));
  // Optional tail as a chain x x x ... where every link may jump straight to the end: epsilon
  // closures stay O(1) per state (nesting (x(x)?)? would make them O(max - min)).
  int end = add_state();
  int cur = f.end;
  add_eps(cur, end);
  for (int i = min; i < max; ++i) {
    Frag g = gen();
    add_eps(cur, g.start);
    cur = g.end;
    add_eps(cur, end);
  }
  return {f.start, end};
}

// ---------------------------------------------------------------- Dfa
bool Dfa::has_calls() const {
  for (const auto& s : states)
    if (!s.calls.empty()) return true;
  return false;
}

std::string Dfa::signature() const {
  size_t size = 4;
  for (const auto& s : states) size += 12 + s.bytes.size() * 6 + s.calls.size() * 8;
  std::string sig(size, '\0');
  char* p = sig.data();
  auto put = [&](uint32_t v) {
    std::memcpy(p, &v, 4);
    p += 4;
  };
  put(static_cast<uint32_t>(states.size()));
  for (const auto& s : states) {
    put(s.final ? 1 : 0);
    put(static_cast<uint32_t>(s.bytes.size()));
    for (const auto& e : s.bytes) {
      *p++ = static_cast<char>(e.lo);
      *p++ = static_cast<char>(e.hi);
      put(e.to);
    }
    put(static_cast<uint32_t>(s.calls.size()));
    for (const auto& c : s.calls) {
      put(c.rule);
      put(c.to);
    }
  }
  return sig;
}

PairIndex::PairIndex(size_t expected)
    : slots_(size_t(1) << (65 - __builtin_clzll(expected * 2 + 16)), 0xFFFFFFFFu) {
  pairs_.reserve(expected);
}

size_t PairIndex::slot_of(uint64_t key) const {
  uint64_t h = (key ^ (key >> 31)) * 0xFF51AFD7ED558CCDull;  // both halves reach the low bits
  return static_cast<size_t>(h ^ (h >> 32)) & (slots_.size() - 1);
}

uint32_t PairIndex::intern(uint32_t x, uint32_t y, bool& fresh) {
  constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  auto key_of = [](const std::pair<uint32_t, uint32_t>& p) { return (static_cast<uint64_t>(p.first) << 32) | p.second; };
  const uint64_t key = key_of({x, y});
  size_t i = slot_of(key);
  for (; slots_[i] != kEmpty; i = (i + 1) & (slots_.size() - 1))
    if (key_of(pairs_[slots_[i]]) == key) {
      fresh = false;
      return slots_[i];
    }
  fresh = true;
  const uint32_t id = static_cast<uint32_t>(pairs_.size());
  pairs_.push_back({x, y});
  slots_[i] = id;
  if (pairs_.size() * 2 > slots_.size()) {
    slots_.assign(slots_.size() * 2, kEmpty);
    for (uint32_t k = 0; k < pairs_.size(); ++k) {
      size_t j = slot_of(key_of(pairs_[k]));
      while (slots_[j] != kEmpty) j = (j + 1) & (slots_.size() - 1);
      slots_[j] = k;
    }
  }
  return id;
}

namespace {

[[noreturn]] void too_many_states(size_t max_states) {
  throw CompileError("schema too large: more than " + std::to_string(max_states) + " automaton states in one rule");
}

struct VecHash {
  size_t operator()(const std::vector<int>& v) const {
    size_t h = 1469598103934665603ull;
    for (int x : v) h = (h ^ static_cast<size_t>(x)) * 1099511628211ull;
    return h;
  }
};

// Sorted epsilon closure of `set` (in place; `stack` is scratch).
void eps_closure(const Nfa& nfa, std::vector<int>& set, std::vector<uint32_t>& mark, uint32_t& gen, std::vector<int>& stack) {
  ++gen;
  stack.assign(set.begin(), set.end());
  set.clear();
  for (int s : stack) mark[s] = gen;
  while (!stack.empty()) {
    int s = stack.back();
    stack.pop_back();
    set.push_back(s);
    for (int t : nfa.states()[s].eps)
      if (mark[t] != gen) {
        mark[t] = gen;
        stack.push_back(t);
      }
  }
  std::sort(set.begin(), set.end());
}

}  // namespace

Dfa determinize(const Nfa& nfa, Frag frag, size_t max_states) {
  Dfa dfa;
  std::vector<uint32_t> mark(nfa.size(), 0);
  uint32_t gen = 0;
  std::unordered_map<std::vector<int>, int, VecHash> ids;
  std::deque<std::vector<int>> sets;  // stable references while new sets are added
  std::vector<int> stack;
  // `set` (scratch, closed in place) -> DFA state id; copies it only when it is new
  auto intern = [&](std::vector<int>& set) -> int {
    eps_closure(nfa, set, mark, gen, stack);
    auto it = ids.find(set);
    if (it != ids.end()) return it->second;
    if (sets.size() >= max_states) too_many_states(max_states);
    int id = static_cast<int>(sets.size());
    ids.emplace(set, id);
    sets.push_back(set);
    dfa.states.emplace_back();
    return id;
  };
  std::vector<int> scratch{frag.start};
  intern(scratch);
  std::vector<int> points;
  std::vector<const ByteEdge*> edges, active;
  std::vector<std::pair<uint32_t, int>> calls;
  for (size_t cur = 0; cur < sets.size(); ++cur) {
    const std::vector<int>& set = sets[cur];
    Dfa::State st;
    points.clear();
    edges.clear();
    calls.clear();
    for (int s : set) {
      if (s == frag.end) st.final = true;
      for (const auto& e : nfa.states()[s].bytes) {
        points.push_back(e.lo);
        points.push_back(e.hi + 1);
        edges.push_back(&e);
      }
      for (const auto& c : nfa.states()[s].calls) calls.push_back({c.rule, static_cast<int>(c.to)});
    }
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
    std::sort(edges.begin(), edges.end(), [](const ByteEdge* x, const ByteEdge* y) { return x->lo < y->lo; });
    // sweep the elementary intervals [points[k], points[k+1]) with the edges covering them
    active.clear();
    size_t next_edge = 0;
    for (size_t k = 0; k + 1 < points.size(); ++k) {
      int p = points[k];
      while (next_edge < edges.size() && edges[next_edge]->lo <= p) active.push_back(edges[next_edge++]);
      active.erase(std::remove_if(active.begin(), active.end(), [p](const ByteEdge* e) { return e->hi < p; }), active.end());
      if (active.empty()) continue;
      scratch.clear();
      for (const ByteEdge* e : active) scratch.push_back(static_cast<int>(e->to));
      std::sort(scratch.begin(), scratch.end());
      scratch.erase(std::unique(scratch.begin(), scratch.end()), scratch.end());
      uint32_t to = static_cast<uint32_t>(intern(scratch));
      uint8_t lo = static_cast<uint8_t>(p), hi = static_cast<uint8_t>(points[k + 1] - 1);
      if (!st.bytes.empty() && st.bytes.back().to == to && st.bytes.back().hi + 1 == lo) {
        st.bytes.back().hi = hi;
      } else {
        st.bytes.push_back({lo, hi, to});
      }
    }
    std::sort(calls.begin(), calls.end());
    calls.erase(std::unique(calls.begin(), calls.end()), calls.end());
    for (size_t k = 0; k < calls.size();) {
      size_t e = k;
      scratch.clear();
      while (e < calls.size() && calls[e].first == calls[k].first) scratch.push_back(calls[e++].second);
      st.calls.push_back({calls[k].first, static_cast<uint32_t>(intern(scratch))});
      k = e;
    }
    dfa.states[cur] = std::move(st);
  }
  trim(dfa);
  return dfa;
}

void trim(Dfa& d) {
  size_t n = d.states.size();
  if (n == 0) return;
  // co-reachability: reverse edges (compressed rows: rev[rev_begin[t], rev_begin[t+1]) -> t)
  std::vector<uint32_t> rev_begin(n + 1, 0), rev;
  for (size_t s = 0; s < n; ++s) {
    for (const auto& e : d.states[s].bytes) ++rev_begin[e.to + 1];
    for (const auto& c : d.states[s].calls) ++rev_begin[c.to + 1];
  }
  for (size_t t = 0; t < n; ++t) rev_begin[t + 1] += rev_begin[t];
  rev.resize(rev_begin[n]);
  {
    std::vector<uint32_t> fill(rev_begin.begin(), rev_begin.end() - 1);
    for (size_t s = 0; s < n; ++s) {
      for (const auto& e : d.states[s].bytes) rev[fill[e.to]++] = static_cast<uint32_t>(s);
      for (const auto& c : d.states[s].calls) rev[fill[c.to]++] = static_cast<uint32_t>(s);
    }
  }
  std::vector<char> live(n, 0);
  std::vector<uint32_t> stack;
  for (size_t s = 0; s < n; ++s)
    if (d.states[s].final) {
      live[s] = 1;
      stack.push_back(static_cast<uint32_t>(s));
    }
  while (!stack.empty()) {
    uint32_t s = stack.back();
    stack.pop_back();
    for (uint32_t k = rev_begin[s]; k < rev_begin[s + 1]; ++k)
      if (uint32_t p = rev[k]; !live[p]) {
        live[p] = 1;
        stack.push_back(p);
      }
  }
  if (!live[0]) {
    d.states.clear();
    return;
  }
  // reachability from the start through live states, renumbering in BFS order
  std::vector<int> newid(n, -1);
  std::vector<uint32_t> order{0};
  newid[0] = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& st = d.states[order[i]];
    auto visit = [&](uint32_t t) {
      if (live[t] && newid[t] < 0) {
        newid[t] = static_cast<int>(order.size());
        order.push_back(t);
      }
    };
    for (const auto& e : st.bytes) visit(e.to);
    for (const auto& c : st.calls) visit(c.to);
  }
  std::vector<Dfa::State> out(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& st = d.states[order[i]];
    out[i].final = st.final;
    for (const auto& e : st.bytes)
      if (newid[e.to] >= 0) out[i].bytes.push_back({e.lo, e.hi, static_cast<uint32_t>(newid[e.to])});
    for (const auto& c : st.calls)
      if (newid[c.to] >= 0) out[i].calls.push_back({c.rule, static_cast<uint32_t>(newid[c.to])});
  }
  d.states = std::move(out);
}

Dfa minimize(const Dfa& d) {
  // Hopcroft's partition refinement (O(m log n)) over the automaton completed with a dead state.
  // Symbols: the elementary byte intervals of all edges, then one per callee rule.
  size_t n = d.states.size();
  if (n <= 1) return d;
  std::vector<int> bounds{0, 256};
  std::vector<uint32_t> callees;
  for (const auto& st : d.states) {
    for (const auto& e : st.bytes) {
      bounds.push_back(e.lo);
      bounds.push_back(e.hi + 1);
    }
    for (const auto& c : st.calls) callees.push_back(c.rule);
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  std::sort(callees.begin(), callees.end());
  callees.erase(std::unique(callees.begin(), callees.end()), callees.end());
  const size_t num_intervals = bounds.size() - 1, num_symbols = num_intervals + callees.size();
  uint16_t interval_of[256];
  for (size_t k = 0; k < num_intervals; ++k)
    for (int c = bounds[k]; c < bounds[k + 1]; ++c) interval_of[c] = static_cast<uint16_t>(k);
  const size_t total = n + 1;  // state n: dead
  const uint32_t dead = static_cast<uint32_t>(n);
  // delta[s * num_symbols + a]
  std::vector<uint32_t> delta(total * num_symbols, dead);
  for (size_t s = 0; s < n; ++s) {
    uint32_t* row = &delta[s * num_symbols];
    for (const auto& e : d.states[s].bytes)
      for (size_t k = interval_of[e.lo]; k <= interval_of[e.hi]; ++k) row[k] = e.to;
    for (const auto& c : d.states[s].calls)
      row[num_intervals + (std::lower_bound(callees.begin(), callees.end(), c.rule) - callees.begin())] = c.to;
  }
  // inverse transitions, CSR by (symbol, target)
  std::vector<uint32_t> pre_begin(num_symbols * total + 1, 0), pre(total * num_symbols);
  for (size_t s = 0; s < total; ++s)
    for (size_t a = 0; a < num_symbols; ++a) ++pre_begin[a * total + delta[s * num_symbols + a] + 1];
  for (size_t i = 0; i + 1 < pre_begin.size(); ++i) pre_begin[i + 1] += pre_begin[i];
  {
    std::vector<uint32_t> fill(pre_begin.begin(), pre_begin.end() - 1);
    for (size_t s = 0; s < total; ++s)
      for (size_t a = 0; a < num_symbols; ++a) pre[fill[a * total + delta[s * num_symbols + a]]++] = static_cast<uint32_t>(s);
  }
  // partition: elems[first[b], end[b]) are block b's states; marked[b] of them (at the front) are marked
  std::vector<uint32_t> elems(total), pos(total), block(total), first, end, marked;
  {
    size_t k = 0;
    for (size_t s = 0; s < n; ++s)
      if (d.states[s].final) elems[k++] = static_cast<uint32_t>(s);
    size_t num_final = k;
    for (size_t s = 0; s <= n; ++s)
      if (s == n || !d.states[s].final) elems[k++] = static_cast<uint32_t>(s);
    if (num_final > 0) {
      first.push_back(0);
      end.push_back(static_cast<uint32_t>(num_final));
    }
    first.push_back(static_cast<uint32_t>(num_final));
    end.push_back(static_cast<uint32_t>(total));
    marked.assign(first.size(), 0);
    for (uint32_t b = 0; b < first.size(); ++b)
      for (uint32_t i = first[b]; i < end[b]; ++i) {
        block[elems[i]] = b;
        pos[elems[i]] = i;
      }
  }
  std::vector<std::pair<uint32_t, uint32_t>> work;  // (block, symbol)
  std::vector<uint8_t> in_work(total * num_symbols, 0);
  auto push = [&](uint32_t b, size_t a) {
    if (!in_work[b * num_symbols + a]) {
      in_work[b * num_symbols + a] = 1;
      work.push_back({b, static_cast<uint32_t>(a)});
    }
  };
  if (first.size() == 2) {
    uint32_t smaller = end[0] - first[0] <= end[1] - first[1] ? 0 : 1;
    for (size_t a = 0; a < num_symbols; ++a) push(smaller, a);
  }
  std::vector<uint32_t> splitter, touched;
  while (!work.empty()) {
    auto [sb, a] = work.back();
    work.pop_back();
    in_work[sb * num_symbols + a] = 0;
    splitter.assign(elems.begin() + first[sb], elems.begin() + end[sb]);
    touched.clear();
    for (uint32_t t : splitter)
      for (uint32_t i = pre_begin[a * total + t], e = pre_begin[a * total + t + 1]; i < e; ++i) {
        uint32_t s = pre[i], b = block[s];
        if (marked[b] == 0) touched.push_back(b);
        uint32_t dst = first[b] + marked[b]++;  // swap s to the end of b's marked prefix
        uint32_t other = elems[dst];
        std::swap(elems[pos[s]], elems[dst]);
        pos[other] = pos[s];
        pos[s] = dst;
      }
    for (uint32_t b : touched) {
      uint32_t m = marked[b];
      marked[b] = 0;
      if (m == end[b] - first[b]) continue;
      uint32_t nb = static_cast<uint32_t>(first.size());
      first.push_back(first[b]);
      end.push_back(first[b] + m);
      marked.push_back(0);
      first[b] += m;
      for (uint32_t i = first[nb]; i < end[nb]; ++i) block[elems[i]] = nb;
      bool nb_smaller = end[nb] - first[nb] <= end[b] - first[b];
      for (size_t c = 0; c < num_symbols; ++c) {
        if (in_work[b * num_symbols + c]) push(nb, c);
        else push(nb_smaller ? nb : b, c);
      }
    }
  }
  const uint32_t dead_class = block[dead];
  if (block[0] == dead_class) return Dfa{};  // empty language
  std::vector<uint32_t> cls(block.begin(), block.begin() + static_cast<long>(n));
  size_t num_classes = first.size();
  // renumber so that the start's class is 0, in BFS order
  std::vector<int> newid(num_classes, -1);
  std::vector<uint32_t> rep(num_classes, 0);
  for (size_t s = n; s-- > 0;) rep[cls[s]] = static_cast<uint32_t>(s);
  std::vector<uint32_t> order{cls[0]};
  newid[cls[0]] = 0;
  Dfa out;
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& st = d.states[rep[order[i]]];
    for (const auto& e : st.bytes)
      if (cls[e.to] != dead_class && newid[cls[e.to]] < 0) {
        newid[cls[e.to]] = static_cast<int>(order.size());
        order.push_back(cls[e.to]);
      }
    for (const auto& c : st.calls)
      if (cls[c.to] != dead_class && newid[cls[c.to]] < 0) {
        newid[cls[c.to]] = static_cast<int>(order.size());
        order.push_back(cls[c.to]);
      }
  }
  out.states.resize(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& st = d.states[rep[order[i]]];
    auto& o = out.states[i];
    o.final = st.final;
    for (const auto& e : st.bytes) {
      if (cls[e.to] == dead_class) continue;
      uint32_t to = static_cast<uint32_t>(newid[cls[e.to]]);
      if (!o.bytes.empty() && o.bytes.back().to == to && o.bytes.back().hi + 1 == e.lo) o.bytes.back().hi = e.hi;
      else o.bytes.push_back({e.lo, e.hi, to});
    }
    for (const auto& c : st.calls)
      if (cls[c.to] != dead_class) o.calls.push_back({c.rule, static_cast<uint32_t>(newid[cls[c.to]])});
  }
  return out;
}

namespace {
enum class ProductOp { kAnd, kSub, kOr };

// Reachable product of two call-free DFAs; a component index of -1 is that automaton's dead state.
// Edges are swept range by range (both edge lists are sorted and disjoint), not byte by byte.
Dfa product(const Dfa& a, const Dfa& b, ProductOp op, size_t max_states) {
  Dfa out;
  bool a_empty = a.states.empty(), b_empty = b.states.empty();
  if (a_empty && (op != ProductOp::kOr || b_empty)) return out;
  PairIndex ids;  // component index + 1; 0 is that automaton's dead state
  auto intern = [&](uint32_t i, uint32_t j) -> uint32_t {
    bool fresh;
    uint32_t id = ids.intern(i, j, fresh);
    if (fresh && ids.size() > max_states) throw CompileError("schema too large: string constraint automaton exceeds the state limit");
    return id;
  };
  intern(a_empty ? 0 : 1, b_empty ? 0 : 1);
  for (size_t cur = 0; cur < ids.size(); ++cur) {
    auto [i, j] = ids.pairs()[cur];
    const Dfa::State* sa = i ? &a.states[i - 1] : nullptr;
    const Dfa::State* sb = j ? &b.states[j - 1] : nullptr;
    bool fa = sa && sa->final, fb = sb && sb->final;
    Dfa::State st;
    st.final = op == ProductOp::kAnd ? (fa && fb) : op == ProductOp::kSub ? (fa && !fb) : (fa || fb);
    auto edges = [](const Dfa::State* s, const ByteEdge*& begin, const ByteEdge*& end) {
      begin = s ? s->bytes.data() : nullptr;
      end = s ? s->bytes.data() + s->bytes.size() : nullptr;
    };
    const ByteEdge *ab, *ae, *bb, *be;
    edges(sa, ab, ae);
    edges(sb, bb, be);
    for_each_joint_range(ab, ae, bb, be, [&](int lo, int hi, const ByteEdge* ea, const ByteEdge* eb) {
      bool keep = op == ProductOp::kAnd ? (ea && eb) : op == ProductOp::kSub ? ea != nullptr : (ea || eb);
      if (!keep) return true;
      uint32_t to = intern(ea ? ea->to + 1 : 0, eb ? eb->to + 1 : 0);
      if (!st.bytes.empty() && st.bytes.back().to == to && st.bytes.back().hi + 1 == lo) st.bytes.back().hi = static_cast<uint8_t>(hi);
      else st.bytes.push_back({static_cast<uint8_t>(lo), static_cast<uint8_t>(hi), to});
      return true;
    });
    out.states.push_back(std::move(st));
  }
  trim(out);
  return out;
}

bool incoming_to_start(const Dfa& d) {
  for (const auto& s : d.states) {
    for (const auto& e : s.bytes)
      if (e.to == 0) return true;
    for (const auto& c : s.calls)
      if (c.to == 0) return true;
  }
  return false;
}
}  // namespace

Dfa intersect(const Dfa& a, const Dfa& b, bool subtract, size_t max_states) {
  return product(a, b, subtract ? ProductOp::kSub : ProductOp::kAnd, max_states);
}

Dfa unite(std::vector<Dfa>& parts0, size_t max_states) {
  std::vector<Dfa*> parts;
  for (Dfa& d : parts0)
    if (!d.states.empty()) parts.push_back(&d);
  if (parts.empty()) return Dfa{};
  if (parts.size() == 1) return std::move(*parts[0]);
  // Fast path (the usual leaf mix: strings, numbers, literals): starts without incoming edges
  // whose first bytes are disjoint. The union is then one shared start and every other state as is.
  bool disjoint = true;
  std::vector<uint8_t> first(256, 0);
  for (const Dfa* d : parts) {
    if (d->has_calls() || incoming_to_start(*d)) {
      disjoint = false;
      break;
    }
    for (const auto& e : d->states[0].bytes)
      for (int c = e.lo; c <= e.hi && disjoint; ++c) disjoint = !first[c]++;
    if (!disjoint) break;
  }
  if (!disjoint) {
    Dfa acc = std::move(*parts[0]);
    for (size_t k = 1; k < parts.size(); ++k) acc = product(acc, *parts[k], ProductOp::kOr, max_states);
    return acc;
  }
  Dfa out;
  size_t total = 1;
  for (const Dfa* d : parts) total += d->states.size() - 1;
  if (total > max_states) too_many_states(max_states);
  out.states.reserve(total);
  out.states.resize(1);
  uint32_t offset = 1;
  for (Dfa* d : parts) {
    auto map = [&](uint32_t t) { return offset + t - 1; };  // state 0 (the start) is never a target
    out.states[0].final = out.states[0].final || d->states[0].final;
    for (const auto& e : d->states[0].bytes) out.states[0].bytes.push_back({e.lo, e.hi, map(e.to)});
    for (size_t s = 1; s < d->states.size(); ++s) {
      Dfa::State& st = d->states[s];
      for (auto& e : st.bytes) e.to = map(e.to);
      out.states.push_back(std::move(st));
    }
    offset += static_cast<uint32_t>(d->states.size() - 1);
  }
  auto& sb = out.states[0].bytes;
  std::sort(sb.begin(), sb.end(), [](const ByteEdge& x, const ByteEdge& y) { return x.lo < y.lo; });
  return out;
}

bool repeat_dfa(const Dfa& unit, int min, int max, size_t max_states, Dfa& out) {
  size_t n = unit.states.size();
  if (n == 0 || unit.states[0].final || unit.has_calls() || min < 0 || (max >= 0 && max < min)) return false;
  // prefix-free unit: final states end every path, so a finished copy can be glued to the next start
  std::vector<int> local(n, -1);  // unit state -> index within a copy (-1: final)
  int per_copy = 0;
  for (size_t s = 0; s < n; ++s) {
    const auto& st = unit.states[s];
    if (st.final) {
      if (!st.bytes.empty()) return false;
    } else {
      local[s] = per_copy++;
    }
  }
  if (local[0] != 0) return false;
  int copies = max < 0 ? min + 1 : max;  // copy k reads character k+1; unbounded: the last copy loops
  size_t total = static_cast<size_t>(copies) * per_copy + (max < 0 ? 0 : 1);
  if (total > max_states) too_many_states(max_states);
  out.states.assign(total, Dfa::State{});
  auto start_of = [&](int k) -> uint32_t {  // state reached after k characters
    if (max < 0 && k > min) k = min;
    return static_cast<uint32_t>(k * per_copy);  // k == max: the lone end state
  };
  for (int k = 0; k < copies; ++k) {
    uint32_t base = static_cast<uint32_t>(k * per_copy);
    for (size_t s = 0; s < n; ++s) {
      if (local[s] < 0) continue;
      Dfa::State& st = out.states[base + local[s]];
      st.bytes.reserve(unit.states[s].bytes.size());
      for (const auto& e : unit.states[s].bytes) {
        uint32_t to = local[e.to] < 0 ? start_of(k + 1) : base + static_cast<uint32_t>(local[e.to]);
        st.bytes.push_back({e.lo, e.hi, to});
      }
    }
    out.states[base].final = k >= min;
  }
  if (max >= 0) out.states.back().final = true;
  return true;
}

bool quote_dfa(Dfa& d) {
  if (d.states.empty() || d.has_calls()) return false;
  for (const auto& s : d.states)
    if (s.final)
      for (const auto& e : s.bytes)
        if (e.lo <= '"' && '"' <= e.hi) return false;
  uint32_t end = static_cast<uint32_t>(d.states.size() + 1);
  for (auto& s : d.states) {
    for (auto& e : s.bytes) ++e.to;
    if (s.final) {
      auto pos = std::lower_bound(s.bytes.begin(), s.bytes.end(), '"', [](const ByteEdge& x, int c) { return x.hi < c; });
      s.bytes.insert(pos, ByteEdge{'"', '"', end});
      s.final = false;
    }
  }
  d.states.insert(d.states.begin(), Dfa::State{});
  d.states[0].bytes.push_back({'"', '"', 1});
  d.states.emplace_back();
  d.states.back().final = true;
  return true;
}

// ---------------------------------------------------------------- code point sets
CpRanges cp_normalize(CpRanges r) {
  std::sort(r.begin(), r.end());
  CpRanges out;
  for (const auto& p : r) {
    if (p.first > p.second) continue;
    if (!out.empty() && p.first <= out.back().second + 1) out.back().second = std::max(out.back().second, p.second);
    else out.push_back(p);
  }
  return out;
}

CpRanges cp_complement(const CpRanges& r0) {
  CpRanges r = cp_normalize(r0), out;
  uint32_t next = 0;
  for (const auto& p : r) {
    if (p.first > next) out.push_back({next, p.first - 1});
    next = p.second + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

CpRanges cp_intersect(const CpRanges& a0, const CpRanges& b0) {
  CpRanges a = cp_normalize(a0), b = cp_normalize(b0), out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    uint32_t lo = std::max(a[i].first, b[j].first), hi = std::min(a[i].second, b[j].second);
    if (lo <= hi) out.push_back({lo, hi});
    if (a[i].second < b[j].second) ++i;
    else ++j;
  }
  return out;
}

CpRanges cp_subtract(const CpRanges& a, const CpRanges& b) { return cp_intersect(a, cp_complement(b)); }

bool cp_contains(const CpRanges& r, uint32_t cp) {
  for (const auto& p : r)
    if (p.first <= cp && cp <= p.second) return true;
  return false;
}

namespace {

using DigitSeq = std::vector<std::pair<int, int>>;  // per position: inclusive digit-value range

uint64_t ipow(uint64_t base, int e) {
  uint64_t r = 1;
  for (int i = 0; i < e; ++i) r *= base;
  return r;
}

// All fixed-width (ndig digits, base `base`) numerals of the values in [lo, hi], as a union of
// digit-range sequences (the classic range-to-regex split).
void split_digits(uint64_t lo, uint64_t hi, int ndig, uint64_t base, DigitSeq& prefix, std::vector<DigitSeq>& out) {
  if (ndig == 0) {
    out.push_back(prefix);
    return;
  }
  uint64_t p = ipow(base, ndig - 1);
  uint64_t a = lo / p, b = hi / p;
  if (a == b) {
    prefix.push_back({static_cast<int>(a), static_cast<int>(a)});
    split_digits(lo % p, hi % p, ndig - 1, base, prefix, out);
    prefix.pop_back();
    return;
  }
  if (lo % p != 0) {
    prefix.push_back({static_cast<int>(a), static_cast<int>(a)});
    split_digits(lo % p, p - 1, ndig - 1, base, prefix, out);
    prefix.pop_back();
    ++a;
  }
  bool upper_partial = hi % p != p - 1;
  if (upper_partial) --b;
  if (a <= b) {
    prefix.push_back({static_cast<int>(a), static_cast<int>(b)});
    for (int k = 1; k < ndig; ++k) prefix.push_back({0, static_cast<int>(base - 1)});
    out.push_back(prefix);
    prefix.resize(prefix.size() - static_cast<size_t>(ndig));
  }
  if (upper_partial) {
    uint64_t hb = hi / p;
    prefix.push_back({static_cast<int>(hb), static_cast<int>(hb)});
    split_digits(0, hi % p, ndig - 1, base, prefix, out);
    prefix.pop_back();
  }
}

// Adds byte edges from `from` to `to` for digit values [a, b] in base 10 or 16 (hex: both cases).
void add_digit_edges(Nfa& nfa, int from, int to, int a, int b) {
  int dlo = a, dhi = std::min(b, 9);
  if (dlo <= dhi) nfa.add_bytes(from, static_cast<uint8_t>('0' + dlo), static_cast<uint8_t>('0' + dhi), to);
  int xlo = std::max(a, 10), xhi = b;
  if (xlo <= xhi) {
    nfa.add_bytes(from, static_cast<uint8_t>('a' + xlo - 10), static_cast<uint8_t>('a' + xhi - 10), to);
    nfa.add_bytes(from, static_cast<uint8_t>('A' + xlo - 10), static_cast<uint8_t>('A' + xhi - 10), to);
  }
}

// Chains each digit sequence from `start` to `end`.
void add_digit_seqs(Nfa& nfa, int start, int end, const std::vector<DigitSeq>& seqs) {
  for (const auto& seq : seqs) {
    int cur = start;
    for (size_t k = 0; k < seq.size(); ++k) {
      int nxt = k + 1 == seq.size() ? end : nfa.add_state();
      add_digit_edges(nfa, cur, nxt, seq[k].first, seq[k].second);
      cur = nxt;
    }
  }
}

// `\u` + 4 hex digits for values in [lo, hi] (<= 0xFFFF), from `from` to `to`.
void add_u_escape(Nfa& nfa, int from, int to, uint32_t lo, uint32_t hi) {
  std::vector<DigitSeq> seqs;
  DigitSeq prefix;
  split_digits(lo, hi, 4, 16, prefix, seqs);
  int u = nfa.add_state();
  nfa.add_bytes(from, '\\', '\\', u);
  int h = nfa.add_state();
  nfa.add_bytes(u, 'u', 'u', h);
  add_digit_seqs(nfa, h, to, seqs);
}

// UTF-8 byte-range sequences covering code points [lo, hi] (no surrogates inside).
void utf8_sequences(uint32_t lo, uint32_t hi, std::vector<std::vector<std::pair<uint8_t, uint8_t>>>& out) {
  static const uint32_t kLimits[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  for (int n = 0; n < 4; ++n) {
    uint32_t start = n == 0 ? 0 : kLimits[n - 1] + 1;
    if (lo <= kLimits[n] && hi >= start && lo <= hi) {
      uint32_t a = std::max(lo, start), b = std::min(hi, kLimits[n]);
      if (a < start || a > b) continue;
      if (std::max(lo, start) > kLimits[n]) continue;
      // split so that every continuation position spans a full or a single byte range
      std::function<void(uint32_t, uint32_t)> rec = [&](uint32_t x, uint32_t y) {
        for (int i = 1; i <= n; ++i) {
          uint32_t m = (1u << (6 * i)) - 1;
          if ((x & ~m) != (y & ~m)) {
            if ((x & m) != 0) {
              rec(x, x | m);
              rec((x | m) + 1, y);
              return;
            }
            if ((y & m) != m) {
              rec(x, (y & ~m) - 1);
              rec(y & ~m, y);
              return;
            }
          }
        }
        std::string ex, ey;
        append_utf8(ex, x);
        append_utf8(ey, y);
        std::vector<std::pair<uint8_t, uint8_t>> seq;
        for (size_t k = 0; k < ex.size(); ++k) seq.push_back({static_cast<uint8_t>(ex[k]), static_cast<uint8_t>(ey[k])});
        out.push_back(std::move(seq));
      };
      rec(a, b);
    }
  }
}

}  // namespace

namespace {
void add_utf8_ranges(Nfa& nfa, int start, int end, const CpRanges& raw) {
  std::vector<std::vector<std::pair<uint8_t, uint8_t>>> seqs;
  for (const auto& r : raw) utf8_sequences(r.first, r.second, seqs);
  for (const auto& seq : seqs) {
    int cur = start;
    for (size_t k = 0; k < seq.size(); ++k) {
      int nxt = k + 1 == seq.size() ? end : nfa.add_state();
      nfa.add_bytes(cur, seq[k].first, seq[k].second, nxt);
      cur = nxt;
    }
  }
}
}  // namespace

Frag json_char(Nfa& nfa, const CpRanges& set0) {
  // fast path: one printable ASCII character that JSON never escapes (json.dumps writes it raw)
  if (set0.size() == 1 && set0[0].first == set0[0].second && set0[0].first >= 0x20 && set0[0].first < 0x7F &&
      set0[0].first != '"' && set0[0].first != '\\' && set0[0].first != '/') {
    return nfa.byte_range(static_cast<uint8_t>(set0[0].first), static_cast<uint8_t>(set0[0].first));
  }
  CpRanges set = cp_normalize(set0);
  int start = nfa.add_state(), end = nfa.add_state();
  const CpRanges kSurrogates{{0xD800, 0xDFFF}};
  // raw: everything JSON allows unescaped
  CpRanges raw = cp_subtract(set, cp_normalize({{0, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0xD800, 0xDFFF}}));
  add_utf8_ranges(nfa, start, end, raw);
  // short escapes
  static const std::pair<uint32_t, char> kShort[] = {{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {8, 'b'},
                                                     {12, 'f'}, {10, 'n'}, {13, 'r'}, {9, 't'}};
  int esc = -1;
  for (const auto& p : kShort) {
    if (!cp_contains(set, p.first)) continue;
    if (esc < 0) {
      esc = nfa.add_state();
      nfa.add_bytes(start, '\\', '\\', esc);
    }
    nfa.add_bytes(esc, static_cast<uint8_t>(p.second), static_cast<uint8_t>(p.second), end);
  }
  // \uXXXX: control characters without a short form, DEL and non-ASCII BMP characters (as json.dumps writes them)
  CpRanges uesc = cp_subtract(cp_intersect(set, {{0, 0x1F}, {0x7F, 0xFFFF}}),
                              cp_normalize({{8, 10}, {12, 13}, {0xD800, 0xDFFF}}));
  for (const auto& r : uesc) add_u_escape(nfa, start, end, r.first, r.second);
  // surrogate pairs for astral characters
  for (const auto& r : cp_intersect(set, {{0x10000, kMaxCodePoint}})) {
    uint32_t lo = r.first - 0x10000, hi = r.second - 0x10000;
    uint32_t hlo = lo >> 10, hhi = hi >> 10;
    auto pair_edge = [&](uint32_t h1, uint32_t h2, uint32_t l1, uint32_t l2) {
      int mid = nfa.add_state();
      add_u_escape(nfa, start, mid, 0xD800 + h1, 0xD800 + h2);
      add_u_escape(nfa, mid, end, 0xDC00 + l1, 0xDC00 + l2);
    };
    if (hlo == hhi) {
      pair_edge(hlo, hlo, lo & 0x3FF, hi & 0x3FF);
      continue;
    }
    uint32_t a = hlo, b = hhi;
    if ((lo & 0x3FF) != 0) {
      pair_edge(hlo, hlo, lo & 0x3FF, 0x3FF);
      ++a;
    }
    bool upper_partial = (hi & 0x3FF) != 0x3FF;
    if (upper_partial) --b;
    if (a <= b && a <= hhi) pair_edge(a, b, 0, 0x3FF);
    if (upper_partial) pair_edge(hhi, hhi, 0, hi & 0x3FF);
  }
  (void)kSurrogates;
  return {start, end};
}

Frag json_string_literal(Nfa& nfa, const std::string& value) {
  std::vector<Frag> parts{nfa.literal("\"")};
  for (uint32_t cp : decode_utf8(value)) parts.push_back(json_char(nfa, {{cp, cp}}));
  parts.push_back(nfa.literal("\""));
  return nfa.seq(parts);
}

Frag decimal_range(Nfa& nfa, uint64_t lo, uint64_t hi, bool hi_unbounded) {
  const uint64_t kMax = 1000000000000000000ull;
  if (lo > kMax || (!hi_unbounded && hi > kMax)) throw CompileError("integer bound beyond 10^18 is not supported");
  int start = nfa.add_state(), end = nfa.add_state();
  auto ndigits = [](uint64_t v) {
    int n = 1;
    while (v >= 10) {
      v /= 10;
      ++n;
    }
    return n;
  };
  if (!hi_unbounded && hi < lo) return {start, end};
  int kmax = hi_unbounded ? ndigits(lo) : ndigits(hi);
  for (int k = ndigits(lo); k <= kmax; ++k) {
    uint64_t a = std::max(lo, k == 1 ? 0 : ipow(10, k - 1));
    uint64_t b = ipow(10, k) - 1;
    if (!hi_unbounded) b = std::min(b, hi);
    if (a > b) continue;
    std::vector<DigitSeq> seqs;
    DigitSeq prefix;
    split_digits(a, b, k, 10, prefix, seqs);
    add_digit_seqs(nfa, start, end, seqs);
  }
  if (hi_unbounded) {
    // more than kmax digits: [1-9][0-9]{kmax}[0-9]*
    int cur = nfa.add_state();
    nfa.add_bytes(start, '1', '9', cur);
    for (int k = 0; k < kmax; ++k) {
      int nxt = nfa.add_state();
      nfa.add_bytes(cur, '0', '9', nxt);
      cur = nxt;
    }
    nfa.add_bytes(cur, '0', '9', cur);
    nfa.add_eps(cur, end);
  }
  return {start, end};
}

}  // namespace toolken

namespace toolken {

Frag embed(Nfa& nfa, const Dfa& dfa) {
  if (dfa.states.empty()) return nfa.alt({});
  int base = static_cast<int>(nfa.size());
  for (size_t i = 0; i < dfa.states.size(); ++i) nfa.add_state();
  int end = nfa.add_state();
  for (size_t i = 0; i < dfa.states.size(); ++i) {
    const auto& st = dfa.states[i];
    int s = base + static_cast<int>(i);
    for (const auto& e : st.bytes) nfa.add_bytes(s, e.lo, e.hi, base + static_cast<int>(e.to));
    for (const auto& c : st.calls) nfa.add_call(s, c.rule, base + static_cast<int>(c.to));
    if (st.final) nfa.add_eps(s, end);
  }
  return {base, end};
}

bool dfa_accepts(const Dfa& dfa, const std::string& bytes) {
  if (dfa.states.empty()) return false;
  uint32_t s = 0;
  for (unsigned char c : bytes) {
    bool moved = false;
    for (const auto& e : dfa.states[s].bytes)
      if (e.lo <= c && c <= e.hi) {
        s = e.to;
        moved = true;
        break;
      }
    if (!moved) return false;
  }
  return dfa.states[s].final;
}

}  // namespace toolken
