#include "json_schema_converter.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "json_value.h"
#include "regex.h"

namespace toolken {
namespace {

constexpr int kMaxInlineDepth = 64;
constexpr int kMaxFlattenDepth = 32;
constexpr int kMaxArrayUnroll = 2000;
// maxLength above this is lowered to it (a subset: longer strings are rejected, never wrong ones accepted).
constexpr int kMaxStringLength = 1000;
// Automata up to this size are minimized (Hopcroft, O(m log n)); larger ones are used as built.
constexpr size_t kMaxMinimizeStates = 20000;
constexpr uint64_t kMaxBound = 999999999999999999ull;  // 10^18 - 1

const std::unordered_set<std::string>& annotation_keywords() {
  static const std::unordered_set<std::string> k{
      "title", "description", "default", "examples", "example", "$comment", "$schema", "$id", "id",
      "deprecated", "readOnly", "writeOnly", "contentEncoding", "contentMediaType", "contentSchema",
      "$vocabulary", "$anchor", "$dynamicAnchor", "discriminator", "nullable", "xml", "externalDocs",
      "$defs", "definitions"};
  return k;
}


const std::unordered_set<std::string>& unsupported_keywords() {
  static const std::unordered_set<std::string> k{
      "not", "if", "dependencies", "dependentRequired", "dependentSchemas",
      "propertyNames", "contains", "minContains", "maxContains", "unevaluatedProperties",
      "unevaluatedItems", "$dynamicRef", "$recursiveRef", "$recursiveAnchor"};
  return k;
}

std::string escape_pointer(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out.push_back(c);
  }
  return out;
}

struct Leaves {
  Nfa nfa;
  std::vector<Frag> alts;  // literals and numbers, determinized together
  std::vector<Dfa> dfas;   // strings, built as DFAs directly
};

class Converter {
 public:
  Converter(const std::string& text, const SchemaOptions& o) : opts_(o), builder_(o.max_total_states) {
    try {
      root_ = parse_json(text);
    } catch (const JsonParseError& e) {
      throw CompileError(std::string("schema is not valid JSON: ") + e.what());
    }
    true_schema_.kind = JsonValue::Kind::kObject;
  }

  Grammar run() {
    if (!root_.is_object() && !root_.is_bool()) throw CompileError("the schema must be a JSON object or boolean (at #)");
    uint32_t root = rule_for(&root_, "#");
    while (!work_.empty()) {
      Work w = work_.front();
      work_.pop_front();
      build_rule(w);
    }
    return builder_.build(root, opts_.flexible_whitespace ? static_cast<uint32_t>(opts_.max_whitespace) : 0);
  }

 private:
  struct Work {
    uint32_t id;
    const JsonValue* schema;
    std::string ptr;
  };

  [[noreturn]] void fail(const std::string& ptr, const std::string& msg) { throw CompileError(msg + " (at " + ptr + ")"); }

  JsonValue* own(JsonValue v) {
    owned_.push_back(std::move(v));
    return &owned_.back();
  }

  // ---- $ref ---------------------------------------------------------------------------------
  const JsonValue* resolve_ref(const JsonValue& ref, const std::string& ptr) {
    if (!ref.is_string()) fail(ptr, "$ref must be a string");
    const std::string& r = ref.text;
    if (r.empty() || r[0] != '#') fail(ptr, "unsupported $ref '" + r + "': only local references ('#/...') are supported");
    if (r == "#") return &root_;
    if (r.size() < 2 || r[1] != '/') fail(ptr, "unsupported $ref '" + r + "': anchors are not supported");
    const JsonValue* cur = &root_;
    size_t pos = 2;
    while (true) {
      size_t next = r.find('/', pos);
      std::string tok = r.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
      std::string dec;
      for (size_t i = 0; i < tok.size(); ++i) {
        if (tok[i] == '~' && i + 1 < tok.size() && (tok[i + 1] == '0' || tok[i + 1] == '1')) {
          dec.push_back(tok[i + 1] == '0' ? '~' : '/');
          ++i;
        } else if (tok[i] == '%' && i + 2 < tok.size() && isxdigit(static_cast<unsigned char>(tok[i + 1])) &&
                   isxdigit(static_cast<unsigned char>(tok[i + 2]))) {
          dec.push_back(static_cast<char>(std::stoi(tok.substr(i + 1, 2), nullptr, 16)));
          i += 2;
        } else {
          dec.push_back(tok[i]);
        }
      }
      if (cur->is_object()) {
        cur = cur->get(dec);
      } else if (cur->is_array()) {
        char* end = nullptr;
        long idx = std::strtol(dec.c_str(), &end, 10);
        cur = (!dec.empty() && *end == 0 && idx >= 0 && static_cast<size_t>(idx) < cur->items.size()) ? &cur->items[idx] : nullptr;
      } else {
        cur = nullptr;
      }
      if (!cur) fail(ptr, "$ref '" + r + "' does not resolve");
      if (next == std::string::npos) break;
      pos = next + 1;
    }
    return cur;
  }

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

  static bool has_validation_siblings(const JsonValue& s, const char* except) {
    for (const auto& m : s.members)
      if (m.first != except && !annotation_keywords().count(m.first)) return true;
    return false;
  }

  // Follows pure-$ref chains ({"$ref": ...} plus annotations only).
  const JsonValue* follow_refs(const JsonValue* s, std::string& ptr) {
    std::set<const JsonValue*> seen;
    while (s->is_object()) {
      const JsonValue* ref = s->get("$ref");
      if (!ref || has_validation_siblings(*s, "$ref")) break;
      if (!seen.insert(s).second) fail(ptr, "$ref cycle that never reaches a schema");
      s = resolve_ref(*ref, ptr);
      ptr = ref->text;
    }
    return s;
  }

  // ---- allOf / $ref-with-siblings merging -----------------------------------------------------
  // Returns a schema without allOf and without $ref+siblings (may be a boolean or a pure $ref).
  const JsonValue* flatten(const JsonValue* s, const std::string& ptr, int depth) {
    if (!s->is_object()) return s;
    const JsonValue* all = s->get("allOf");
    const JsonValue* ref = s->get("$ref");
    bool ref_with_siblings = ref && has_validation_siblings(*s, "$ref");
    if (!all && !ref_with_siblings) return s;
    if (depth > kMaxFlattenDepth) fail(ptr, "allOf/$ref nesting too deep (recursive allOf is not supported)");
    std::vector<const JsonValue*> parts;
    JsonValue rest;
    rest.kind = JsonValue::Kind::kObject;
    for (const auto& m : s->members)
      if (m.first != "allOf" && m.first != "$ref") rest.members.push_back(m);
    parts.push_back(own(std::move(rest)));
    if (all) {
      if (!all->is_array() || all->items.empty()) fail(ptr + "/allOf", "allOf must be a non-empty array");
      for (size_t i = 0; i < all->items.size(); ++i) parts.push_back(&all->items[i]);
    }
    if (ref) parts.push_back(resolve_ref(*ref, ptr));
    std::vector<const JsonValue*> flat;
    for (const JsonValue* p : parts) {
      std::string pp = ptr + "/allOf";
      const JsonValue* q = follow_refs(p, pp);
      q = flatten(q, pp, depth + 1);
      q = follow_refs(q, pp);
      if (q->is_bool()) {
        if (!q->boolean) return own_bool(false);
        continue;
      }
      if (!q->is_object()) fail(pp, "schema must be an object or boolean");
      if (q->get("allOf") || (q->get("$ref") && has_validation_siblings(*q, "$ref"))) q = flatten(q, pp, depth + 1);
      if (q->is_bool()) {
        if (!q->boolean) return own_bool(false);
        continue;
      }
      flat.push_back(q);
    }
    return merge(flat, ptr);
  }

