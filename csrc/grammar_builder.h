// GrammarBuilder: collects rules as DFAs (bytes + rule calls) while the schema converter walks
// the schema, then builds the flat Grammar of grammar.h.
//
// Rules are reserved first (an id that other rules may call before its body exists, which is
// how recursive $refs work) and defined later. A rule whose body is exactly "call R, then
// accept" is an *alias* of R and gets no nodes of its own. Terminal (call-free) rules are
// shared by signature: an identical string/number body is built once per grammar.
//
// build() runs these passes, in order (each a function in grammar_builder.cc):
//   1. resolve_aliases        every rule -> the rule it stands for (a cycle of aliases: error)
//   2. number_rules           the non-alias rules get dense ids and node ranges, in id order
//   3. find_productive_nodes  nodes that can reach a final node, calls through productive rules
//                             only (the root not productive: error, no JSON value matches); an
//                             object's close call counts only when its required keys' member
//                             rules are productive and enough members exist for minProperties
//   4. emit_edges             CSR byte/call edges without edges into unproductive nodes/rules,
//                             terminal signatures
//   5. mark_whitespace_loops  is_ws_loop (structural whitespace) and the max_ws bound
//   6. check_left_recursion   no rule reaches a call to itself without consuming a byte
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "grammar.h"

namespace toolken {

class GrammarBuilder {
 public:
  explicit GrammarBuilder(size_t max_nodes) : max_nodes_(max_nodes) {}
  // A new rule id whose body is given later with define_rule (allows recursion).
  uint32_t reserve_rule(const std::string& name);
  // Sets the body of a reserved rule. A body that is just "call R" makes the rule an alias of R.
  // Throws CompileError once the defined rules exceed max_nodes states in total.
  void define_rule(uint32_t id, Dfa dfa);
  // A call-free rule, shared with any identical one already built.
  uint32_t terminal_rule(Dfa dfa, const std::string& name);
  // A counted string rule (counted_strings.h), shared with any identical one already built.
  uint32_t counted_rule(CountedString cs, const std::string& name);
  // The passes listed above; throws CompileError. max_ws: bound on consecutive structural
  // whitespace (0 = none).
  Grammar build(uint32_t root, uint32_t max_ws);
  size_t total_states() const { return total_states_; }
  // An object with a seen-key set (grammar.h): `info` without avail_known/more (build() counts
  // them from the productive member rules); member_rules[k]: a rule of key k (for
  // productivity), additional_rule: a rule of additional members or -1.
  uint32_t add_object(Grammar::Object info, std::vector<uint32_t> member_rules, int64_t additional_rule);
  // Calls of rule `id` are guarded by `g` (the rule must not be an alias).
  void set_guard(uint32_t id, Grammar::Guard g);

  struct Pending {
    std::string name;
    Dfa dfa;
    bool defined = false;
    int64_t alias = -1;  // >= 0: this rule is an alias of that one
    int64_t guard = -1;  // >= 0: index into guards_
    int64_t counter = -1;  // >= 0: index into counters_
  };
  struct PendingObject {
    Grammar::Object info;
    std::vector<uint32_t> member_rules;
    int64_t additional_rule;
  };

 private:
  std::vector<Grammar::Guard> guards_;
  std::vector<PendingObject> objects_;
  std::vector<Pending> rules_;
  std::vector<CountedString> counters_;
  std::unordered_map<std::string, uint32_t> terminal_by_signature_;
  size_t max_nodes_;
  size_t total_states_ = 0;
};

}  // namespace toolken
