#include "grammar_builder.h"

#include <algorithm>
#include <functional>

namespace toolken {

uint32_t GrammarBuilder::reserve_rule(const std::string& name) {
  rules_.push_back(Pending{name, Dfa{}, false, -1});
  return static_cast<uint32_t>(rules_.size() - 1);
}

void GrammarBuilder::define_rule(uint32_t id, Dfa dfa) {
  Pending& p = rules_[id];
  p.defined = true;
  // "call R then accept" with nothing else: alias of R
  if (dfa.states.size() == 2 && !dfa.states[0].final && dfa.states[0].bytes.empty() && dfa.states[0].calls.size() == 1 &&
      dfa.states[1].final && dfa.states[1].bytes.empty() && dfa.states[1].calls.empty()) {
    p.alias = dfa.states[0].calls[0].rule;
    return;
  }
  total_states_ += dfa.states.size();
  if (total_states_ > max_nodes_) throw CompileError("schema too large: grammar exceeds " + std::to_string(max_nodes_) + " states");
  p.dfa = std::move(dfa);
}

uint32_t GrammarBuilder::add_object(Grammar::Object info, std::vector<uint32_t> member_rules, int64_t additional_rule) {
  objects_.push_back({std::move(info), std::move(member_rules), additional_rule});
  return static_cast<uint32_t>(objects_.size() - 1);
}

void GrammarBuilder::set_guard(uint32_t id, Grammar::Guard g) {
  guards_.push_back(g);
  rules_[id].guard = static_cast<int64_t>(guards_.size() - 1);
}

uint32_t GrammarBuilder::terminal_rule(Dfa dfa, const std::string& name) {
  std::string sig = dfa.signature();
  auto it = terminal_by_signature_.find(sig);
  if (it != terminal_by_signature_.end()) return it->second;
  uint32_t id = reserve_rule(name);
  define_rule(id, std::move(dfa));
  terminal_by_signature_.emplace(std::move(sig), id);
  return id;
}

uint32_t GrammarBuilder::counted_rule(CountedString cs, const std::string& name) {
  // the automaton, its marks and bounds: equal keys are equal counted languages
  std::string key = "#counted " + std::to_string(cs.min) + " " + std::to_string(cs.max) + " ";
  key.append(cs.completes.begin(), cs.completes.end());
  key += cs.dfa.signature();
  auto it = terminal_by_signature_.find(key);
  if (it != terminal_by_signature_.end()) return it->second;
  uint32_t id = reserve_rule(name);
  define_rule(id, std::move(cs.dfa));
  cs.dfa = Dfa{};
  rules_[id].counter = static_cast<int64_t>(counters_.size());
  counters_.push_back(std::move(cs));
  terminal_by_signature_.emplace(std::move(key), id);
  return id;
}

namespace {

using Pending = GrammarBuilder::Pending;

// The non-alias rules, renumbered densely in pending-id order.
struct Layout {
  std::vector<uint32_t> target;  // pending rule -> the non-alias pending rule it stands for
  std::vector<int64_t> new_id;   // pending rule -> grammar rule id (-1 for aliases)
  std::vector<uint32_t> order;   // grammar rule id -> pending rule
  const Dfa& dfa(const std::vector<Pending>& rules, size_t grammar_rule) const { return rules[order[grammar_rule]].dfa; }
  uint32_t rule_of_call(uint32_t pending_callee) const { return static_cast<uint32_t>(new_id[target[pending_callee]]); }
};

// Pass 1. A cycle of aliases is a rule that calls itself without consuming input.
std::vector<uint32_t> resolve_aliases(const std::vector<Pending>& rules) {
  const size_t nr = rules.size();
  std::vector<uint32_t> target(nr);
  for (size_t r = 0; r < nr; ++r) {
    uint32_t cur = static_cast<uint32_t>(r);
    size_t steps = 0;
    while (rules[cur].alias >= 0) {
      cur = static_cast<uint32_t>(rules[cur].alias);
      if (++steps > nr) throw CompileError("schema refers to itself without consuming input ($ref cycle at " + rules[r].name + ")");
    }
    if (!rules[cur].defined) throw CompileError("internal error: rule " + rules[cur].name + " never defined");
    target[r] = cur;
  }
  return target;
}

// Pass 2: grammar rules with their node ranges (a rule with an empty language gets one dead node).
Layout number_rules(const std::vector<Pending>& rules, std::vector<uint32_t> target, Grammar& g) {
  Layout lay;
  lay.target = std::move(target);
  lay.new_id.assign(rules.size(), -1);
  for (size_t r = 0; r < rules.size(); ++r)
    if (lay.target[r] == r) {
      lay.new_id[r] = static_cast<int64_t>(lay.order.size());
      lay.order.push_back(static_cast<uint32_t>(r));
    }
  uint32_t next_node = 0;
  for (uint32_t r : lay.order) {
    Grammar::Rule rule;
    rule.first_node = next_node;
    const Dfa& d = rules[r].dfa;
    rule.num_nodes = static_cast<uint32_t>(std::max<size_t>(d.states.size(), 1));  // empty language: one dead node
    rule.terminal = !d.has_calls();
    rule.name = rules[r].name;
    next_node += rule.num_nodes;
    g.rules.push_back(std::move(rule));
  }
  return lay;
}

// The groups of object o (grammar.h) whose keys all have productive member rules (the others
// can never complete), concatenated.
std::vector<uint64_t> live_groups(const GrammarBuilder::PendingObject& o, const Layout& lay, const std::vector<char>& rule_prod) {
  const uint32_t nw = o.info.words();
  std::vector<uint64_t> out;
  for (uint32_t g = 0; g < o.info.num_groups; ++g) {
    const uint64_t* bits = o.info.group(g);
    bool live = true;
    for (uint32_t k = 0; k < o.member_rules.size() && live; ++k)
      if ((bits[k >> 6] >> (k & 63)) & 1) live = rule_prod[lay.rule_of_call(o.member_rules[k])] != 0;
    if (live) out.insert(out.end(), bits, bits + nw);
  }
  return out;
}

// Pass 3: prod[node] (the node can reach a final node) and rule_prod[rule] (its start can),
// a least fixpoint over calls through productive rules.
// Whether object o can close given the rules known productive so far (members it needs exist).
bool object_satisfiable(const GrammarBuilder::PendingObject& o, const Layout& lay, const std::vector<char>& rule_prod,
                        uint32_t* avail_out = nullptr, bool* more_out = nullptr, std::vector<uint64_t>* live_out = nullptr) {
  uint32_t avail = 0;
  bool ok = true;
  if (live_out) live_out->assign(o.info.words(), 0);
  for (uint32_t k = 0; k < o.member_rules.size(); ++k) {
    bool p = rule_prod[lay.rule_of_call(o.member_rules[k])];
    avail += p;
    if (p && live_out) (*live_out)[k >> 6] |= uint64_t(1) << (k & 63);
    if (!p && o.info.is_required(k)) ok = false;
  }
  bool more = o.additional_rule >= 0 && rule_prod[lay.rule_of_call(static_cast<uint32_t>(o.additional_rule))];
  if (avail_out) *avail_out = avail;
  if (more_out) *more_out = more;
  ok = ok && o.info.num_required <= o.info.max && o.info.min <= o.info.max && (more || o.info.min <= avail);
  if (!ok || o.info.num_groups == 0) return ok;
  // groups: some live group completes with the required keys and no other group
  std::vector<uint64_t> live = live_groups(o, lay, rule_prod);
  const uint32_t nw = o.info.words(), ng = static_cast<uint32_t>(live.size() / std::max<uint32_t>(nw, 1));
  for (uint32_t i = 0; i < ng; ++i) {
    uint32_t size = 0;
    for (uint32_t w = 0; w < nw; ++w) size += __builtin_popcountll(live[i * nw + w] | o.info.required[w]);
    if (o.info.max != kUnbounded && size > o.info.max) continue;
    bool alone = true;
    for (uint32_t j = 0; j < ng && alone; ++j) {
      if (j == i) continue;
      bool inside = true;
      for (uint32_t w = 0; w < nw && inside; ++w) inside = (live[j * nw + w] & ~(live[i * nw + w] | o.info.required[w])) == 0;
      alone = !inside;
    }
    if (alone) return true;
  }
  return false;
}

void find_productive_nodes(const std::vector<Pending>& rules, const std::vector<Grammar::Guard>& guards,
                           const std::vector<GrammarBuilder::PendingObject>& objects, const Layout& lay, const Grammar& g,
                           size_t num_nodes, std::vector<char>& prod, std::vector<char>& rule_prod) {
  prod.assign(num_nodes, 0);
  rule_prod.assign(lay.order.size(), 0);
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t ri = 0; ri < lay.order.size(); ++ri) {
      const Dfa& d = lay.dfa(rules, ri);
      uint32_t base = g.rules[ri].first_node;
      // iterate states in reverse (targets are usually later) to converge faster
      for (size_t s = d.states.size(); s-- > 0;) {
        if (prod[base + s]) continue;
        const auto& st = d.states[s];
        bool p = st.final;
        for (size_t k = 0; !p && k < st.bytes.size(); ++k) p = prod[base + st.bytes[k].to];
        for (size_t k = 0; !p && k < st.calls.size(); ++k) {
          int64_t cr = lay.rule_of_call(st.calls[k].rule);
          p = rule_prod[cr] && prod[base + st.calls[k].to];
          const int64_t gi = rules[lay.order[cr]].guard;
          if (p && gi >= 0 && guards[gi].kind == Grammar::Guard::kClose)
            p = object_satisfiable(objects[guards[gi].object], lay, rule_prod);
        }
        if (p) {
          prod[base + s] = 1;
          changed = true;
          if (s == 0) rule_prod[ri] = 1;
        }
      }
    }
  }
}