  JsonValue* own_bool(bool b) {
    JsonValue v;
    v.kind = JsonValue::Kind::kBool;
    v.boolean = b;
    return own(std::move(v));
  }

  static std::vector<std::string> type_list(const JsonValue* t) {
    std::vector<std::string> out;
    if (!t) return out;
    if (t->is_string()) out.push_back(t->text);
    else if (t->is_array())
      for (const auto& i : t->items)
        if (i.is_string()) out.push_back(i.text);
    return out;
  }

  JsonValue make_allof(const std::vector<const JsonValue*>& list) {
    if (list.size() == 1) return *list[0];
    JsonValue v, arr;
    v.kind = JsonValue::Kind::kObject;
    arr.kind = JsonValue::Kind::kArray;
    for (const JsonValue* x : list) arr.items.push_back(*x);
    v.members.emplace_back("allOf", std::move(arr));
    return v;
  }

  const JsonValue* merge(const std::vector<const JsonValue*>& parts, const std::string& ptr) {
    JsonValue out;
    out.kind = JsonValue::Kind::kObject;
    auto find = [&](const std::string& k) -> JsonValue* {
      for (auto& m : out.members)
        if (m.first == k) return &m.second;
      return nullptr;
    };
    // type: intersection
    bool any_type = false;
    std::vector<std::string> types;
    for (const JsonValue* p : parts) {
      const JsonValue* t = p->get("type");
      if (!t) continue;
      std::vector<std::string> tl = type_list(t);
      if (!any_type) {
        types = tl;
        any_type = true;
        continue;
      }
      std::vector<std::string> keep;
      for (const auto& a : types)
        for (const auto& b : tl) {
          if (a == b) keep.push_back(a);
          else if (a == "number" && b == "integer") keep.push_back("integer");
          else if (a == "integer" && b == "number") keep.push_back("integer");
        }
      types = keep;
    }
    if (any_type) {
      if (types.empty()) return own_bool(false);
      JsonValue t;
      t.kind = JsonValue::Kind::kArray;
      for (const auto& s : types) {
        JsonValue x;
        x.kind = JsonValue::Kind::kString;
        x.text = s;
        t.items.push_back(x);
      }
      out.members.emplace_back("type", std::move(t));
    }
    // required: union
    std::vector<std::string> required;
    for (const JsonValue* p : parts)
      if (const JsonValue* r = p->get("required"); r && r->is_array())
        for (const auto& x : r->items)
          if (x.is_string() && std::find(required.begin(), required.end(), x.text) == required.end()) required.push_back(x.text);
    if (!required.empty()) {
      JsonValue r;
      r.kind = JsonValue::Kind::kArray;
      for (const auto& s : required) {
        JsonValue x;
        x.kind = JsonValue::Kind::kString;
        x.text = s;
        r.items.push_back(x);
      }
      out.members.emplace_back("required", std::move(r));
    }
    // properties with additionalProperties scoping: a part's additionalProperties constrains the
    // properties other parts add.
    std::vector<std::string> names;
    bool any_obj = false;
    for (const JsonValue* p : parts) {
      if (const JsonValue* pr = p->get("properties"); pr && pr->is_object()) {
        any_obj = true;
        for (const auto& m : pr->members)
          if (std::find(names.begin(), names.end(), m.first) == names.end()) names.push_back(m.first);
      }
      if (p->get("additionalProperties")) any_obj = true;
    }
    if (any_obj) {
      if (!names.empty()) {
        JsonValue props;
        props.kind = JsonValue::Kind::kObject;
        for (const auto& n : names) {
          std::vector<const JsonValue*> list;
          for (const JsonValue* p : parts) {
            const JsonValue* pr = p->get("properties");
            const JsonValue* sub = pr ? pr->get(n) : nullptr;
            if (!sub) sub = p->get("additionalProperties");
            if (sub) list.push_back(sub);
          }
          props.members.emplace_back(n, make_allof(list));
        }
        out.members.emplace_back("properties", std::move(props));
      }
      std::vector<const JsonValue*> addl;
      for (const JsonValue* p : parts)
        if (const JsonValue* a = p->get("additionalProperties")) addl.push_back(a);
      if (!addl.empty()) out.members.emplace_back("additionalProperties", make_allof(addl));
    }
    static const std::unordered_set<std::string> kHandled{"type", "required", "properties", "additionalProperties",
                                                          "allOf", "$ref"};
    static const std::unordered_set<std::string> kMax{"minLength", "minItems", "minimum", "minProperties"};
    static const std::unordered_set<std::string> kMin{"maxLength", "maxItems", "maximum", "maxProperties"};
    int n_alternatives = 0;
    for (const JsonValue* p : parts) {
      if (p->get("anyOf") || p->get("oneOf")) ++n_alternatives;
      for (const auto& m : p->members) {
        const std::string& k = m.first;
        if (kHandled.count(k) || annotation_keywords().count(k)) continue;
        JsonValue* cur = find(k);
        if (!cur) {
          out.members.push_back(m);
          continue;
        }
        const JsonValue& v = m.second;
        if (cur->dump() == v.dump()) continue;
        if ((kMax.count(k) || kMin.count(k)) && cur->is_number() && v.is_number()) {
          bool take = kMax.count(k) ? v.number > cur->number : v.number < cur->number;
          if (take) *cur = v;
        } else if ((k == "exclusiveMinimum" || k == "exclusiveMaximum") && cur->is_number() && v.is_number()) {
          bool take = k == "exclusiveMinimum" ? v.number > cur->number : v.number < cur->number;
          if (take) *cur = v;
        } else if (k == "enum" && cur->is_array() && v.is_array()) {
          JsonValue keep;
          keep.kind = JsonValue::Kind::kArray;
          for (const auto& a : cur->items)
            for (const auto& b : v.items)
              if (a.dump() == b.dump()) {
                keep.items.push_back(a);
                break;
              }
          *cur = keep;
        } else if (k == "const") {
          return own_bool(false);
        } else if (k == "items" && !cur->is_array() && !v.is_array()) {
          *cur = make_allof({cur, &v});
        } else {
          fail(ptr, "cannot merge differing '" + k + "' keywords of allOf/$ref parts");
        }
      }
    }
    if (n_alternatives > 1) fail(ptr, "allOf with several anyOf/oneOf parts is not supported");
    int n_obj_parts = 0;
    bool any_pattern_props = false;
    for (const JsonValue* p : parts) {
      if (p->get("properties") || p->get("additionalProperties") || p->get("patternProperties")) ++n_obj_parts;
      if (p->get("patternProperties")) any_pattern_props = true;
    }
    if (any_pattern_props && n_obj_parts > 1) fail(ptr, "allOf combining patternProperties with other object keywords is not supported");
    return own(std::move(out));
  }

