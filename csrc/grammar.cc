#include "grammar.h"

#include <algorithm>
#include <functional>

namespace toolken {

size_t Grammar::memory_bytes() const {
  size_t b = byte_begin.size() * 4 + call_begin.size() * 4 + byte_edges.size() * sizeof(ByteEdge) +
             call_edges.size() * sizeof(CallEdge) + is_final.size() + is_ws_loop.size() + node_rule.size() * 4;
  for (const auto& r : rules) b += sizeof(Rule) + r.name.size() + r.signature.size();
  return b;
}

std::string Grammar::to_string() const {
  std::string out;
  auto byte_repr = [](uint8_t c) {
    char buf[8];
    if (c >= 0x21 && c < 0x7F && c != '\\') snprintf(buf, sizeof buf, "%c", c);
    else snprintf(buf, sizeof buf, "\\x%02x", c);
    return std::string(buf);
  };
  for (size_t r = 0; r < rules.size(); ++r) {
    const Rule& rule = rules[r];
    out += "rule " + std::to_string(r) + (rule.terminal ? " (terminal)" : "") + " " + rule.name +
           (r == root_rule ? " [root]" : "") + "\n";
    for (uint32_t n = rule.first_node; n < rule.first_node + rule.num_nodes; ++n) {
      out += "  " + std::to_string(n) + (is_final[n] ? "*" : "") + ":";
      for (uint32_t i = byte_begin[n]; i < byte_begin[n + 1]; ++i) {
        const auto& e = byte_edges[i];
        out += " [" + byte_repr(e.lo) + (e.hi != e.lo ? "-" + byte_repr(e.hi) : "") + "]->" + std::to_string(e.to);
      }
      for (uint32_t i = call_begin[n]; i < call_begin[n + 1]; ++i)
        out += " call " + std::to_string(call_edges[i].rule) + "->" + std::to_string(call_edges[i].to);
      out += "\n";
    }
  }
  return out;
}

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

uint32_t GrammarBuilder::terminal_rule(Dfa dfa, const std::string& name) {
  std::string sig = dfa.signature();
  auto it = terminal_by_signature_.find(sig);
  if (it != terminal_by_signature_.end()) return it->second;
  uint32_t id = reserve_rule(name);
  define_rule(id, std::move(dfa));
  terminal_by_signature_.emplace(std::move(sig), id);
  return id;
}

Grammar GrammarBuilder::build(uint32_t root, uint32_t max_ws) {
  size_t nr = rules_.size();
  // resolve aliases (a cycle of aliases is a rule that calls itself without consuming input)
  std::vector<uint32_t> target(nr);
  for (size_t r = 0; r < nr; ++r) {
    uint32_t cur = static_cast<uint32_t>(r);
    size_t steps = 0;
    while (rules_[cur].alias >= 0) {
      cur = static_cast<uint32_t>(rules_[cur].alias);
      if (++steps > nr) throw CompileError("schema refers to itself without consuming input ($ref cycle at " + rules_[r].name + ")");
    }
    if (!rules_[cur].defined) throw CompileError("internal error: rule " + rules_[cur].name + " never defined");
    target[r] = cur;
  }
  root = target[root];
  // keep only canonical rules, renumbered
  std::vector<int64_t> newid(nr, -1);
  std::vector<uint32_t> order;
  for (size_t r = 0; r < nr; ++r)
    if (target[r] == r) {
      newid[r] = static_cast<int64_t>(order.size());
      order.push_back(static_cast<uint32_t>(r));
    }
  Grammar g;
  g.root_rule = static_cast<uint32_t>(newid[root]);
  uint32_t next_node = 0;
  for (uint32_t r : order) {
    Grammar::Rule rule;
    rule.first_node = next_node;
    const Dfa& d = rules_[r].dfa;
    rule.num_nodes = static_cast<uint32_t>(std::max<size_t>(d.states.size(), 1));  // empty language: one dead node
    rule.terminal = !d.has_calls();
    rule.name = rules_[r].name;
    next_node += rule.num_nodes;
    g.rules.push_back(std::move(rule));
  }
  size_t nn = next_node;
  // productive analysis over (node) with calls through productive rules
  std::vector<char> prod(nn, 0), rule_prod(order.size(), 0);
  auto rule_dfa = [&](size_t ri) -> const Dfa& { return rules_[order[ri]].dfa; };
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t ri = 0; ri < order.size(); ++ri) {
      const Dfa& d = rule_dfa(ri);
      uint32_t base = g.rules[ri].first_node;
      // iterate states in reverse (targets are usually later) to converge faster
      for (size_t s = d.states.size(); s-- > 0;) {
        if (prod[base + s]) continue;
        const auto& st = d.states[s];
        bool p = st.final;
        for (size_t k = 0; !p && k < st.bytes.size(); ++k) p = prod[base + st.bytes[k].to];
        for (size_t k = 0; !p && k < st.calls.size(); ++k) {
          int64_t cr = newid[target[st.calls[k].rule]];
          p = rule_prod[cr] && prod[base + st.calls[k].to];
        }
        if (p) {
          prod[base + s] = 1;
          changed = true;
          if (s == 0) rule_prod[ri] = 1;
        }
      }
    }
  }
  if (!rule_prod[g.root_rule]) throw CompileError("the schema admits no JSON value (unsatisfiable constraints)");
  // emit CSR with dead edges removed
  g.byte_begin.assign(nn + 1, 0);
  g.call_begin.assign(nn + 1, 0);
  g.is_final.assign(nn, 0);
  g.node_rule.assign(nn, 0);
  for (size_t ri = 0; ri < order.size(); ++ri) {
    const Dfa& d = rule_dfa(ri);
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
        uint32_t cr = static_cast<uint32_t>(newid[target[c.rule]]);
        if (rule_prod[cr] && prod[base + c.to]) g.call_edges.push_back({cr, base + c.to});
      }
    }
  }
  g.byte_begin[nn] = static_cast<uint32_t>(g.byte_edges.size());
  g.call_begin[nn] = static_cast<uint32_t>(g.call_edges.size());
  for (size_t ri = 0; ri < order.size(); ++ri)
    if (g.rules[ri].terminal) g.rules[ri].signature = rule_dfa(ri).signature();
  g.max_ws = max_ws;
  g.is_ws_loop.assign(nn, 0);
  for (uint32_t n = 0; n < nn; ++n)
    g.is_ws_loop[n] = g.next(n, ' ') == n && g.next(n, '\t') == n && g.next(n, '\n') == n && g.next(n, '\r') == n;

  // left recursion: rule R -> S when S is called at a node reachable from R's start through
  // calls of nullable rules only (no byte consumed).
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
  changed = true;
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
  return g;
}

}  // namespace toolken
