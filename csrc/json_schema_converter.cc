#include "json_schema_converter.h"

#include <algorithm>
#include <deque>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "grammar_builder.h"
#include "json_encoding.h"
#include "json_value.h"
#include "key_trie.h"
#include "leaf_languages.h"
#include "one_of_prover.h"
#include "regex.h"
#include "schema_normalizer.h"

namespace toolken {
namespace {

constexpr int kMaxArrayUnroll = 2000;
// An object rule may use this many automaton states per known property beyond the per-rule
// limit: its key dispatch has about 15 per short name (see key_trie.h).
constexpr size_t kStatesPerProperty = 64;

const std::unordered_set<std::string>& unsupported_keywords() {
  static const std::unordered_set<std::string> k{
      "not", "if", "dependencies", "dependentRequired", "dependentSchemas",
      "contains", "minContains", "maxContains", "unevaluatedProperties",
      "unevaluatedItems", "$dynamicRef", "$recursiveRef", "$recursiveAnchor"};
  return k;
}


struct Leaves {
  Nfa nfa;
  std::vector<Frag> alts;  // literals and numbers, determinized together
  std::vector<Dfa> dfas;   // strings, built as DFAs directly
  // the enum/const with the most values (named when the leaves exceed a state limit)
  std::string largest_enum_ptr;
  size_t largest_enum_size = 0;
};

class Converter {
 public:
  Converter(const std::string& text, const SchemaOptions& o)
      : opts_(o), builder_(o.max_total_states), schemas_(text), leaves_(opts_), prover_(schemas_, leaves_, opts_) {}

  Grammar run() {
    const JsonValue& root = schemas_.root();
    if (!root.is_object() && !root.is_bool()) throw CompileError("the schema must be a JSON object or boolean (at #)");
    uint32_t root_rule = rule_for(&root, "#");
    while (!work_.empty()) {
      Work w = work_.front();
      work_.pop_front();
      build_rule(w);
    }
    return builder_.build(root_rule, opts_.flexible_whitespace ? static_cast<uint32_t>(opts_.max_whitespace) : 0);
  }

 private:
  struct Work {
    uint32_t id;
    const JsonValue* schema;
    std::string ptr;
  };
  static std::string rule_key(const JsonValue& s) {
    if (!s.is_object()) return s.dump();
    std::string key = "{";
    for (const auto& m : s.members) {
      if (annotation_keywords().count(m.first)) continue;
      key += std::to_string(m.first.size());
      key += ':';
      key += m.first;
      key += m.second.dump();
      key += ';';
    }
    return key;
  }

  // ---- rules ------------------------------------------------------------------------------------
  uint32_t rule_for(const JsonValue* s, std::string ptr) {
    s = schemas_.follow_refs(s, ptr);
    if (s->is_bool() && s->boolean) s = schemas_.true_schema();
    // by content: merged/copied subschemas equal to an existing one share its rule ($refs are
    // absolute pointers, so equal text means equal meaning); top-level annotations (a property's
    // description, title, ...) do not change the language, so they stay out of the key
    std::string key = rule_key(*s);
    auto it = memo_.find(key);
    if (it != memo_.end()) return it->second;
    uint32_t id = builder_.reserve_rule(ptr);
    memo_.emplace(std::move(key), id);
    work_.push_back({id, s, ptr});
    return id;
  }

  void build_rule(const Work& w) {
    object_state_budget_ = 0;
    try {
      Nfa nfa;
      Leaves leaves;
      Frag f = value_frag(nfa, w.schema, w.ptr, leaves, 0);
      f = finish_leaves(nfa, f, leaves, w.ptr);
      Dfa d = determinize(nfa, f, opts_.max_rule_states + object_state_budget_);
      if (d.states.size() < 400 && !d.has_calls()) d = minimize(d);  // object/array DFAs are near-minimal already
      if (d.states.empty()) {
        d.states.emplace_back();  // unsatisfiable: one dead, non-final state
      }
      builder_.define_rule(w.id, std::move(d));
    } catch (const CompileError& e) {
      rethrow_at(e, w.ptr);  // e.g. a state limit: the rule's schema is where it was exceeded
    }
  }

  Frag finish_leaves(Nfa& nfa, Frag f, Leaves& leaves, const std::string& ptr) {
    if (leaves.alts.empty() && leaves.dfas.empty()) return f;
    Dfa ld;
    try {
      if (!leaves.alts.empty()) leaves.dfas.push_back(determinize(leaves.nfa, leaves.nfa.alt(leaves.alts), opts_.max_rule_states));
      ld = unite(leaves.dfas, opts_.max_rule_states);
    } catch (const CompileError& e) {
      rethrow_at(e, leaves.largest_enum_ptr.empty() ? ptr : leaves.largest_enum_ptr);
    }
    if (ld.states.empty()) return f;
    if (ld.states.size() < 400) ld = minimize(ld);
    uint32_t t = builder_.terminal_rule(std::move(ld), ptr);
    return nfa.alt({f, nfa.call(t)});
  }

  Frag ws(Nfa& nfa) { return leaves_.ws(nfa); }
  Frag after_sep(Nfa& nfa) { return leaves_.after_separator(nfa); }

  void check_keywords(const JsonValue& s, const std::string& ptr) {
    for (const auto& m : s.members) {
      const std::string& k = m.first;
      if (unsupported_keywords().count(k)) {
        if (k == "if" && !s.get("then") && !s.get("else")) continue;  // `if` alone constrains nothing
        if ((k == "patternProperties" || k == "dependencies" || k == "dependentRequired" || k == "dependentSchemas" ||
             k == "propertyNames") && m.second.is_object() && m.second.members.empty())
          continue;  // empty: no constraint
        fail_at(ptr + "/" + escape_pointer(k), "unsupported JSON Schema keyword '" + k + "'");
      }
    }
    if (const JsonValue* u = s.get("uniqueItems"); u && u->is_bool() && u->boolean)
      fail_at(ptr + "/uniqueItems", "unsupported JSON Schema keyword 'uniqueItems' (true)");
  }