// Pass 4: the CSR arrays, node_rule, is_final, and terminal signatures.
void emit_edges(const std::vector<Pending>& rules, const Layout& lay, const std::vector<char>& prod,
                const std::vector<char>& rule_prod, size_t nn, Grammar& g) {
  g.byte_begin.assign(nn + 1, 0);
  g.call_begin.assign(nn + 1, 0);
  g.is_final.assign(nn, 0);
  g.node_rule.assign(nn, 0);
  for (size_t ri = 0; ri < lay.order.size(); ++ri) {
    const Dfa& d = lay.dfa(rules, ri);
    uint32_t base = g.rules[ri].first_node;
    for (uint32_t s = 0; s < g.rules[ri].num_nodes; ++s) {
      uint32_t n = base + s;
      g.node_rule[n] = static_cast<uint32_t>(ri);
      g.byte_begin[n] = static_cast<uint32_t>(g.byte_edges.size());
      g.call_begin[n] = static_cast<uint32_t>(g.call_edges.size());
      if (s >= d.states.size()) continue;
      const auto& st = d.states[s];
      g.is_final[n] = st.final;
      for (const auto& e : st.bytes)
        if (prod[base + e.to]) g.byte_edges.push_back({e.lo, e.hi, base + e.to});
      for (const auto& c : st.calls) {
        uint32_t cr = lay.rule_of_call(c.rule);
        if (rule_prod[cr] && prod[base + c.to]) g.call_edges.push_back({cr, base + c.to});
      }
    }
  }
  g.byte_begin[nn] = static_cast<uint32_t>(g.byte_edges.size());
  g.call_begin[nn] = static_cast<uint32_t>(g.call_edges.size());
  for (size_t ri = 0; ri < lay.order.size(); ++ri)
    if (g.rules[ri].terminal) g.rules[ri].signature = lay.dfa(rules, ri).signature();
}

