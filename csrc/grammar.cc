#include "grammar.h"

#include <algorithm>
#include <functional>

namespace toolken {

size_t Grammar::memory_bytes() const {
  size_t b = byte_begin.size() * 4 + call_begin.size() * 4 + byte_edges.size() * sizeof(ByteEdge) +
             call_edges.size() * sizeof(CallEdge) + is_final.size() + is_ws_loop.size() + node_rule.size() * 4;
  for (const auto& r : rules) b += sizeof(Rule) + r.name.size() + r.signature.size();
  b += rule_guard.size() * 4 + guards.size() * sizeof(Guard);
  for (const auto& o : objects) b += sizeof(Object) + o.required.size() * 8;
  b += rule_counter.size() * 4;
  for (const auto& c : counters)
    b += sizeof(CountedString) + c.completes.size() + c.begin.size() * 4 + c.lengths.size() * sizeof(LengthInterval);
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
    std::string guard;
    if (r < rule_guard.size() && rule_guard[r] != kNoGuard) {
      const Guard& gd = guards[rule_guard[r]];
      static const char* kKinds[] = {"member", "additional", "close", "more"};
      guard = std::string(" [guard ") + kKinds[gd.kind] + " of object " + std::to_string(gd.object) +
              (gd.kind == Guard::kMember ? " key " + std::to_string(gd.key) : "") + "]";
    }
    const CountedString* counter = r < rule_counter.size() && rule_counter[r] != kNoCounter ? &counters[rule_counter[r]] : nullptr;
    if (counter)
      guard += " [counted " + std::to_string(counter->min) + ".." +
               (counter->max == kNoMaxLength ? std::string("") : std::to_string(counter->max)) + " characters]";
    out += "rule " + std::to_string(r) + (rule.terminal ? " (terminal)" : "") + " " + rule.name +
           (r == root_rule ? " [root]" : "") + guard + "\n";
    for (uint32_t n = rule.first_node; n < rule.first_node + rule.num_nodes; ++n) {
      out += "  " + std::to_string(n) + (is_final[n] ? "*" : "") + (counter && counter->completes[n - rule.first_node] ? "+" : "") + ":";
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

}  // namespace toolken