  // Fragment (in `nfa`) matching the JSON values of schema `s`; leaf alternatives go to `leaves`.
  Frag value_frag(Nfa& nfa, const JsonValue* s, std::string ptr, Leaves& leaves, int depth) {
    if (depth > kMaxInlineDepth) fail_at(ptr, "schema nesting too deep");
    s = schemas_.follow_refs(s, ptr);
    s = schemas_.flatten(s, ptr, 0);
    if (s->is_bool()) {
      if (!s->boolean) return nfa.alt({});
      s = schemas_.true_schema();
    }
    if (!s->is_object()) fail_at(ptr, "a schema must be an object or a boolean");
    if (s->get("$ref")) return nfa.call(rule_for(s, ptr));  // pure reference (flatten removed siblings)
    check_keywords(*s, ptr);
    const JsonValue* any = s->get("anyOf");
    const JsonValue* one = s->get("oneOf");
    if (any || one) {
      if (any && one) {
        // (rest and anyOf) and oneOf: distribute anyOf over oneOf branches
        JsonValue rest;
        rest.kind = JsonValue::Kind::kObject;
        for (const auto& m : s->members)
          if (m.first != "oneOf") rest.members.push_back(m);
        return one_of(nfa, schemas_.own(std::move(rest)), *one, ptr + "/oneOf", leaves, depth);
      }
      if (one && !any && opts_.any_order) {
        Frag f;
        if (key_group_one_of(nfa, *s, *one, ptr, leaves, f)) return f;
      }
      const JsonValue& list = any ? *any : *one;
      JsonValue rest;
      rest.kind = JsonValue::Kind::kObject;
      for (const auto& m : s->members)
        if (m.first != "anyOf" && m.first != "oneOf") rest.members.push_back(m);
      const JsonValue* restp = schemas_.own(std::move(rest));
      if (one) return one_of(nfa, restp, list, ptr + "/oneOf", leaves, depth);
      return alternatives(nfa, restp, list, ptr + "/anyOf", leaves, depth);
    }
    return typed_frag(nfa, *s, ptr, leaves);
  }

  // oneOf `list` with sibling keywords `rest`: the union of the branches when the prover shows
  // them disjoint; else, when narrow_one_of excludes values that match two branches (and so no
  // instance may be), the union of the narrowed branches if those are disjoint; else the
  // prover's error. The branches compile before the check (their own errors come first).
  Frag one_of(Nfa& nfa, const JsonValue* rest, const JsonValue& list, const std::string& ptr, Leaves& leaves, int depth) {
    const size_t n_alts = leaves.alts.size(), n_dfas = leaves.dfas.size(), enum_size = leaves.largest_enum_size;
    const std::string enum_ptr = leaves.largest_enum_ptr;
    Frag f = alternatives(nfa, rest, list, ptr, leaves, depth);
    try {
      prover_.check_one_of(rest, list, ptr);
      return f;
    } catch (const CompileError& overlap) {
      const JsonValue* narrowed = prover_.narrow_one_of(rest, list, ptr);
      if (!narrowed) throw;
      // the first attempt's leaves are not part of the language: drop them
      leaves.alts.resize(n_alts);
      leaves.dfas.resize(n_dfas);
      leaves.largest_enum_size = enum_size;
      leaves.largest_enum_ptr = enum_ptr;
      try {
        Frag g = alternatives(nfa, narrowed, list, ptr, leaves, depth);
        prover_.check_one_of(narrowed, list, ptr);
        return g;
      } catch (const CompileError&) {
        throw overlap;
      }
    }
  }

  // oneOf whose branches only require keys: `required` (and `type: object`, and `properties`
  // that the sibling keywords already give, or that constrain nothing). Such branches overlap
  // (an object with both key sets matches both), so the prover refuses them; but an object
  // matches exactly one branch exactly when exactly one branch's key set is all present, which
  // the seen-key set of an any-order object decides at its '}' (Grammar::Object::groups). A
  // value that is not an object matches every branch without a type (`required` does not apply
  // to it): with none or two or more such branches it is invalid, so the schema is limited to
  // objects; with exactly one, the prover decides as before. False: not this shape.
  bool key_group_one_of(Nfa& nfa, const JsonValue& s, const JsonValue& list, const std::string& ptr, Leaves& leaves, Frag& out) {
    if (!list.is_array() || list.items.size() < 2 || list.items.size() > 64) return false;
    const JsonValue* props = s.get("properties");
    if (props && !props->is_object()) return false;
    if (const JsonValue* pp = s.get("patternProperties"); pp && !(pp->is_object() && pp->members.empty())) return false;
    std::vector<std::vector<std::string>> groups;
    size_t untyped = 0;
    for (const auto& b : list.items) {
      if (!b.is_object()) return false;
      const JsonValue* req = b.get("required");
      if (!req || !req->is_array() || req->items.empty()) return false;
      std::vector<std::string> keys;
      for (const auto& x : req->items) {
        if (!x.is_string()) return false;
        keys.push_back(x.text);
      }
      bool typed = false;
      for (const auto& m : b.members) {
        if (m.first == "required" || annotation_keywords().count(m.first)) continue;
        if (m.first == "type") {
          const std::vector<std::string> t = type_list(&m.second);
          if (t.size() != 1 || t[0] != "object") return false;
          typed = true;
        } else if (m.first == "properties" && m.second.is_object()) {
          for (const auto& pm : m.second.members) {
            const bool trivial = (pm.second.is_bool() && pm.second.boolean) || (pm.second.is_object() && rule_key(pm.second) == "{");
            const JsonValue* given = props ? props->get(pm.first) : nullptr;
            if (!trivial && !(given && rule_key(*given) == rule_key(pm.second))) return false;
          }
        } else {
          return false;
        }
      }
      untyped += !typed;
      std::sort(keys.begin(), keys.end());
      keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
      groups.push_back(std::move(keys));
    }
    if (untyped == 1) return false;
    JsonValue only_objects;
    only_objects.kind = JsonValue::Kind::kObject;
    for (const auto& m : s.members)
      if (m.first != "oneOf" && m.first != "type") only_objects.members.push_back(m);
    if (const JsonValue* t = s.get("type")) {
      const std::vector<std::string> types = type_list(t);
      if (std::find(types.begin(), types.end(), "object") == types.end()) {
        out = nfa.alt({});
        return true;
      }
    }
    JsonValue object_type;
    object_type.kind = JsonValue::Kind::kString;
    object_type.text = "object";
    only_objects.members.emplace_back("type", object_type);
    const JsonValue* merged = schemas_.own(std::move(only_objects));
    key_groups_[merged] = std::move(groups);
    out = typed_frag(nfa, *merged, ptr, leaves);
    return true;
  }