// Pass 5: a node that loops to itself on all four JSON whitespace bytes is structural whitespace.
void mark_whitespace_loops(Grammar& g, uint32_t max_ws) {
  const size_t nn = g.num_nodes();
  g.max_ws = max_ws;
  g.is_ws_loop.assign(nn, 0);
  for (uint32_t n = 0; n < nn; ++n)
    g.is_ws_loop[n] = g.next(n, ' ') == n && g.next(n, '\t') == n && g.next(n, '\n') == n && g.next(n, '\r') == n;
}

// Pass 6. Rule R -> S when S is called at a node reachable from R's start through calls of
// nullable rules only (no byte consumed); a cycle of that relation is left recursion, which
// would make the matcher's closure loop.
void check_left_recursion(const Grammar& g) {
  size_t nrules = g.rules.size();
  std::vector<char> nullable(nrules, 0);
  auto reach_without_bytes = [&](uint32_t r, const std::function<void(uint32_t node)>& visit) {
    std::vector<uint32_t> stack{g.rule_start(r)};
    std::vector<uint32_t> seen{g.rule_start(r)};
    while (!stack.empty()) {
      uint32_t n = stack.back();
      stack.pop_back();
      visit(n);
      for (uint32_t i = g.call_begin[n]; i < g.call_begin[n + 1]; ++i) {
        const auto& c = g.call_edges[i];
        if (nullable[c.rule] && std::find(seen.begin(), seen.end(), c.to) == seen.end()) {
          seen.push_back(c.to);
          stack.push_back(c.to);
        }
      }
    }
  };
  bool changed = true;
  while (changed) {
    changed = false;
    for (uint32_t r = 0; r < nrules; ++r) {
      if (nullable[r]) continue;
      bool nul = false;
      reach_without_bytes(r, [&](uint32_t n) { nul |= g.is_final[n] != 0; });
      if (nul) {
        nullable[r] = 1;
        changed = true;
      }
    }
  }
  std::vector<std::vector<uint32_t>> left(nrules);
  for (uint32_t r = 0; r < nrules; ++r) {
    if (g.rules[r].terminal) continue;
    reach_without_bytes(r, [&](uint32_t n) {
      for (uint32_t i = g.call_begin[n]; i < g.call_begin[n + 1]; ++i) left[r].push_back(g.call_edges[i].rule);
    });
  }
  std::vector<int> color(nrules, 0);
  for (uint32_t r0 = 0; r0 < nrules; ++r0) {
    if (color[r0]) continue;
    std::vector<std::pair<uint32_t, size_t>> stack{{r0, 0}};
    color[r0] = 1;
    while (!stack.empty()) {
      auto& [r, i] = stack.back();
      if (i < left[r].size()) {
        uint32_t s = left[r][i++];
        if (color[s] == 1) throw CompileError("left-recursive schema: " + g.rules[s].name + " can contain itself without consuming input");
        if (color[s] == 0) {
          color[s] = 1;
          stack.push_back({s, 0});
        }
      } else {
        color[r] = 2;
        stack.pop_back();
      }
    }
  }
}

}  // namespace

