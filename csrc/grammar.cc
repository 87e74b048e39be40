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

}  // namespace toolken