  Frag alternatives(Nfa& nfa, const JsonValue* rest, const JsonValue& list, const std::string& ptr, Leaves& leaves, int depth) {
    if (!list.is_array() || list.items.empty()) fail_at(ptr, "anyOf/oneOf must be a non-empty array");
    std::vector<Frag> opts;
    for (size_t i = 0; i < list.items.size(); ++i)
      opts.push_back(value_frag(nfa, schemas_.with_siblings(rest, &list.items[i]), ptr + "/" + std::to_string(i), leaves, depth + 1));
    return nfa.alt(opts);
  }

  Frag typed_frag(Nfa& nfa, const JsonValue& s, const std::string& ptr, Leaves& leaves) {
    std::vector<std::string> types;
    if (const JsonValue* t = s.get("type")) {
      if (!t->is_string() && !t->is_array()) fail_at(ptr + "/type", "type must be a string or an array");
      types = type_list(t);
      static const std::set<std::string> kKnown{"null", "boolean", "object", "array", "number", "integer", "string"};
      for (const auto& x : types)
        if (!kKnown.count(x)) fail_at(ptr + "/type", "unknown type '" + x + "'");
    } else {
      types = {"null", "boolean", "object", "array", "number", "string"};
    }
    bool has_number = std::find(types.begin(), types.end(), "number") != types.end();
    const JsonValue* en = s.get("enum");
    const JsonValue* cn = s.get("const");
    if (en || cn) {
      std::vector<const JsonValue*> values;
      if (en) {
        if (!en->is_array()) fail_at(ptr + "/enum", "enum must be an array");
        for (const auto& v : en->items) values.push_back(&v);
      }
      if (cn) {
        if (en) {
          std::vector<const JsonValue*> keep;
          for (const JsonValue* v : values)
            if (v->dump() == cn->dump()) keep.push_back(v);
          values = keep;
        } else {
          values.push_back(cn);
        }
      }
      if (values.size() > leaves.largest_enum_size) {
        leaves.largest_enum_size = values.size();
        leaves.largest_enum_ptr = ptr + (en ? "/enum" : "/const");
      }
      // containers: their array/object keywords too (literal_allowed checks leaf keywords)
      const JsonValue* without_values = nullptr;
      for (const JsonValue* v : values) {
        if (!leaves_.literal_allowed(*v, s, types)) continue;
        if (v->is_array() || v->is_object()) {
          if (!without_values) {
            JsonValue w;
            w.kind = JsonValue::Kind::kObject;
            for (const auto& m : s.members)
              if (m.first != "enum" && m.first != "const") w.members.push_back(m);
            without_values = schemas_.own(std::move(w));
          }
          if (prover_.value_invalid(*v, *without_values, ptr)) continue;
        }
        leaves.alts.push_back(leaves_.literal_frag(leaves.nfa, *v, 0));
      }
      return nfa.alt({});
    }
    std::vector<Frag> nonleaf;
    for (const auto& t : types) {
      if (t == "null") leaves.alts.push_back(leaves.nfa.literal("null"));
      else if (t == "boolean") leaves.alts.push_back(leaves.nfa.alt({leaves.nfa.literal("true"), leaves.nfa.literal("false")}));
      else if (t == "string") string_leaf(nfa, s, ptr, leaves, nonleaf);
      else if (t == "number") leaves.alts.push_back(leaves_.number_frag(leaves.nfa, s, ptr, false));
      else if (t == "integer" && !has_number) leaves.alts.push_back(leaves_.number_frag(leaves.nfa, s, ptr, true));
      else if (t == "object") nonleaf.push_back(object_frag(nfa, s, ptr));
      else if (t == "array") nonleaf.push_back(array_frag(nfa, s, ptr));
    }
    return nfa.alt(nonleaf);
  }

  // A string leaf: into the rule's terminal leaves, or a call of its own counted rule
  // (counted_strings.h: its length bounds are counted in the parser state).
  void string_leaf(Nfa& nfa, const JsonValue& s, const std::string& ptr, Leaves& leaves, std::vector<Frag>& calls) {
    LeafLanguages::StringLanguage sl = leaves_.string_language(s, ptr);
    if (sl.counted) calls.push_back(nfa.call(builder_.counted_rule(std::move(sl.counter), ptr)));
    else leaves.dfas.push_back(std::move(sl.dfa));
  }

  // ---- objects --------------------------------------------------------------------------------------
  static Dfa union_of(const Dfa& a, const Dfa& b) {
    Nfa n;
    Frag f = n.alt({embed(n, a), embed(n, b)});
    return determinize(n, f, 1000000);
  }

