#include "automaton.h"

#include "json_value.h"

#include <algorithm>
#include <deque>
#include <map>
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
  std::string sig;
  sig.reserve(states.size() * 8);
  auto put = [&](uint32_t v) { sig.append(reinterpret_cast<const char*>(&v), 4); };
  put(static_cast<uint32_t>(states.size()));
  for (const auto& s : states) {
    put(s.final ? 1 : 0);
    put(static_cast<uint32_t>(s.bytes.size()));
    for (const auto& e : s.bytes) {
      sig.push_back(static_cast<char>(e.lo));
      sig.push_back(static_cast<char>(e.hi));
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

namespace {

struct U32VecHash {
  size_t operator()(const std::vector<uint32_t>& v) const {
    size_t h = 1469598103934665603ull;
    for (uint32_t x : v) h = (h ^ x) * 1099511628211ull;
    return h;
  }
};

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
    if (sets.size() >= max_states) throw CompileError("schema too large: more than " + std::to_string(max_states) + " automaton states in one rule");
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
  size_t n = d.states.size();
  if (n <= 1) return d;
  std::vector<uint32_t> cls(n);
  for (size_t s = 0; s < n; ++s) cls[s] = d.states[s].final ? 1 : 0;
  size_t num_classes = 0;
  while (true) {
    // signature of each state under the current partition
    std::unordered_map<std::vector<uint32_t>, uint32_t, U32VecHash> sig_ids;
    std::vector<uint32_t> next(n);
    for (size_t s = 0; s < n; ++s) {
      std::vector<uint32_t> sig{cls[s]};
      for (const auto& e : d.states[s].bytes) {
        sig.push_back(e.lo);
        sig.push_back(e.hi);
        sig.push_back(cls[e.to]);
      }
      sig.push_back(0xFFFFFFFFu);
      for (const auto& c : d.states[s].calls) {
        sig.push_back(c.rule);
        sig.push_back(cls[c.to]);
      }
      // merge adjacent byte ranges that now go to the same class so equal languages compare equal
      std::vector<uint32_t> merged{sig[0]};
      size_t i = 1;
      while (i < sig.size() && sig[i] != 0xFFFFFFFFu) {
        uint32_t lo = sig[i], hi = sig[i + 1], c = sig[i + 2];
        if (merged.size() >= 4 && merged[merged.size() - 1] == c && merged[merged.size() - 2] + 1 == lo) {
          merged[merged.size() - 2] = hi;
        } else {
          merged.push_back(lo);
          merged.push_back(hi);
          merged.push_back(c);
        }
        i += 3;
      }
      merged.insert(merged.end(), sig.begin() + static_cast<long>(i), sig.end());
      auto it = sig_ids.emplace(std::move(merged), static_cast<uint32_t>(sig_ids.size())).first;
      next[s] = it->second;
    }
    size_t k = sig_ids.size();
    cls.swap(next);
    if (k == num_classes) break;
    num_classes = k;
  }
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
      if (newid[cls[e.to]] < 0) {
        newid[cls[e.to]] = static_cast<int>(order.size());
        order.push_back(cls[e.to]);
      }
    for (const auto& c : st.calls)
      if (newid[cls[c.to]] < 0) {
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
      uint32_t to = static_cast<uint32_t>(newid[cls[e.to]]);
      if (!o.bytes.empty() && o.bytes.back().to == to && o.bytes.back().hi + 1 == e.lo) o.bytes.back().hi = e.hi;
      else o.bytes.push_back({e.lo, e.hi, to});
    }
    for (const auto& c : st.calls) o.calls.push_back({c.rule, static_cast<uint32_t>(newid[cls[c.to]])});
  }
  return out;
}

Dfa intersect(const Dfa& a, const Dfa& b, bool subtract, size_t max_states) {
  Dfa out;
  if (a.states.empty()) return out;
  // pair (i, j); j == -1 means b is dead
  std::map<std::pair<int, int>, int> ids;
  std::vector<std::pair<int, int>> pairs;
  auto intern = [&](int i, int j) -> int {
    auto it = ids.find({i, j});
    if (it != ids.end()) return it->second;
    if (pairs.size() >= max_states) throw CompileError("schema too large: string constraint automaton exceeds the state limit");
    int id = static_cast<int>(pairs.size());
    ids.emplace(std::make_pair(i, j), id);
    pairs.push_back({i, j});
    out.states.emplace_back();
    return id;
  };
  bool b_empty = b.states.empty();
  intern(0, b_empty ? -1 : 0);
  int next_a[256], next_b[256];
  for (size_t cur = 0; cur < pairs.size(); ++cur) {
    auto [i, j] = pairs[cur];
    std::fill(next_a, next_a + 256, -1);
    std::fill(next_b, next_b + 256, -1);
    for (const auto& e : a.states[i].bytes)
      for (int c = e.lo; c <= e.hi; ++c) next_a[c] = static_cast<int>(e.to);
    if (j >= 0)
      for (const auto& e : b.states[j].bytes)
        for (int c = e.lo; c <= e.hi; ++c) next_b[c] = static_cast<int>(e.to);
    Dfa::State st;
    bool bfinal = j >= 0 && b.states[j].final;
    st.final = a.states[i].final && (subtract ? !bfinal : bfinal);
    for (int c = 0; c < 256; ++c) {
      if (next_a[c] < 0) continue;
      if (!subtract && next_b[c] < 0) continue;
      uint32_t to = static_cast<uint32_t>(intern(next_a[c], next_b[c]));
      if (!st.bytes.empty() && st.bytes.back().to == to && st.bytes.back().hi + 1 == c) st.bytes.back().hi = static_cast<uint8_t>(c);
      else st.bytes.push_back({static_cast<uint8_t>(c), static_cast<uint8_t>(c), to});
    }
    out.states[cur] = std::move(st);
  }
  trim(out);
  return out;
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