Grammar GrammarBuilder::build(uint32_t root, uint32_t max_ws) {
  Grammar g;
  Layout lay = number_rules(rules_, resolve_aliases(rules_), g);
  g.root_rule = static_cast<uint32_t>(lay.new_id[lay.target[root]]);
  size_t nn = 0;
  for (const auto& r : g.rules) nn += r.num_nodes;
  std::vector<char> prod, rule_prod;
  find_productive_nodes(rules_, guards_, objects_, lay, g, nn, prod, rule_prod);
  g.rule_guard.assign(g.rules.size(), kNoGuard);
  for (size_t ri = 0; ri < lay.order.size(); ++ri)
    if (rules_[lay.order[ri]].guard >= 0) g.rule_guard[ri] = static_cast<uint32_t>(rules_[lay.order[ri]].guard);
  g.guards = guards_;
  if (!counters_.empty()) {
    g.rule_counter.assign(g.rules.size(), kNoCounter);
    for (size_t ri = 0; ri < lay.order.size(); ++ri)
      if (const int64_t c = rules_[lay.order[ri]].counter; c >= 0) {
        g.rule_counter[ri] = static_cast<uint32_t>(g.counters.size());
        g.counters.push_back(std::move(counters_[c]));
      }
  }
  for (const auto& o : objects_) {
    g.objects.push_back(o.info);
    object_satisfiable(o, lay, rule_prod, &g.objects.back().avail_known, &g.objects.back().more, &g.objects.back().live);
    if (o.info.num_groups) {
      Grammar::Object& obj = g.objects.back();
      obj.groups = live_groups(o, lay, rule_prod);
      // with no live group the object cannot close: its rule is unproductive and never entered
      obj.num_groups = static_cast<uint32_t>(obj.groups.size() / obj.words());
    }
  }
  if (!rule_prod[g.root_rule]) throw CompileError("the schema admits no JSON value (unsatisfiable constraints)");
  emit_edges(rules_, lay, prod, rule_prod, nn, g);
  mark_whitespace_loops(g, max_ws);
  check_left_recursion(g);
  return g;
}

}  // namespace toolken