  // Keys of additional properties: any string except the known names (and pattern keys), within
  // the propertyNames language `allowed` when there is one.
  // `open`: the key without its opening quote (an any-order object reads that quote before its
  // members fan out).
  uint32_t additional_key_rule(const std::vector<std::string>& known, const Dfa* excluded_patterns, const Dfa* allowed,
                               bool open = false) {
    std::string key = open ? "\x03" : "";
    for (const auto& k : known) key += k + '\0';
    if (excluded_patterns) key += "\x01" + excluded_patterns->signature();
    if (allowed) key += "\x02" + allowed->signature();
    auto it = addkey_cache_.find(key);
    if (it != addkey_cache_.end()) return it->second;
    if (free_string_.states.empty()) {
      Nfa a;
      Frag fa = a.seq({a.literal("\""), a.star(json_char(a, {{0, kMaxCodePoint}})), a.literal("\"")});
      free_string_ = determinize(a, fa, opts_.max_rule_states);
    }
    Dfa da = free_string_;
    if (!known.empty()) {
      Nfa b;
      std::vector<Frag> lits;
      for (const auto& k : known) lits.push_back(json_string_literal(b, k));
      Dfa db = determinize(b, b.alt(lits), opts_.max_rule_states);
      da = intersect(da, db, true, opts_.max_rule_states);
    }
    if (excluded_patterns && !excluded_patterns->states.empty()) da = intersect(da, *excluded_patterns, true, opts_.max_rule_states);
    if (allowed) da = allowed->states.empty() ? Dfa{} : intersect(da, *allowed, false, opts_.max_rule_states);
    if (open) da = after_byte(da, '"');
    if (da.states.empty()) da.states.emplace_back();  // no key possible: dead rule
    if (da.states.size() < 400) da = minimize(da);
    uint32_t id = builder_.terminal_rule(std::move(da), open ? "#additional-key-open" : "#additional-key");
    addkey_cache_.emplace(key, id);
    return id;
  }

  struct Prop {
    std::string name;
    const JsonValue* schema;
    bool required;
  };
  // patternProperties: disjoint key languages (excluding known names), each with its schema
  struct PatternKey {
    uint32_t key_rule;
    uint32_t open_key_rule;  // without the opening quote (any order only)
    const JsonValue* schema;
    std::string ptr;
  };
  struct ObjectShape {
    std::vector<Prop> props;
    std::vector<std::string> required, names;
    const JsonValue* addl = nullptr;
    bool addl_allowed = true;
    int64_t min_props = 0, max_props = -1;
    std::vector<PatternKey> pattern_keys;
    Dfa pattern_union;
    bool names_limited = false;  // propertyNames: keys must be in `names_allowed`
    Dfa names_allowed;
    bool unsatisfiable = false;  // a required key that propertyNames refuses
    const Dfa* allowed() const { return names_limited ? &names_allowed : nullptr; }
  };

  // The JSON-string language (quotes included) of the keys that `propertyNames` schema `s`
  // admits, into `out`; false when it admits every key. Keywords for other types than strings
  // constrain no key; string keywords (type, lengths, pattern, format, enum/const) as for values.
  bool key_language(const JsonValue* s, std::string ptr, Dfa& out) {
    s = schemas_.resolved(s, ptr);
    if (s->is_bool()) {
      out = Dfa{};
      return !s->boolean;
    }
    if (!s->is_object()) fail_at(ptr, "a schema must be an object or a boolean");
    static const std::unordered_set<std::string> kString{"type", "pattern", "format", "minLength", "maxLength",
                                                         "enum", "const", kMorePatterns};
    static const std::unordered_set<std::string> kOtherTypes{
        "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "items", "prefixItems",
        "additionalItems", "contains", "minContains", "maxContains", "maxItems", "minItems", "uniqueItems",
        "properties", "patternProperties", "additionalProperties", "required", "maxProperties", "minProperties",
        "propertyNames", "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties",
        "unevaluatedItems"};
    static const std::unordered_set<std::string> kRefused{"anyOf", "oneOf", "allOf", "not", "if", "$ref",
                                                          "$dynamicRef", "$recursiveRef"};
    bool constrains = false;
    for (const auto& m : s->members) {
      if (kString.count(m.first)) constrains = true;
      else if (kRefused.count(m.first) && !kOtherTypes.count(m.first))
        fail_at(ptr + "/" + escape_pointer(m.first), "unsupported keyword '" + m.first + "' in propertyNames");
    }
    if (!constrains) return false;
    std::vector<std::string> types{"string"};
    if (const JsonValue* t = s->get("type")) {
      types = type_list(t);
      if (std::find(types.begin(), types.end(), "string") == types.end()) {
        out = Dfa{};
        return true;
      }
    }
    const JsonValue* en = s->get("enum");
    const JsonValue* cn = s->get("const");
    if (!en && !cn) {
      out = leaves_.string_dfa(*s, ptr, "propertyNames");
      return true;
    }
    if (en && !en->is_array()) fail_at(ptr + "/enum", "enum must be an array");
    Nfa n;
    std::vector<Frag> names;
    auto add = [&](const JsonValue& v) {
      if (v.is_string() && (!cn || v.dump() == cn->dump()) && leaves_.literal_allowed(v, *s, types))
        names.push_back(leaves_.literal_frag(n, v, 0));
    };
    if (en) for (const auto& v : en->items) add(v);
    else add(*cn);
    out = names.empty() ? Dfa{} : determinize(n, n.alt(names), opts_.max_rule_states);
    return true;
  }

  // propertyNames of object schema `s`: known properties it refuses are dropped (a required one
  // makes the object unsatisfiable); additional and pattern keys are limited in object_patterns
  // and additional_key_rule.
  void object_names(const JsonValue& s, const std::string& ptr, ObjectShape& o) {
    const JsonValue* pn = s.get("propertyNames");
    if (!pn) return;
    o.names_limited = key_language(pn, ptr + "/propertyNames", o.names_allowed);
    if (!o.names_limited) return;
    std::vector<Prop> kept;
    for (const Prop& p : o.props) {
      Nfa t;
      Dfa lit = determinize(t, json_string_literal(t, p.name), opts_.max_rule_states);
      if (!o.names_allowed.states.empty() && !intersect(lit, o.names_allowed, false, opts_.max_rule_states).states.empty())
        kept.push_back(p);
      else if (p.required)
        o.unsatisfiable = true;
    }
    o.props = std::move(kept);
    o.names.clear();
    for (const auto& p : o.props) o.names.push_back(p.name);
  }