  // ---- rules ------------------------------------------------------------------------------------
  uint32_t rule_for(const JsonValue* s, std::string ptr) {
    s = follow_refs(s, ptr);
    if (s->is_bool() && s->boolean) s = &true_schema_;
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
    Nfa nfa;
    Leaves leaves;
    Frag f = value_frag(nfa, w.schema, w.ptr, leaves, 0);
    f = finish_leaves(nfa, f, leaves, w.ptr);
    Dfa d = determinize(nfa, f, opts_.max_rule_states);
    if (d.states.size() < 400 && !d.has_calls()) d = minimize(d);  // object/array DFAs are near-minimal already
    if (d.states.empty()) {
      d.states.emplace_back();  // unsatisfiable: one dead, non-final state
    }
    builder_.define_rule(w.id, std::move(d));
  }

  Frag finish_leaves(Nfa& nfa, Frag f, Leaves& leaves, const std::string& ptr) {
    if (leaves.alts.empty() && leaves.dfas.empty()) return f;
    if (!leaves.alts.empty()) leaves.dfas.push_back(determinize(leaves.nfa, leaves.nfa.alt(leaves.alts), opts_.max_rule_states));
    Dfa ld = unite(leaves.dfas, opts_.max_rule_states);
    if (ld.states.empty()) return f;
    if (ld.states.size() < 400) ld = minimize(ld);
    uint32_t t = builder_.terminal_rule(std::move(ld), ptr);
    return nfa.alt({f, nfa.call(t)});
  }

  Frag ws(Nfa& nfa) {
    // [ \t\n\r]* here; the matcher bounds the run length (Grammar::max_ws), which keeps one
    // DFA state per whitespace position instead of max_whitespace of them.
    if (!opts_.flexible_whitespace || opts_.max_whitespace <= 0) return nfa.empty();
    int s = nfa.add_state();
    nfa.add_bytes(s, '\t', '\n', s);
    nfa.add_bytes(s, '\r', '\r', s);
    nfa.add_bytes(s, ' ', ' ', s);
    return Frag{s, s};
  }

  void check_keywords(const JsonValue& s, const std::string& ptr) {
    for (const auto& m : s.members) {
      const std::string& k = m.first;
      if (unsupported_keywords().count(k)) {
        if (k == "if" && !s.get("then") && !s.get("else")) continue;  // `if` alone constrains nothing
        if ((k == "patternProperties" || k == "dependencies" || k == "dependentRequired" || k == "dependentSchemas" ||
             k == "propertyNames") && m.second.is_object() && m.second.members.empty())
          continue;  // empty: no constraint
        fail(ptr + "/" + escape_pointer(k), "unsupported JSON Schema keyword '" + k + "'");
      }
    }
    if (const JsonValue* u = s.get("uniqueItems"); u && u->is_bool() && u->boolean)
      fail(ptr + "/uniqueItems", "unsupported JSON Schema keyword 'uniqueItems' (true)");
  }

