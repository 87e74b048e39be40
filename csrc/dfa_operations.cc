// Operations that build call-free DFAs from others without a subset construction where they
// can: range-swept products (intersection, difference, union), unions with a shared start,
// length-bounded repetition of one JSON character, and quoting (see automaton.h).
#include <algorithm>
#include <vector>

#include "automaton.h"

namespace toolken {

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

Dfa after_byte(const Dfa& d, uint8_t b) {
  Dfa out;
  if (d.states.empty()) return out;
  int64_t t = -1;
  for (const auto& e : d.states[0].bytes)
    if (e.lo <= b && b <= e.hi) t = e.to;
  if (t < 0) return out;
  // renumber the states reachable from t in visiting order (t becomes 0)
  std::vector<int64_t> id(d.states.size(), -1);
  std::vector<uint32_t> order{static_cast<uint32_t>(t)};
  id[t] = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const Dfa::State& s = d.states[order[i]];
    auto see = [&](uint32_t to) {
      if (id[to] < 0) {
        id[to] = static_cast<int64_t>(order.size());
        order.push_back(to);
      }
    };
    for (const auto& e : s.bytes) see(e.to);
    for (const auto& c : s.calls) see(c.to);
  }
  out.states.resize(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    out.states[i] = d.states[order[i]];
    for (auto& e : out.states[i].bytes) e.to = static_cast<uint32_t>(id[e.to]);
    for (auto& c : out.states[i].calls) c.to = static_cast<uint32_t>(id[c.to]);
  }
  return out;
}

}  // namespace toolken