  // properties, required, additionalProperties, min/maxProperties of object schema `s`
  void object_members(const JsonValue& s, const std::string& ptr, ObjectShape& o) {
    auto& props = o.props;
    const JsonValue* pr = s.get("properties");
    if (pr && !pr->is_object()) fail_at(ptr + "/properties", "properties must be an object");
    if (const JsonValue* r = s.get("required")) {
      if (!r->is_array()) fail_at(ptr + "/required", "required must be an array");
      std::unordered_set<std::string> seen;
      for (const auto& x : r->items) {
        if (!x.is_string()) fail_at(ptr + "/required", "required must list strings");
        if (seen.insert(x.text).second) o.required.push_back(x.text);
      }
    }
    std::unordered_map<std::string, size_t> prop_index;  // name -> index in props (hash maps: no N^2 scans)
    if (pr) {
      for (const auto& m : pr->members) {
        auto [it, fresh] = prop_index.emplace(m.first, props.size());
        if (fresh) props.push_back({m.first, &m.second, false});
        else props[it->second].schema = &m.second;  // last one wins, as in Python's json
      }
    }
    const JsonValue* addl = s.get("additionalProperties");
    if (!addl) addl = (opts_.strict && pr) ? schemas_.own_bool(false) : schemas_.true_schema();
    if (addl->is_object() && addl->members.empty()) addl = schemas_.true_schema();
    o.addl = addl;
    o.addl_allowed = !(addl->is_bool() && !addl->boolean);
    for (const auto& r : o.required) {
      auto [it, fresh] = prop_index.emplace(r, props.size());
      if (fresh) props.push_back({r, addl, true});
      else props[it->second].required = true;
    }
    if (auto g = key_groups_.find(&s); g != key_groups_.end() && o.addl_allowed)  // group keys: known (additional) ones
      for (const auto& keys : g->second)
        for (const auto& k : keys)
          if (prop_index.emplace(k, props.size()).second) props.push_back({k, addl, false});
    LeafLanguages::get_count(s, "minProperties", ptr, o.min_props);
    LeafLanguages::get_count(s, "maxProperties", ptr, o.max_props);
    for (const auto& p : props) o.names.push_back(p.name);
    object_names(s, ptr, o);
  }

  // patternProperties into o.pattern_keys; a known property whose name matches a pattern must
  // satisfy both schemas.
  void object_patterns(const JsonValue& s, const std::string& ptr, ObjectShape& o) {
    auto& props = o.props;
    const auto& names = o.names;
    if (const JsonValue* pp = s.get("patternProperties"); pp && pp->is_object() && !pp->members.empty()) {
      Dfa known;
      if (!names.empty()) {
        Nfa b;
        std::vector<Frag> lits;
        for (const auto& k : names) lits.push_back(json_string_literal(b, k));
        known = determinize(b, b.alt(lits), opts_.max_rule_states);
      }
      std::vector<Dfa> langs;
      for (const auto& m : pp->members) {
        std::string kp = ptr + "/patternProperties/" + escape_pointer(m.first);
        Nfa a;
        Frag f;
        try {
          f = a.seq({a.literal("\""), compile_pattern(a, m.first), a.literal("\"")});
        } catch (const CompileError& e) {
          rethrow_at(e, kp);
        }
        Dfa full = determinize(a, f, opts_.max_rule_states);
        for (auto& p : props) {
          Nfa t;
          Dfa lit = determinize(t, json_string_literal(t, p.name), opts_.max_rule_states);
          if (!intersect(full, lit, false, opts_.max_rule_states).states.empty()) {
            JsonValue* both = schemas_.own(SchemaNormalizer::make_allof({p.schema, &m.second}));
            p.schema = both;
          }
        }
        Dfa d = names.empty() ? full : intersect(full, known, true, opts_.max_rule_states);
        if (o.names_limited)
          d = o.names_allowed.states.empty() ? Dfa{} : intersect(d, o.names_allowed, false, opts_.max_rule_states);
        for (const Dfa& other : langs)
          if (!intersect(d, other, false, opts_.max_rule_states).states.empty())
            fail_at(kp, "overlapping patternProperties patterns are not supported");
        o.pattern_union = langs.empty() ? d : union_of(o.pattern_union, d);
        langs.push_back(d);
        if (d.states.empty()) continue;
        Dfa dm = d.states.size() < 400 ? minimize(d) : d;
        // the states of a minimal DFA reachable after a byte form a minimal DFA: no second minimize
        const uint32_t open_rule = opts_.any_order ? builder_.terminal_rule(after_byte(dm, '"'), kp + "#open") : 0;
        o.pattern_keys.push_back({builder_.terminal_rule(std::move(dm), kp), open_rule, &m.second, kp});
      }
    }
  }