  // Fragment (in `nfa`) matching the JSON values of schema `s`; leaf alternatives go to `leaves`.
  Frag value_frag(Nfa& nfa, const JsonValue* s, std::string ptr, Leaves& leaves, int depth) {
    if (depth > kMaxInlineDepth) fail(ptr, "schema nesting too deep");
    s = follow_refs(s, ptr);
    s = flatten(s, ptr, 0);
    if (s->is_bool()) {
      if (!s->boolean) return nfa.alt({});
      s = &true_schema_;
    }
    if (!s->is_object()) fail(ptr, "a schema must be an object or a boolean");
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
        const JsonValue* restp = own(std::move(rest));
        Frag f = alternatives(nfa, restp, *one, ptr + "/oneOf", leaves, depth);
        check_one_of(restp, *one, ptr + "/oneOf");  // after the branches compiled: their own errors come first
        return f;
      }
      const JsonValue& list = any ? *any : *one;
      JsonValue rest;
      rest.kind = JsonValue::Kind::kObject;
      for (const auto& m : s->members)
        if (m.first != "anyOf" && m.first != "oneOf") rest.members.push_back(m);
      const JsonValue* restp = own(std::move(rest));
      Frag f = alternatives(nfa, restp, list, ptr + (any ? "/anyOf" : "/oneOf"), leaves, depth);
      if (one) check_one_of(restp, list, ptr + "/oneOf");
      return f;
    }
    return typed_frag(nfa, *s, ptr, leaves);
  }

  // ---- oneOf exclusivity ---------------------------------------------------------------------
  // oneOf accepts an instance that matches exactly one branch. The grammar is a union of the
  // branches, so it is exact only when no instance can match two branches. disjoint() proves
  // that for a pair of schemas from a few sufficient conditions (different JSON types, disjoint
  // const/enum values, a property both must have (one requires it) whose schemas are disjoint, a
  // property required by one and forbidden by the other, non-overlapping numeric ranges, string
  // languages with an empty DFA intersection, array length ranges or first items); it answers
  // false ("may overlap") whenever it cannot prove disjointness.
  enum TypeBit : unsigned {
    kTNull = 1, kTBool = 2, kTObject = 4, kTArray = 8, kTString = 16, kTInteger = 32, kTFraction = 64, kTAll = 127
  };

  static unsigned type_bits_of_names(const std::vector<std::string>& names) {
    unsigned t = 0;
    for (const auto& n : names) {
      if (n == "null") t |= kTNull;
      else if (n == "boolean") t |= kTBool;
      else if (n == "object") t |= kTObject;
      else if (n == "array") t |= kTArray;
      else if (n == "string") t |= kTString;
      else if (n == "integer") t |= kTInteger;
      else if (n == "number") t |= kTInteger | kTFraction;
    }
    return t;
  }

  static unsigned type_bit_of_value(const JsonValue& v) {
    switch (v.kind) {
      case JsonValue::Kind::kNull: return kTNull;
      case JsonValue::Kind::kBool: return kTBool;
      case JsonValue::Kind::kNumber: return v.is_integral() ? kTInteger : kTFraction;
      case JsonValue::Kind::kString: return kTString;
      case JsonValue::Kind::kArray: return kTArray;
      default: return kTObject;
    }
  }

  // JSON equality as jsonschema's const/enum use it (numbers by value, object members unordered).
  static bool json_equal(const JsonValue& a, const JsonValue& b) {
    if (a.is_number() && b.is_number()) return a.number == b.number;
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case JsonValue::Kind::kNull: return true;
      case JsonValue::Kind::kBool: return a.boolean == b.boolean;
      case JsonValue::Kind::kString: return a.text == b.text;
      case JsonValue::Kind::kArray:
        if (a.items.size() != b.items.size()) return false;
        for (size_t i = 0; i < a.items.size(); ++i)
          if (!json_equal(a.items[i], b.items[i])) return false;
        return true;
      default:
        if (a.members.size() != b.members.size()) return false;
        for (const auto& m : a.members) {
          const JsonValue* o = b.get(m.first);
          if (!o || !json_equal(m.second, *o)) return false;
        }
        return true;
    }
  }

  // A schema with $ref chains, allOf and $ref-with-siblings resolved (a boolean or an object).
  const JsonValue* resolved(const JsonValue* s, std::string ptr) {
    s = follow_refs(s, ptr);
    s = flatten(s, ptr, 0);
    return follow_refs(s, ptr);
  }

  // The types `s` allows (ignoring its alternatives) and, when it has const/enum, its values.
  struct Shape {
    unsigned types = kTAll;
    bool finite = false;
    std::vector<const JsonValue*> values;
  };
  static Shape shape_of(const JsonValue& s) {
    Shape sh;
    if (const JsonValue* t = s.get("type")) sh.types = type_bits_of_names(type_list(t));
    const JsonValue* en = s.get("enum");
    const JsonValue* cn = s.get("const");
    if ((en && en->is_array()) || cn) {
      sh.finite = true;
      std::vector<const JsonValue*> vals;
      if (en && en->is_array())
        for (const auto& v : en->items) vals.push_back(&v);
      if (cn) {
        if (en && en->is_array()) {
          bool in = false;
          for (const JsonValue* v : vals) in = in || json_equal(*v, *cn);
          vals.clear();
          if (in) vals.push_back(cn);
        } else {
          vals.push_back(cn);
        }
      }
      for (const JsonValue* v : vals)
        if (type_bit_of_value(*v) & sh.types) sh.values.push_back(v);
      sh.types = 0;
      for (const JsonValue* v : sh.values) sh.types |= type_bit_of_value(*v);
    }
    return sh;
  }

  // The schema an object instance's property `name` must satisfy under `s`; nullptr when that
  // cannot be told simply (patternProperties).
  const JsonValue* property_schema(const JsonValue& s, const std::string& name) {
    if (const JsonValue* pr = s.get("properties"); pr && pr->is_object())
      if (const JsonValue* p = pr->get(name)) return p;
    if (const JsonValue* pp = s.get("patternProperties"); pp && pp->is_object() && !pp->members.empty()) return nullptr;
    if (const JsonValue* a = s.get("additionalProperties")) return a;
    return (opts_.strict && s.get("properties")) ? own_bool(false) : &true_schema_;
  }

  static std::vector<std::string> required_of(const JsonValue& s) {
    std::vector<std::string> out;
    if (const JsonValue* r = s.get("required"); r && r->is_array())
      for (const auto& x : r->items)
        if (x.is_string()) out.push_back(x.text);
    return out;
  }

  // The schema the first item of an array instance must satisfy under `s`.
  const JsonValue* first_item_schema(const JsonValue& s) {
    if (const JsonValue* p = s.get("prefixItems"); p && p->is_array()) return p->items.empty() ? s.get("items") : &p->items[0];
    const JsonValue* it = s.get("items");
    if (it && it->is_array()) return it->items.empty() ? s.get("additionalItems") : &it->items[0];
    return it;
  }

  static int64_t count_of(const JsonValue& s, const char* key, int64_t dflt) {
    const JsonValue* v = s.get(key);
    return v && v->is_number() && v->number >= 0 ? static_cast<int64_t>(v->number > 1e15 ? 1e15 : v->number) : dflt;
  }

  bool numbers_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr) {
    Bound alo, ahi, blo, bhi;
    read_bounds(a, ptr, alo, ahi);
    read_bounds(b, ptr, blo, bhi);
    auto below = [](const Bound& hi, const Bound& lo) {  // every value <= hi is < every value >= lo
      if (!hi.present || !lo.present) return false;
      return hi.value < lo.value || (hi.value == lo.value && (hi.exclusive || lo.exclusive));
    };
    return below(ahi, blo) || below(bhi, alo);
  }

  bool objects_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth) {
    for (int side = 0; side < 2; ++side) {
      const JsonValue& x = side ? b : a;
      const JsonValue& y = side ? a : b;
      for (const auto& name : required_of(x)) {
        const JsonValue* sx = property_schema(x, name);
        const JsonValue* sy = property_schema(y, name);
        if (!sx || !sy) continue;
        // an instance of both has `name` (x requires it), valid under both property schemas
        if (disjoint(sx, sy, ptr, depth + 1)) return true;
      }
    }
    int64_t amin = count_of(a, "minProperties", 0), amax = count_of(a, "maxProperties", INT64_MAX);
    int64_t bmin = count_of(b, "minProperties", 0), bmax = count_of(b, "maxProperties", INT64_MAX);
    return amax < bmin || bmax < amin;
  }

  bool arrays_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth) {
    int64_t amin = count_of(a, "minItems", 0), amax = count_of(a, "maxItems", INT64_MAX);
    int64_t bmin = count_of(b, "minItems", 0), bmax = count_of(b, "maxItems", INT64_MAX);
    if (amax < bmin || bmax < amin) return true;
    if (std::max(amin, bmin) >= 1) {
      const JsonValue* fa = first_item_schema(a);
      const JsonValue* fb = first_item_schema(b);
      if (fa && fb && disjoint(fa, fb, ptr, depth + 1)) return true;
    }
    return false;
  }

  // True only when no JSON value can be valid under both `a` and `b`.
  bool disjoint(const JsonValue* a, const JsonValue* b, const std::string& ptr, int depth) {
    if (depth > 16) return false;
    a = resolved(a, ptr);
    b = resolved(b, ptr);
    if (a->is_bool() || b->is_bool()) return (a->is_bool() && !a->boolean) || (b->is_bool() && !b->boolean);
    if (!a->is_object() || !b->is_object()) return false;
    // alternatives: a value of `a` matches one of its branches (its siblings only narrow it further)
    for (int side = 0; side < 2; ++side) {
      const JsonValue* x = side ? b : a;
      const JsonValue* other = side ? a : b;
      for (const char* key : {"anyOf", "oneOf"}) {
        const JsonValue* list = x->get(key);
        if (!list || !list->is_array() || list->items.empty()) continue;
        for (const auto& branch : list->items)
          if (!disjoint(&branch, other, ptr, depth + 1)) return false;
        return true;
      }
    }
    Shape sa = shape_of(*a), sb = shape_of(*b);
    if (!(sa.types & sb.types)) return true;
    if (sa.finite || sb.finite) {
      const Shape& fin = sa.finite ? sa : sb;
      const JsonValue* other = sa.finite ? b : a;
      const Shape& oth = sa.finite ? sb : sa;
      for (const JsonValue* v : fin.values) {
        if (oth.finite) {
          for (const JsonValue* w : oth.values)
            if (json_equal(*v, *w)) return false;
        } else if (!value_excluded(*v, *other, ptr, depth + 1)) {
          return false;
        }
      }
      return true;
    }
    unsigned common = sa.types & sb.types;
    if (common & (kTNull | kTBool)) return false;
    if ((common & (kTInteger | kTFraction)) && !numbers_disjoint(*a, *b, ptr)) return false;
    if ((common & kTObject) && !objects_disjoint(*a, *b, ptr, depth)) return false;
    if ((common & kTArray) && !arrays_disjoint(*a, *b, ptr, depth)) return false;
    if (common & kTString) {
      try {
        if (!intersect(string_dfa(*a, ptr), string_dfa(*b, ptr), false, opts_.max_rule_states).states.empty())
          return false;
      } catch (const CompileError&) {
        return false;  // too large to decide
      }
    }
    return true;
  }

  // True only when value `v` is surely invalid under schema `s` (see disjoint()).
  bool value_excluded(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth) {
    JsonValue* lit = own(v);
    JsonValue one;
    one.kind = JsonValue::Kind::kObject;
    one.members.emplace_back("const", *lit);
    return disjoint(own(std::move(one)), &s, ptr, depth);
  }

  // Throws unless the branches of oneOf `list` (each combined with the sibling keywords `rest`)
  // are pairwise disjoint, or the options accept overlapping branches.
  void check_one_of(const JsonValue* rest, const JsonValue& list, const std::string& ptr) {
    if (opts_.one_of_any || !list.is_array()) return;
    std::vector<const JsonValue*> branches;
    for (const auto& item : list.items) branches.push_back(with_siblings(rest, &item));
    for (size_t i = 0; i < branches.size(); ++i)
      for (size_t j = i + 1; j < branches.size(); ++j)
        if (!disjoint(branches[i], branches[j], ptr, 0))
          fail(ptr, "oneOf branches " + std::to_string(i) + " and " + std::to_string(j) +
                        " may overlap (a value matching both is invalid under oneOf, and the grammar cannot exclude it); "
                        "make the branches mutually exclusive (e.g. different types, or a required property with "
                        "distinct const/enum values) or compile with one_of=\"any\" to accept a value matching any branch");
  }

  // allOf(rest, branch) when `rest` has validation keywords, else `branch`.
  const JsonValue* with_siblings(const JsonValue* rest, const JsonValue* branch) {
    if (!has_validation_siblings(*rest, "")) return branch;
    JsonValue both, arr;
    both.kind = JsonValue::Kind::kObject;
    arr.kind = JsonValue::Kind::kArray;
    arr.items.push_back(*rest);
    arr.items.push_back(*branch);
    both.members.emplace_back("allOf", std::move(arr));
    return own(std::move(both));
  }

  Frag alternatives(Nfa& nfa, const JsonValue* rest, const JsonValue& list, const std::string& ptr, Leaves& leaves, int depth) {
    if (!list.is_array() || list.items.empty()) fail(ptr, "anyOf/oneOf must be a non-empty array");
    std::vector<Frag> opts;
    for (size_t i = 0; i < list.items.size(); ++i)
      opts.push_back(value_frag(nfa, with_siblings(rest, &list.items[i]), ptr + "/" + std::to_string(i), leaves, depth + 1));
    return nfa.alt(opts);
  }

  Frag typed_frag(Nfa& nfa, const JsonValue& s, const std::string& ptr, Leaves& leaves) {
    std::vector<std::string> types;
    if (const JsonValue* t = s.get("type")) {
      if (!t->is_string() && !t->is_array()) fail(ptr + "/type", "type must be a string or an array");
      types = type_list(t);
      static const std::set<std::string> kKnown{"null", "boolean", "object", "array", "number", "integer", "string"};
      for (const auto& x : types)
        if (!kKnown.count(x)) fail(ptr + "/type", "unknown type '" + x + "'");
    } else {
      types = {"null", "boolean", "object", "array", "number", "string"};
    }
    bool has_number = std::find(types.begin(), types.end(), "number") != types.end();
    const JsonValue* en = s.get("enum");
    const JsonValue* cn = s.get("const");
    if (en || cn) {
      std::vector<const JsonValue*> values;
      if (en) {
        if (!en->is_array()) fail(ptr + "/enum", "enum must be an array");
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
      for (const JsonValue* v : values) {
        if (!literal_allowed(*v, s, types)) continue;
        leaves.alts.push_back(literal_frag(leaves.nfa, *v, 0));
      }
      return nfa.alt({});
    }
    std::vector<Frag> nonleaf;
    for (const auto& t : types) {
      if (t == "null") leaves.alts.push_back(leaves.nfa.literal("null"));
      else if (t == "boolean") leaves.alts.push_back(leaves.nfa.alt({leaves.nfa.literal("true"), leaves.nfa.literal("false")}));
      else if (t == "string") leaves.dfas.push_back(string_dfa(s, ptr));
      else if (t == "number") leaves.alts.push_back(number_frag(leaves.nfa, s, ptr, false));
      else if (t == "integer" && !has_number) leaves.alts.push_back(number_frag(leaves.nfa, s, ptr, true));
      else if (t == "object") nonleaf.push_back(object_frag(nfa, s, ptr));
      else if (t == "array") nonleaf.push_back(array_frag(nfa, s, ptr));
    }
    return nfa.alt(nonleaf);
  }

  // ---- literals (enum/const) ---------------------------------------------------------------------
  static std::string json_type_of(const JsonValue& v) {
    switch (v.kind) {
      case JsonValue::Kind::kNull: return "null";
      case JsonValue::Kind::kBool: return "boolean";
      case JsonValue::Kind::kNumber: return "number";
      case JsonValue::Kind::kString: return "string";
      case JsonValue::Kind::kArray: return "array";
      default: return "object";
    }
  }

  bool literal_allowed(const JsonValue& v, const JsonValue& s, const std::vector<std::string>& types) {
    std::string t = json_type_of(v);
    bool ok = false;
    for (const auto& x : types)
      if (x == t || (x == "integer" && v.is_integral()) || (x == "number" && t == "number")) ok = true;
    if (s.get("type") && !ok) return false;
    if (v.is_string()) {
      size_t n = decode_utf8(v.text).size();
      if (const JsonValue* m = s.get("minLength"); m && m->is_number() && static_cast<double>(n) < m->number) return false;
      if (const JsonValue* m = s.get("maxLength"); m && m->is_number() && static_cast<double>(n) > m->number) return false;
      if (const JsonValue* p = s.get("pattern"); p && p->is_string()) {
        Nfa tmp;
        Frag f = tmp.seq({tmp.literal("\""), compile_pattern(tmp, p->text), tmp.literal("\"")});
        std::string enc = "\"";
        for (uint32_t cp : decode_utf8(v.text)) {
          if (cp == '"' || cp == '\\') enc += '\\';
          if (cp < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", cp);
            enc += buf;
          } else {
            append_utf8(enc, cp);
          }
        }
        enc += "\"";
        if (!dfa_accepts(determinize(tmp, f, opts_.max_rule_states), enc)) return false;
      }
    }
    if (v.is_number()) {
      if (const JsonValue* m = s.get("minimum"); m && m->is_number() && v.number < m->number) return false;
      if (const JsonValue* m = s.get("maximum"); m && m->is_number() && v.number > m->number) return false;
    }
    return true;
  }

  static std::vector<std::string> number_texts(const JsonValue& v) {
    std::vector<std::string> out{v.text};
    if (v.is_integral() && std::fabs(v.number) < 9007199254740992.0) {
      char buf[64];
      snprintf(buf, sizeof buf, "%.0f", v.number);
      std::string n = buf;
      if (n == "-0") n = "0";
      out.push_back(n);
      out.push_back(n + ".0");
      if (v.number == 0) {
        out.push_back("-0");
        out.push_back("-0.0");
      }
    } else if (std::isfinite(v.number)) {
      for (int p = 1; p <= 17; ++p) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.*g", p, v.number);
        if (std::strtod(buf, nullptr) == v.number) {
          out.push_back(buf);
          break;
        }
      }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  Frag literal_frag(Nfa& nfa, const JsonValue& v, int depth) {
    if (depth > kMaxInlineDepth) throw CompileError("enum/const value nested too deeply");
    switch (v.kind) {
      case JsonValue::Kind::kNull: return nfa.literal("null");
      case JsonValue::Kind::kBool: return nfa.literal(v.boolean ? "true" : "false");
      case JsonValue::Kind::kNumber: {
        std::vector<Frag> alts;
        for (const auto& t : number_texts(v)) alts.push_back(nfa.literal(t));
        return nfa.alt(alts);
      }
      case JsonValue::Kind::kString: return json_string_literal(nfa, v.text);
      case JsonValue::Kind::kArray: {
        if (v.items.empty()) return nfa.seq({nfa.literal("["), ws(nfa), nfa.literal("]")});
        std::vector<Frag> parts{nfa.literal("["), ws(nfa)};
        for (size_t i = 0; i < v.items.size(); ++i) {
          if (i) parts.insert(parts.end(), {ws(nfa), nfa.literal(","), ws(nfa)});
          parts.push_back(literal_frag(nfa, v.items[i], depth + 1));
        }
        parts.insert(parts.end(), {ws(nfa), nfa.literal("]")});
        return nfa.seq(parts);
      }
      default: {
        if (v.members.empty()) return nfa.seq({nfa.literal("{"), ws(nfa), nfa.literal("}")});
        std::vector<Frag> parts{nfa.literal("{"), ws(nfa)};
        for (size_t i = 0; i < v.members.size(); ++i) {
          if (i) parts.insert(parts.end(), {ws(nfa), nfa.literal(","), ws(nfa)});
          parts.insert(parts.end(), {json_string_literal(nfa, v.members[i].first), ws(nfa), nfa.literal(":"), ws(nfa)});
          parts.push_back(literal_frag(nfa, v.members[i].second, depth + 1));
        }
        parts.insert(parts.end(), {ws(nfa), nfa.literal("}")});
        return nfa.seq(parts);
      }
    }
  }

  // ---- strings ------------------------------------------------------------------------------------
  static bool get_count(const JsonValue& s, const char* key, const std::string& ptr, int64_t& out) {
    const JsonValue* v = s.get(key);
    if (!v) return false;
    if (!v->is_number() || v->number < 0) throw CompileError(std::string(key) + " must be a non-negative number (at " + ptr + "/" + key + ")");
    out = v->number > 1e9 ? 1000000000 : static_cast<int64_t>(std::ceil(v->number));
    if (std::string(key).rfind("max", 0) == 0) out = static_cast<int64_t>(std::floor(v->number > 1e9 ? 1e9 : v->number));
    return true;
  }

  std::string format_regex(const std::string& fmt, const std::string& ptr) {
    // calendar-exact dates (years 0001-9999, Feb 29 only in leap years), no leap seconds
    static const std::string kYear = "(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})";
    static const std::string kLeap = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)";
    static const std::string kDate = "(" + kYear + "-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|" +
                                     kLeap + "-02-29)";
    static const std::string kTime =
        "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
    static const std::string kOctet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    static const std::string kLabel = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    if (fmt == "date") return kDate;
    if (fmt == "time") return kTime;
    if (fmt == "date-time") return kDate + "[Tt]" + kTime;
    if (fmt == "uuid") return "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
    if (fmt == "ipv4") return kOctet + "(\\." + kOctet + "){3}";
    if (fmt == "email")
      return "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@" + kLabel + "(\\." + kLabel + ")+";
    if (fmt == "hostname") return kLabel + "(\\." + kLabel + ")*";
    if (fmt == "uri") return "[A-Za-z][A-Za-z0-9+.-]*:([A-Za-z0-9\\-._~:/?#\\[\\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*";
    static const std::set<std::string> kUnsupported{
        "ipv6", "uri-reference", "iri", "iri-reference", "idn-email", "idn-hostname", "json-pointer",
        "relative-json-pointer", "regex", "uri-template", "duration"};
    if (kUnsupported.count(fmt)) fail(ptr + "/format", "unsupported format '" + fmt + "'");
    return "";  // unknown formats are annotations
  }

  // One JSON-encoded character of any code point, as a minimal DFA (built once per process).
  static const Dfa& any_char_dfa() {
    static const Dfa d = [] {
      Nfa n;
      Frag f = json_char(n, {{0, kMaxCodePoint}});
      return minimize(determinize(n, f, 1000));
    }();
    return d;
  }

  // The JSON-string language of string schema `s` (quotes included) as a DFA. Length bounds are
  // stamped out copy by copy (repeat_dfa), so maxLength costs O(maxLength) states and time.
  Dfa string_dfa(const JsonValue& s, const std::string& ptr) {
    int64_t mn = 0, mx = -1;
    bool has_min = get_count(s, "minLength", ptr, mn), has_max = get_count(s, "maxLength", ptr, mx);
    if (has_max && mx < mn) return Dfa{};
    std::vector<std::pair<std::string, bool>> regexes;  // (regex, anchored)
    if (const JsonValue* f = s.get("format"); f && f->is_string()) {
      std::string r = format_regex(f->text, ptr);
      if (!r.empty()) regexes.push_back({r, true});
    }
    if (const JsonValue* p = s.get("pattern")) {
      if (!p->is_string()) fail(ptr + "/pattern", "pattern must be a string");
      regexes.push_back({p->text, false});
    }
    if (has_max && mx > kMaxStringLength) mx = kMaxStringLength;
    if (mn > kMaxStringLength) fail(ptr + "/minLength", "minLength above " + std::to_string(kMaxStringLength) + " is not supported");
    bool lengths = (has_min && mn > 0) || has_max || regexes.empty();
    Dfa content;
    bool first = true;
    if (lengths) {
      if (!repeat_dfa(any_char_dfa(), static_cast<int>(mn), static_cast<int>(has_max ? mx : -1), opts_.max_rule_states, content))
        throw CompileError("internal: the JSON character automaton is not prefix-free");
      first = false;
    }
    for (const auto& [regex, anchored] : regexes) {
      Nfa tmp;
      Frag f = anchored ? compile_anchored_pattern(tmp, regex) : compile_pattern(tmp, regex);
      Dfa d = determinize(tmp, f, opts_.max_rule_states);
      if (d.states.size() <= kMaxMinimizeStates) d = minimize(d);
      content = first ? std::move(d) : intersect(content, d, false, opts_.max_rule_states);
      first = false;
    }
    if (content.states.empty()) return content;
    if (!quote_dfa(content)) throw CompileError("internal: a string content automaton reads a raw quote");
    return content;
  }

  // ---- numbers ------------------------------------------------------------------------------------
  struct Bound {
    bool present = false;
    bool exclusive = false;
    double value = 0;
    const JsonValue* src = nullptr;
  };

  void read_bounds(const JsonValue& s, const std::string& ptr, Bound& lo, Bound& hi) {
    auto num = [&](const char* k) -> const JsonValue* {
      const JsonValue* v = s.get(k);
      if (v && !v->is_number() && !v->is_bool()) fail(ptr + "/" + k, std::string(k) + " must be a number");
      return v;
    };
    const JsonValue* mn = num("minimum");
    const JsonValue* mx = num("maximum");
    const JsonValue* emn = num("exclusiveMinimum");
    const JsonValue* emx = num("exclusiveMaximum");
    if (mn && mn->is_number()) lo = {true, emn && emn->is_bool() && emn->boolean, mn->number, mn};
    if (emn && emn->is_number() && (!lo.present || emn->number >= lo.value)) lo = {true, true, emn->number, emn};
    if (mx && mx->is_number()) hi = {true, emx && emx->is_bool() && emx->boolean, mx->number, mx};
    if (emx && emx->is_number() && (!hi.present || emx->number <= hi.value)) hi = {true, true, emx->number, emx};
  }

  Frag frac_any(Nfa& n) { return n.opt(n.seq(n.literal("."), n.plus(n.byte_range('0', '9')))); }
  Frag frac_zero(Nfa& n) { return n.opt(n.seq(n.literal("."), n.plus(n.byte_range('0', '0')))); }
  Frag frac_nonzero(Nfa& n) {
    return n.seq({n.literal("."), n.star(n.byte_range('0', '9')), n.byte_range('1', '9'), n.star(n.byte_range('0', '9'))});
  }

  // Non-negative magnitudes m (decimal, no exponent) with L (<, <=) m (<, <=) H; bounds integral.
  Frag magnitude(Nfa& n, uint64_t L, bool lo_excl, bool has_hi, uint64_t H, bool hi_excl) {
    std::vector<Frag> alts;
    uint64_t a = lo_excl ? L + 1 : L;
    if (!has_hi) {
      alts.push_back(n.seq(decimal_range(n, a, 0, true), frac_any(n)));
    } else {
      if (H >= 1 && a <= H - 1) alts.push_back(n.seq(decimal_range(n, a, H - 1, false), frac_any(n)));
      if (!hi_excl && (lo_excl ? H > L : H >= L)) alts.push_back(n.seq(decimal_range(n, H, H, false), frac_zero(n)));
    }
    if (lo_excl && (!has_hi || H >= L + 1)) alts.push_back(n.seq(decimal_range(n, L, L, false), frac_nonzero(n)));
    return n.alt(alts);
  }

  Frag number_frag(Nfa& n, const JsonValue& s, const std::string& ptr, bool integer) {
    if (const JsonValue* m = s.get("multipleOf")) {
      if (!(integer && m->is_number() && m->number == 1)) fail(ptr + "/multipleOf", "unsupported JSON Schema keyword 'multipleOf'");
    }
    Bound lo, hi;
    read_bounds(s, ptr, lo, hi);
    if (!lo.present && !hi.present) {
      Frag intpart = n.alt({n.literal("0"), n.seq(n.byte_range('1', '9'), n.star(n.byte_range('0', '9')))});
      Frag f = n.seq(n.opt(n.literal("-")), intpart);
      if (integer) return f;
      Frag exp = n.seq({n.alt({n.literal("e"), n.literal("E")}), n.opt(n.alt({n.literal("+"), n.literal("-")})),
                        n.plus(n.byte_range('0', '9'))});
      return n.seq({f, frac_any(n), n.opt(exp)});
    }
    const double kLimit = static_cast<double>(kMaxBound);
    if (integer) {
      // integers in [ilo, ihi]; bounds beyond +-(10^18-1) are clamped inward (a subset)
      bool has_lo = lo.present, has_hi = hi.present;
      long double ilo = 0, ihi = 0;
      if (has_lo) ilo = lo.exclusive ? std::floor(static_cast<long double>(lo.value)) + 1 : std::ceil(static_cast<long double>(lo.value));
      if (has_hi) ihi = hi.exclusive ? std::ceil(static_cast<long double>(hi.value)) - 1 : std::floor(static_cast<long double>(hi.value));
      if (has_lo && ilo < -kLimit) ilo = -kLimit;
      if (has_hi && ihi > kLimit) ihi = kLimit;
      if (has_lo && ilo > kLimit) return n.alt({});
      if (has_hi && ihi < -kLimit) return n.alt({});
      if (has_lo && has_hi && ilo > ihi) return n.alt({});
      if (std::fabs(lo.value) < 9.007e15 || std::fabs(hi.value) < 9.007e15 || true) {
        // exactness: doubles hold integers exactly below 2^53; beyond that the clamp makes it a subset
      }
      std::vector<Frag> alts;
      // non-negative part [max(ilo,0), ihi]
      if (!has_hi || ihi >= 0) {
        uint64_t a = has_lo && ilo > 0 ? static_cast<uint64_t>(ilo) : 0;
        alts.push_back(decimal_range(n, a, has_hi ? static_cast<uint64_t>(ihi) : 0, !has_hi));
      }
      // negative part: -m, m in [max(1, -ihi), -ilo]
      if (!has_lo || ilo < 0) {
        uint64_t a = has_hi && ihi < -1 ? static_cast<uint64_t>(-ihi) : 1;
        alts.push_back(n.seq(n.literal("-"), decimal_range(n, a, has_lo ? static_cast<uint64_t>(-ilo) : 0, !has_lo)));
      }
      return n.alt(alts);
    }
    for (const Bound* b : {&lo, &hi})
      if (b->present && std::fabs(b->value) < kLimit && std::floor(b->value) != b->value)
        fail(ptr, "non-integer minimum/maximum on a number is not supported");
    // clamp inward
    Bound L = lo, H = hi;
    if (L.present && L.value < -kLimit) L.value = -kLimit, L.exclusive = false;
    if (H.present && H.value > kLimit) H.value = kLimit, H.exclusive = false;
    if (L.present && L.value > kLimit) return n.alt({});
    if (H.present && H.value < -kLimit) return n.alt({});
    std::vector<Frag> alts;
    // x >= 0 side: x in [max(L,0), H]
    if (!H.present || H.value > 0 || (H.value == 0 && !H.exclusive)) {
      bool lo_pos = L.present && L.value >= 0;
      uint64_t l = lo_pos ? static_cast<uint64_t>(L.value) : 0;
      alts.push_back(magnitude(n, l, lo_pos && L.exclusive, H.present, H.present ? static_cast<uint64_t>(H.value) : 0,
                               H.present && H.exclusive));
    }
    // x < 0 side: x = -m, m in (max(0, -H), -L]
    if (!L.present || L.value < 0) {
      bool from_h = H.present && H.value < 0;
      uint64_t ml = from_h ? static_cast<uint64_t>(-H.value) : 0;
      bool ml_excl = from_h ? H.exclusive : true;  // m > 0 (no "-0")
      alts.push_back(n.seq(n.literal("-"), magnitude(n, ml, ml_excl, L.present, L.present ? static_cast<uint64_t>(-L.value) : 0,
                                                     L.present && L.exclusive)));
    }
    return n.alt(alts);
  }

  // ---- objects --------------------------------------------------------------------------------------
  static Dfa union_of(const Dfa& a, const Dfa& b) {
    Nfa n;
    Frag f = n.alt({embed(n, a), embed(n, b)});
    return determinize(n, f, 1000000);
  }

  // Keys of additional properties: any string except the known names (and pattern keys).
  uint32_t additional_key_rule(const std::vector<std::string>& known, const Dfa* excluded_patterns) {
    std::string key;
    for (const auto& k : known) key += k + '\0';
    if (excluded_patterns) key += "\x01" + excluded_patterns->signature();
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
    if (da.states.empty()) da.states.emplace_back();  // no key possible: dead rule
    if (da.states.size() < 400) da = minimize(da);
    uint32_t id = builder_.terminal_rule(std::move(da), "#additional-key");
    addkey_cache_.emplace(key, id);
    return id;
  }

  Frag object_frag(Nfa& n, const JsonValue& s, const std::string& ptr) {
    struct Prop {
      std::string name;
      const JsonValue* schema;
      bool required;
    };
    std::vector<Prop> props;
    const JsonValue* pr = s.get("properties");
    if (pr && !pr->is_object()) fail(ptr + "/properties", "properties must be an object");
    std::vector<std::string> required;
    if (const JsonValue* r = s.get("required")) {
      if (!r->is_array()) fail(ptr + "/required", "required must be an array");
      for (const auto& x : r->items) {
        if (!x.is_string()) fail(ptr + "/required", "required must list strings");
        if (std::find(required.begin(), required.end(), x.text) == required.end()) required.push_back(x.text);
      }
    }
    if (pr) {
      for (const auto& m : pr->members) {
        bool dup = false;
        for (auto& p : props)
          if (p.name == m.first) {
            p.schema = &m.second;  // last one wins, as in Python's json
            dup = true;
          }
        if (!dup) props.push_back({m.first, &m.second, false});
      }
    }
    const JsonValue* addl = s.get("additionalProperties");
    if (!addl) addl = (opts_.strict && pr) ? own_bool(false) : &true_schema_;
    if (addl->is_object() && addl->members.empty()) addl = &true_schema_;
    bool addl_allowed = !(addl->is_bool() && !addl->boolean);
    for (const auto& r : required) {
      bool found = false;
      for (auto& p : props)
        if (p.name == r) p.required = found = true;
      if (!found) props.push_back({r, addl, true});
    }
    int64_t min_props = 0, max_props = -1;
    get_count(s, "minProperties", ptr, min_props);
    get_count(s, "maxProperties", ptr, max_props);
    if (min_props > static_cast<int64_t>(required.size()))
      fail(ptr + "/minProperties", "unsupported JSON Schema keyword 'minProperties' (more than the required properties)");
    if (max_props >= 0) {
      bool pattern_props = s.get("patternProperties") && s.get("patternProperties")->is_object() &&
                           !s.get("patternProperties")->members.empty();
      if (addl_allowed || pattern_props || static_cast<int64_t>(props.size()) > max_props) {
        if (max_props < static_cast<int64_t>(required.size())) return n.alt({});
        fail(ptr + "/maxProperties", "unsupported JSON Schema keyword 'maxProperties'");
      }
    }
    size_t np = props.size();
    std::vector<std::string> names;
    for (const auto& p : props) names.push_back(p.name);
    // patternProperties: disjoint key languages (excluding known names), each with its schema;
    // a known property whose name matches a pattern must satisfy both schemas.
    struct PatternKey {
      uint32_t key_rule;
      const JsonValue* schema;
      std::string ptr;
    };
    std::vector<PatternKey> pattern_keys;
    Dfa pattern_union;
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
        Frag f = a.seq({a.literal("\""), compile_pattern(a, m.first), a.literal("\"")});
        Dfa full = determinize(a, f, opts_.max_rule_states);
        for (auto& p : props) {
          std::string enc;
          Nfa t;
          Dfa lit = determinize(t, json_string_literal(t, p.name), opts_.max_rule_states);
          if (!intersect(full, lit, false, opts_.max_rule_states).states.empty()) {
            JsonValue* both = own(make_allof({p.schema, &m.second}));
            p.schema = both;
          }
        }
        Dfa d = names.empty() ? full : intersect(full, known, true, opts_.max_rule_states);
        for (const Dfa& other : langs)
          if (!intersect(d, other, false, opts_.max_rule_states).states.empty())
            fail(kp, "overlapping patternProperties patterns are not supported");
        pattern_union = langs.empty() ? d : union_of(pattern_union, d);
        langs.push_back(d);
        if (d.states.empty()) continue;
        Dfa dm = d.states.size() < 400 ? minimize(d) : d;
        pattern_keys.push_back({builder_.terminal_rule(std::move(dm), kp), &m.second, kp});
      }
    }

    int end = n.add_state();
    int open = n.add_state();
    Frag lb = n.literal("{");
    Frag w0 = ws(n);
    n.add_eps(lb.end, w0.start);
    n.add_eps(w0.end, open);
    // KA_j: key ws : ws value -> N_{j+1}
    std::vector<int> ka(np), after(np + 1);
    for (size_t j = 0; j <= np; ++j) after[j] = n.add_state();
    for (size_t j = 0; j < np; ++j) {
      std::string pp = ptr + "/properties/" + escape_pointer(props[j].name);
      Frag kv = n.seq({json_string_literal(n, props[j].name), ws(n), n.literal(":"), ws(n), n.call(rule_for(props[j].schema, pp))});
      ka[j] = kv.start;
      n.add_eps(kv.end, after[j + 1]);
    }
    // suffix_optional[i]: properties i.. are all optional
    std::vector<char> rest_optional(np + 1, 1);
    for (size_t i = np; i-- > 0;) rest_optional[i] = rest_optional[i + 1] && !props[i].required;
    // additional properties loop: ADD = addkey ws : ws value -> NA ; NA ws (',' ws ADD | '}')
    int add = -1;
    if (addl_allowed || !pattern_keys.empty()) {
      std::vector<Frag> kvs;
      if (addl_allowed)
        kvs.push_back(n.seq({n.call(additional_key_rule(names, pattern_keys.empty() ? nullptr : &pattern_union)), ws(n),
                             n.literal(":"), ws(n), n.call(rule_for(addl, ptr + "/additionalProperties"))}));
      for (const auto& pk : pattern_keys)
        kvs.push_back(n.seq({n.call(pk.key_rule), ws(n), n.literal(":"), ws(n), n.call(rule_for(pk.schema, pk.ptr))}));
      Frag kv = n.alt(kvs);
      add = kv.start;
      Frag w = ws(n);
      n.add_eps(kv.end, w.start);
      int na = w.end;
      Frag comma = n.seq(n.literal(","), ws(n));
      n.add_eps(na, comma.start);
      n.add_eps(comma.end, add);
      n.add_bytes(na, '}', '}', end);
    }
    auto targets_from = [&](int from, size_t i) {
      for (size_t j = i; j < np; ++j) {
        n.add_eps(from, ka[j]);
        if (props[j].required) break;
      }
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
        Frag comma = n.seq(n.literal(","), ws(n));
        n.add_eps(w.end, comma.start);
        targets_from(comma.end, i);
      }
    }
    return {lb.start, end};
  }

  // ---- arrays -----------------------------------------------------------------------------------------
  Frag array_frag(Nfa& n, const JsonValue& s, const std::string& ptr) {
    if (s.get("contains")) fail(ptr + "/contains", "unsupported JSON Schema keyword 'contains'");
    std::vector<const JsonValue*> prefix;
    const JsonValue* rest = &true_schema_;
    std::string rest_ptr = ptr + "/items";
    const JsonValue* items = s.get("items");
    const JsonValue* pfx = s.get("prefixItems");
    if (pfx) {
      if (!pfx->is_array()) fail(ptr + "/prefixItems", "prefixItems must be an array");
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
    get_count(s, "minItems", ptr, mn);
    get_count(s, "maxItems", ptr, mx);
    if (!rest_allowed) mx = mx < 0 ? static_cast<int64_t>(prefix.size()) : std::min<int64_t>(mx, static_cast<int64_t>(prefix.size()));
    if (mx >= 0 && mx < mn) return n.alt({});
    int64_t unroll = std::max<int64_t>(static_cast<int64_t>(prefix.size()), mn);
    if (mx >= 0) unroll = std::max<int64_t>(unroll, mx);
    if (unroll > kMaxArrayUnroll) fail(ptr, "minItems/maxItems above " + std::to_string(kMaxArrayUnroll) + " is not supported");
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
        Frag comma = n.seq(n.literal(","), ws(n));
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
  JsonValue root_;
  JsonValue true_schema_;
  std::deque<JsonValue> owned_;
  std::unordered_map<std::string, uint32_t> memo_;
  Dfa free_string_;  // "any JSON string", built on first use
  std::unordered_map<std::string, uint32_t> addkey_cache_;
  std::deque<Work> work_;
};

}  // namespace

Grammar json_schema_to_grammar(const std::string& schema_json, const SchemaOptions& options) {
  if (options.max_whitespace < 0 || options.max_whitespace > 1000) throw CompileError("max_whitespace must be in [0, 1000]");
  return Converter(schema_json, options).run();
}

}  // namespace toolken
