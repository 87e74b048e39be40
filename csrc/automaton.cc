// Automata construction: Nfa combinators, subset construction (determinize), trimming and
// Hopcroft minimization, DFA signatures, embedding a DFA back into an Nfa. Products, unions and
// repetition of DFAs are in dfa_operations.cc; JSON character encodings in json_encoding.cc.
#include "automaton.h"

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

void too_many_states(size_t max_states) {
  throw CompileError("schema too large: more than " + std::to_string(max_states) + " automaton states in one rule");
}

namespace {

// Sorted int sets, stored flat (set k is pool_[off_[k], off_[k+1])) under an open-addressing hash
// table of ids (-1 empty, doubled at half load): no allocation per set.
class SetTable {
 public:
  // The id of `set`; `fresh` tells whether it was new (then stored).
  size_t intern(const std::vector<int>& set, bool& fresh) {
    uint64_t h = 1469598103934665603ull;
    for (int x : set) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    h ^= h >> 31;
    size_t mask = table_.size() - 1, i = h & mask;
    for (; table_[i] >= 0; i = (i + 1) & mask) {
      const size_t k = static_cast<size_t>(table_[i]);
      if (hash_[k] == h && off_[k + 1] - off_[k] == set.size() &&
          std::equal(set.begin(), set.end(), pool_.begin() + static_cast<std::ptrdiff_t>(off_[k]))) {
        fresh = false;
        return k;
      }
    }
    fresh = true;
    const size_t n = hash_.size();
    pool_.insert(pool_.end(), set.begin(), set.end());
    off_.push_back(pool_.size());
    hash_.push_back(h);
    table_[i] = static_cast<int32_t>(n);
    if (2 * (n + 1) > table_.size()) {  // rehash
      std::vector<int32_t> bigger(table_.size() * 2, -1);
      mask = bigger.size() - 1;
      for (size_t k = 0; k <= n; ++k) {
        size_t j = hash_[k] & mask;
        while (bigger[j] >= 0) j = (j + 1) & mask;
        bigger[j] = static_cast<int32_t>(k);
      }
      table_.swap(bigger);
    }
    return n;
  }
  size_t size() const { return hash_.size(); }
  void get(size_t k, std::vector<int>& out) const {
    out.assign(pool_.begin() + static_cast<std::ptrdiff_t>(off_[k]), pool_.begin() + static_cast<std::ptrdiff_t>(off_[k + 1]));
  }

 private:
  std::vector<int> pool_;
  std::vector<size_t> off_{0};
  std::vector<uint64_t> hash_;
  std::vector<int32_t> table_ = std::vector<int32_t>(64, -1);
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
  std::vector<int> stack;
  SetTable closed;  // the subsets (closed sets of NFA states): id = DFA state
  // Targets before their closure -> DFA state: one subset's byte intervals, and different
  // subsets, often reach the same targets (every byte outside a class resets a search pattern),
  // and a closure costs as much as its subset (hundreds of states for a{n} under '.*').
  SetTable raw;
  std::vector<int> raw_to;
  // `set`: sorted, distinct targets (scratch, may be changed) -> DFA state id
  auto intern = [&](std::vector<int>& set) -> int {
    bool fresh = false;
    const size_t r = raw.intern(set, fresh);
    if (!fresh) return raw_to[r];
    eps_closure(nfa, set, mark, gen, stack);
    const size_t id = closed.intern(set, fresh);
    if (fresh) {
      if (id >= max_states) too_many_states(max_states);
      dfa.states.emplace_back();
    }
    raw_to.push_back(static_cast<int>(id));
    return static_cast<int>(id);
  };
  // Byte classes: the bytes no edge bound separates behave alike in every subset. Each NFA
  // state's edges as (class, target) pairs, listed on its first visit; a subset's transitions
  // are then one bucket of targets per class, in one pass over its states (instead of sorting
  // its edges and sweeping their bounds: the subsets of counted patterns hold hundreds of states).
  std::vector<char> cut(257, 0);
  cut[0] = 1;
  for (const auto& st : nfa.states())
    for (const auto& e : st.bytes) cut[e.lo] = cut[e.hi + 1] = 1;
  std::vector<uint16_t> class_of(256);
  std::vector<int> class_lo;
  for (int x = 0; x < 256; ++x) {
    if (cut[x]) class_lo.push_back(x);
    class_of[x] = static_cast<uint16_t>(class_lo.size() - 1);
  }
  class_lo.push_back(256);
  std::vector<int64_t> pairs_at(nfa.size(), -1);  // state -> offset of its pairs in `pairs`
  std::vector<uint32_t> pairs_len(nfa.size(), 0);
  std::vector<std::pair<uint16_t, int>> pairs;
  std::vector<std::vector<int>> bucket(class_lo.size() - 1);
  std::vector<uint16_t> used;
  std::vector<int> scratch{frag.start};
  intern(scratch);
  std::vector<int> set;
  std::vector<std::pair<uint32_t, int>> calls;
  for (size_t cur = 0; cur < closed.size(); ++cur) {
    closed.get(cur, set);
    Dfa::State st;
    calls.clear();
    used.clear();
    for (int s : set) {
      if (s == frag.end) st.final = true;
      if (pairs_at[s] < 0) {
        pairs_at[s] = static_cast<int64_t>(pairs.size());
        for (const auto& e : nfa.states()[s].bytes)
          for (uint16_t c = class_of[e.lo]; c <= class_of[e.hi]; ++c) pairs.push_back({c, static_cast<int>(e.to)});
        pairs_len[s] = static_cast<uint32_t>(pairs.size() - static_cast<size_t>(pairs_at[s]));
      }
      for (size_t i = static_cast<size_t>(pairs_at[s]), e = i + pairs_len[s]; i < e; ++i) {
        auto& b = bucket[pairs[i].first];
        if (b.empty()) used.push_back(pairs[i].first);
        b.push_back(pairs[i].second);
      }
      for (const auto& c : nfa.states()[s].calls) calls.push_back({c.rule, static_cast<int>(c.to)});
    }
    std::sort(used.begin(), used.end());
    for (uint16_t c : used) {
      std::vector<int>& b = bucket[c];
      if (!std::is_sorted(b.begin(), b.end())) std::sort(b.begin(), b.end());  // copies of one fragment: usually sorted
      b.erase(std::unique(b.begin(), b.end()), b.end());
      uint32_t to = static_cast<uint32_t>(intern(b));
      b.clear();
      uint8_t lo = static_cast<uint8_t>(class_lo[c]), hi = static_cast<uint8_t>(class_lo[c + 1] - 1);
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