  Frag object_frag(Nfa& n, const JsonValue& s, const std::string& ptr) {
    if (opts_.any_order) return object_any_order(n, s, ptr);
    ObjectShape o;
    object_members(s, ptr, o);
    if (o.unsatisfiable) return n.alt({});
    const auto& props = o.props;
    const auto& required = o.required;
    const JsonValue* addl = o.addl;
    const bool addl_allowed = o.addl_allowed;
    const int64_t min_props = o.min_props, max_props = o.max_props;
    if (min_props > static_cast<int64_t>(required.size()))
      fail_at(ptr + "/minProperties", "unsupported JSON Schema keyword 'minProperties' (more than the required properties)");
    if (max_props >= 0) {
      bool pattern_props = s.get("patternProperties") && s.get("patternProperties")->is_object() &&
                           !s.get("patternProperties")->members.empty();
      if (addl_allowed || pattern_props || static_cast<int64_t>(props.size()) > max_props) {
        if (max_props < static_cast<int64_t>(required.size())) return n.alt({});
        fail_at(ptr + "/maxProperties", "unsupported JSON Schema keyword 'maxProperties'");
      }
    }
    size_t np = props.size();
    const std::vector<std::string>& names = o.names;
    object_patterns(s, ptr, o);
    const auto& pattern_keys = o.pattern_keys;
    const Dfa& pattern_union = o.pattern_union;

    int end = n.add_state();
    int open = n.add_state();
    Frag lb = n.literal("{");
    Frag w0 = ws(n);
    n.add_eps(lb.end, w0.start);
    n.add_eps(w0.end, open);
    // after key j: ws : ws value -> after[j+1]
    std::vector<int> kv_cont(np), after(np + 1);
    for (size_t j = 0; j <= np; ++j) after[j] = n.add_state();
    for (size_t j = 0; j < np; ++j) {
      std::string pp = ptr + "/properties/" + escape_pointer(props[j].name);
      Frag kv = n.seq({ws(n), n.literal(":"), after_sep(n), n.call(rule_for(props[j].schema, pp))});
      kv_cont[j] = kv.start;
      n.add_eps(kv.end, after[j + 1]);
    }
    // the key of the next property: any name of [i, r_i] (see key_trie.h), deterministic states
    // (trie node, first and last allowed name) built on demand
    object_state_budget_ += kStatesPerProperty * np;
    KeyTrie trie(names, opts_.max_rule_states + kStatesPerProperty * np);
    std::unordered_map<uint64_t, int> dispatch_state;  // (node, lo, hi) -> Nfa state
    std::vector<std::tuple<uint32_t, uint32_t, uint32_t, int>> pending;
    auto dispatch = [&](uint32_t u, uint32_t lo, uint32_t hi) -> int {
      if (!trie.narrow(u, lo, hi)) return -1;
      const uint64_t key = (static_cast<uint64_t>(u) * (np + 1) + lo) * (np + 1) + hi;
      auto it = dispatch_state.find(key);
      if (it != dispatch_state.end()) return it->second;
      int st = n.add_state();
      dispatch_state.emplace(key, st);
      pending.push_back({u, lo, hi, st});
      return st;
    };
    std::vector<uint32_t> last_allowed(np);  // r_i: the first required property from i on, else the last one
    for (size_t i = np; i-- > 0;)
      last_allowed[i] = props[i].required || i + 1 == np ? static_cast<uint32_t>(i) : last_allowed[i + 1];
    auto key_from = [&](size_t i) -> int {  // keys allowed right after property i-1
      int d = dispatch(0, static_cast<uint32_t>(i), last_allowed[i]);
      while (!pending.empty()) {
        auto [u, lo, hi, st] = pending.back();
        pending.pop_back();
        if (trie.final_key(u) >= 0) n.add_eps(st, kv_cont[trie.final_key(u)]);
        for (const ByteEdge& e : trie.edges(u)) {
          int t = dispatch(e.to, lo, hi);
          if (t >= 0) n.add_bytes(st, e.lo, e.hi, t);
        }
      }
      return d;
    };
    // suffix_optional[i]: properties i.. are all optional
    std::vector<char> rest_optional(np + 1, 1);
    for (size_t i = np; i-- > 0;) rest_optional[i] = rest_optional[i + 1] && !props[i].required;
    // additional properties loop: ADD = addkey ws : ws value -> NA ; NA ws (',' ws ADD | '}')
    int add = -1;
    if (addl_allowed || !pattern_keys.empty()) {
      std::vector<Frag> kvs;
      if (addl_allowed)
        kvs.push_back(n.seq({n.call(additional_key_rule(names, pattern_keys.empty() ? nullptr : &pattern_union, o.allowed())), ws(n),
                             n.literal(":"), after_sep(n), n.call(rule_for(addl, ptr + "/additionalProperties"))}));
      for (const auto& pk : pattern_keys)
        kvs.push_back(n.seq({n.call(pk.key_rule), ws(n), n.literal(":"), after_sep(n), n.call(rule_for(pk.schema, pk.ptr))}));
      Frag kv = n.alt(kvs);
      add = kv.start;
      Frag w = ws(n);
      n.add_eps(kv.end, w.start);
      int na = w.end;
      Frag comma = n.seq(n.literal(","), after_sep(n));
      n.add_eps(na, comma.start);
      n.add_eps(comma.end, add);
      n.add_bytes(na, '}', '}', end);
    }
    auto targets_from = [&](int from, size_t i) {
      if (i < np)
        if (int d = key_from(i); d >= 0) n.add_eps(from, d);
      if (add >= 0 && rest_optional[i]) n.add_eps(from, add);
    };
    // nothing emitted yet
    targets_from(open, 0);
    if (rest_optional[0]) n.add_bytes(open, '}', '}', end);
    // after property i-1 was emitted
    for (size_t i = 1; i <= np; ++i) {
      Frag w = ws(n);
      n.add_eps(after[i], w.start);
      if (rest_optional[i]) n.add_bytes(w.end, '}', '}', end);
      bool more = i < np || add >= 0;
      if (more && (i < np || rest_optional[i])) {
        Frag comma = n.seq(n.literal(","), after_sep(n));
        n.add_eps(w.end, comma.start);
        targets_from(comma.end, i);
      }
    }
    return {lb.start, end};
  }

  // ---- objects with properties in any order ----------------------------------------------------
  // The object is its own rule: '{' ws, then members until '}'. The object reads the opening
  // quote of each key itself ('"' first, ', "' after a member), then calls one rule per key
  // "name\" ws : ws value" (the key after its quote), guarded by the seen-key set in the parser
  // state (grammar.h, stepper.h): known key j at most once, required keys before '}',
  // min/maxProperties on the count. Linear in the number of properties: no state of the
  // automaton enumerates orders or subsets. Additional and pattern properties are one more
  // member rule (keys outside the known names, counted, not remembered: a repeated additional key
  // is counted twice, as it would be read twice). Reading the separator and quote before the
  // fan-out keeps a value's closing suffix (',' '"' ...) on one stack, and makes the key nodes
  // after ', "' the same (cached) nodes as after '{"'; the separator's guard (kMore) lets it
  // through only while some member guard would pass.
  uint32_t member_rule(const Prop* known, const ObjectShape& o, const std::string& ptr) {
    Nfa n;
    std::vector<Frag> kvs;
    auto kv = [&](Frag key, uint32_t value_rule) {
      kvs.push_back(n.seq({key, ws(n), n.literal(":"), after_sep(n), n.call(value_rule)}));
    };
    if (known) {
      kv(json_string_literal(n, known->name, false), rule_for(known->schema, ptr + "/properties/" + escape_pointer(known->name)));
    } else {
      if (o.addl_allowed)
        kv(n.call(additional_key_rule(o.names, o.pattern_keys.empty() ? nullptr : &o.pattern_union, o.allowed(), true)),
           rule_for(o.addl, ptr + "/additionalProperties"));
      for (const auto& pk : o.pattern_keys) kv(n.call(pk.open_key_rule), rule_for(pk.schema, pk.ptr));
    }
    uint32_t id = builder_.reserve_rule(ptr + (known ? "/properties/" + escape_pointer(known->name) : std::string("#member")));
    builder_.define_rule(id, determinize(n, n.alt(kvs), opts_.max_rule_states));
    return id;
  }

  Frag object_any_order(Nfa& outer, const JsonValue& s, const std::string& ptr) {
    auto groups = key_groups_.find(&s);
    std::string memo_key = "{any-order}" + rule_key(s);
    if (groups != key_groups_.end())
      for (const auto& keys : groups->second) {
        memo_key += "{group}";
        for (const auto& k : keys) memo_key += std::to_string(k.size()) + ":" + k;
      }
    if (auto it = memo_.find(memo_key); it != memo_.end()) return outer.call(it->second);
    ObjectShape o;
    object_members(s, ptr, o);
    if (o.unsatisfiable) return outer.alt({});
    const size_t np = o.props.size();
    const int64_t nreq = static_cast<int64_t>(o.required.size());
    if (o.max_props >= 0 && (o.max_props < nreq || o.min_props > o.max_props)) return outer.alt({});
    object_patterns(s, ptr, o);
    const bool more = o.addl_allowed || !o.pattern_keys.empty();
    if (!more && o.min_props > static_cast<int64_t>(np)) return outer.alt({});
    // oneOf of key groups (key_group_one_of); a group with a key the object cannot have never completes
    std::vector<uint64_t> group_bits;
    uint32_t num_groups = 0;
    if (groups != key_groups_.end()) {
      if (o.min_props > nreq && !more)
        fail_at(ptr + "/oneOf", "oneOf of required keys with minProperties beyond the required keys and no additional properties is not supported");
      std::unordered_map<std::string, uint32_t> index;
      for (uint32_t k = 0; k < np; ++k) index.emplace(o.props[k].name, k);
      const size_t nw = (np + 63) / 64;
      for (const auto& keys : groups->second) {
        std::vector<uint64_t> bits(nw, 0);
        bool possible = true;
        for (const auto& k : keys) {
          auto it = index.find(k);
          if (it == index.end()) possible = false;
          else bits[it->second >> 6] |= uint64_t(1) << (it->second & 63);
        }
        if (!possible) continue;
        group_bits.insert(group_bits.end(), bits.begin(), bits.end());
        ++num_groups;
      }
      if (num_groups == 0) return outer.alt({});
    }
    const uint32_t id = builder_.reserve_rule(ptr);
    memo_.emplace(memo_key, id);
    Grammar::Object info;
    info.num_keys = static_cast<uint32_t>(np);
    info.required.assign(info.words(), 0);
    for (uint32_t k = 0; k < np; ++k)
      if (o.props[k].required) info.required[k >> 6] |= uint64_t(1) << (k & 63);
    info.num_required = static_cast<uint32_t>(nreq);
    info.groups = std::move(group_bits);
    info.num_groups = num_groups;
    info.min = static_cast<uint32_t>(std::min<int64_t>(o.min_props, 0xFFFFFFFEll));
    info.max = o.max_props < 0 ? kUnbounded : static_cast<uint32_t>(std::min<int64_t>(o.max_props, 0xFFFFFFFEll));
    std::vector<uint32_t> members(np);
    for (size_t k = 0; k < np; ++k) members[k] = member_rule(&o.props[k], o, ptr);
    const int64_t additional = more ? static_cast<int64_t>(member_rule(nullptr, o, ptr)) : -1;
    auto punctuation_rule = [&](const std::string& name, const std::string& before_sep, const std::string& after) {
      Nfa c;
      Frag f = before_sep.empty() ? c.literal(after) : c.seq({c.literal(before_sep), after_sep(c), c.literal(after)});
      const uint32_t r = builder_.reserve_rule(ptr + name);
      builder_.define_rule(r, determinize(c, f, opts_.max_rule_states));
      return r;
    };
    const uint32_t close = punctuation_rule("#close", "", "}");
    const uint32_t quote = punctuation_rule("#first-key", "", "\"");
    const uint32_t comma = punctuation_rule("#next-key", ",", "\"");
    const uint32_t obj = builder_.add_object(info, members, additional);
    for (uint32_t k = 0; k < np; ++k) builder_.set_guard(members[k], {Grammar::Guard::kMember, obj, k});
    if (more) builder_.set_guard(static_cast<uint32_t>(additional), {Grammar::Guard::kAdditional, obj, 0});
    builder_.set_guard(close, {Grammar::Guard::kClose, obj, 0});
    builder_.set_guard(quote, {Grammar::Guard::kMore, obj, 0});
    builder_.set_guard(comma, {Grammar::Guard::kMore, obj, 0});
    // '{' ws O ; O: '"' K | '}' ; K: member -> A ; A: ws W ; W: ', "' K | '}'
    Nfa n;
    Frag lb = n.literal("{");
    Frag w0 = ws(n);
    n.add_eps(lb.end, w0.start);
    const int open = w0.end, end = n.add_state(), key = n.add_state();
    Frag wa = ws(n);
    const int after = wa.start, between = wa.end;
    for (size_t k = 0; k < np; ++k) n.add_call(key, members[k], after);
    if (more) n.add_call(key, static_cast<uint32_t>(additional), after);
    n.add_call(open, quote, key);
    n.add_call(between, comma, key);
    n.add_call(open, close, end);
    n.add_call(between, close, end);
    builder_.define_rule(id, determinize(n, {lb.start, end}, opts_.max_rule_states + 4 * np));
    return outer.call(id);
  }

  // ---- arrays -----------------------------------------------------------------------------------------
  Frag array_frag(Nfa& n, const JsonValue& s, const std::string& ptr) {
    if (s.get("contains")) fail_at(ptr + "/contains", "unsupported JSON Schema keyword 'contains'");
    std::vector<const JsonValue*> prefix;
    const JsonValue* rest = schemas_.true_schema();
    std::string rest_ptr = ptr + "/items";
    const JsonValue* items = s.get("items");
    const JsonValue* pfx = s.get("prefixItems");
    if (pfx) {
      if (!pfx->is_array()) fail_at(ptr + "/prefixItems", "prefixItems must be an array");
      for (const auto& x : pfx->items) prefix.push_back(&x);
      if (items) rest = items;
    } else if (items && items->is_array()) {
      for (const auto& x : items->items) prefix.push_back(&x);
      if (const JsonValue* a = s.get("additionalItems")) rest = a;
      rest_ptr = ptr + "/additionalItems";
    } else if (items) {
      rest = items;
    }
    bool rest_allowed = !(rest->is_bool() && !rest->boolean);
    int64_t mn = 0, mx = -1;
    LeafLanguages::get_count(s, "minItems", ptr, mn);
    LeafLanguages::get_count(s, "maxItems", ptr, mx);
    if (!rest_allowed) mx = mx < 0 ? static_cast<int64_t>(prefix.size()) : std::min<int64_t>(mx, static_cast<int64_t>(prefix.size()));
    if (mx >= 0 && mx < mn) return n.alt({});
    int64_t unroll = std::max<int64_t>(static_cast<int64_t>(prefix.size()), mn);
    if (mx >= 0) unroll = std::max<int64_t>(unroll, mx);
    if (unroll > kMaxArrayUnroll) fail_at(ptr, "minItems/maxItems above " + std::to_string(kMaxArrayUnroll) + " is not supported");
    auto item_rule = [&](int64_t k) -> uint32_t {
      if (k < static_cast<int64_t>(prefix.size())) return rule_for(prefix[k], ptr + (pfx ? "/prefixItems/" : "/items/") + std::to_string(k));
      return rule_for(rest, rest_ptr);
    };
    int end = n.add_state();
    Frag lb = n.seq(n.literal("["), ws(n));
    if (mn == 0) n.add_bytes(lb.end, ']', ']', end);
    // S_k: after k items. For unbounded arrays, S_k for k > loop_from behaves like S_{loop_from+1}.
    int64_t loop_from = mx < 0 ? std::max<int64_t>(static_cast<int64_t>(prefix.size()), mn) : -1;
    int prev_after = -1, loop_item = -1;
    int64_t k = 0;
    for (;; ++k) {
      if (mx >= 0 && k >= mx) break;
      if (k >= static_cast<int64_t>(prefix.size()) && !rest_allowed) break;
      int from;
      if (k == 0) {
        from = lb.end;
      } else {
        Frag w = ws(n);
        n.add_eps(prev_after, w.start);
        if (k >= mn) n.add_bytes(w.end, ']', ']', end);
        Frag comma = n.seq(n.literal(","), after_sep(n));
        n.add_eps(w.end, comma.start);
        from = comma.end;
      }
      if (loop_from >= 0 && k == loop_from + 1) {
        n.add_eps(from, loop_item);  // item k is like item loop_from and leads back to S_k
        prev_after = -1;
        break;
      }
      Frag item = n.call(item_rule(k));
      n.add_eps(from, item.start);
      if (loop_from >= 0 && k == loop_from) loop_item = item.start;
      prev_after = item.end;
    }
    if (prev_after >= 0 && k >= mn) {
      Frag w = ws(n);
      n.add_eps(prev_after, w.start);
      n.add_bytes(w.end, ']', ']', end);
    }
    return {lb.start, end};
  }

  SchemaOptions opts_;
  GrammarBuilder builder_;
  SchemaNormalizer schemas_;
  LeafLanguages leaves_;
  OneOfProver prover_;
  std::unordered_map<std::string, uint32_t> memo_;
  size_t object_state_budget_ = 0;  // extra automaton states the current rule's objects may use
  Dfa free_string_;  // "any JSON string", built on first use
  std::unordered_map<std::string, uint32_t> addkey_cache_;
  // object schemas made by key_group_one_of -> their key groups
  std::unordered_map<const JsonValue*, std::vector<std::vector<std::string>>> key_groups_;
  std::deque<Work> work_;
};

}  // namespace


Grammar json_schema_to_grammar(const std::string& schema_json, const SchemaOptions& options) {
  if (options.max_whitespace < 0 || options.max_whitespace > 1000) throw CompileError("max_whitespace must be in [0, 1000]");
  if (schema_json.size() > options.max_schema_bytes)
    throw CompileError("schema too large: " + std::to_string(schema_json.size()) + " bytes of JSON, the limit is " +
                       std::to_string(options.max_schema_bytes));
  return Converter(schema_json, options).run();
}

}  // namespace toolken
