#include "schema_normalizer.h"

#include "leaf_languages.h"
#include "regex.h"

#include <algorithm>
#include <cstdlib>
#include <set>

namespace toolken {

namespace {

// A JSON array of strings (the merged "type" and "required" lists of allOf parts).
JsonValue string_array(const std::vector<std::string>& strings) {
  JsonValue out;
  out.kind = JsonValue::Kind::kArray;
  for (const auto& s : strings) {
    JsonValue x;
    x.kind = JsonValue::Kind::kString;
    x.text = s;
    out.items.push_back(std::move(x));
  }
  return out;
}
constexpr int kMaxFlattenDepth = 32;

}  // namespace

// The keywords that constrain instances (JSON Schema's validation and applicator keywords, and
// kMorePatterns). Any other member of a schema is an annotation: allOf merging keeps the first.
bool validation_keyword(const std::string& k) {
  static const std::unordered_set<std::string> kValidation{
      "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
      "maxLength", "minLength", "pattern", "format", "items", "prefixItems", "additionalItems", "contains",
      "minContains", "maxContains", "maxItems", "minItems", "uniqueItems", "properties", "patternProperties",
      "additionalProperties", "required", "maxProperties", "minProperties", "propertyNames", "dependentRequired",
      "dependentSchemas", "dependencies", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref",
      "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$recursiveRef", kMorePatterns};
  return kValidation.count(k) > 0;
}

bool pattern_matches(const std::string& pattern, const std::string& text) {
  Nfa a, b;
  const Dfa p = determinize(a, a.seq({a.literal("\""), compile_pattern(a, pattern), a.literal("\"")}), 1000000);
  const Dfa key = determinize(b, json_string_literal(b, text), 1000000);
  return !intersect(p, key, false, 1000000).states.empty();
}

namespace {

// Whether a key `name` of an instance of object schema `s` is matched by one of its
// patternProperties (then its additionalProperties does not apply to it).
bool matches_pattern_property(const JsonValue& s, const std::string& name, const std::string& ptr) {
  const JsonValue* pp = s.get("patternProperties");
  if (!pp || !pp->is_object()) return false;
  for (const auto& m : pp->members) {
    try {
      if (pattern_matches(m.first, name)) return true;
    } catch (const CompileError& e) {
      rethrow_at(e, ptr + "/patternProperties/" + escape_pointer(m.first));
    }
  }
  return false;
}

// Whether additionalProperties `a` (nullptr: absent) constrains nothing.
bool free_additional(const JsonValue* a) {
  return !a || (a->is_bool() && a->boolean) || (a->is_object() && a->members.empty());
}
}  // namespace

const std::unordered_set<std::string>& annotation_keywords() {
static const std::unordered_set<std::string> k{
    "title", "description", "default", "examples", "example", "$comment", "$schema", "$id", "id",
    "deprecated", "readOnly", "writeOnly", "contentEncoding", "contentMediaType", "contentSchema",
    "$vocabulary", "$anchor", "$dynamicAnchor", "discriminator", "nullable", "xml", "externalDocs",
    "$defs", "definitions"};
return k;
}

void fail_at(const std::string& ptr, const std::string& msg) { throw CompileError(msg + " (at " + ptr + ")"); }

void rethrow_at(const CompileError& e, const std::string& ptr) {
  const std::string what = e.what();
  if (what.find(" (at #") != std::string::npos) throw e;
  throw CompileError(what + " (at " + ptr + ")");
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

bool has_validation_siblings(const JsonValue& s, const char* except) {
  for (const auto& m : s.members)
    if (m.first != except && !annotation_keywords().count(m.first)) return true;
  return false;
}


std::vector<std::string> type_list(const JsonValue* t) {
  std::vector<std::string> out;
  if (!t) return out;
  if (t->is_string()) out.push_back(t->text);
  else if (t->is_array())
    for (const auto& i : t->items)
      if (i.is_string()) out.push_back(i.text);
  return out;
}

SchemaNormalizer::SchemaNormalizer(const std::string& text) {
  try {
    root_ = parse_json(text);
  } catch (const JsonParseError& e) {
    switch (e.kind) {
      case JsonParseError::Kind::kTooDeep:
        throw CompileError("schema nested too deeply: " + std::string(e.what()) + " (at " + e.pointer() + ")");
      case JsonParseError::Kind::kEncoding:
        throw CompileError("schema text is not valid Unicode: " + std::string(e.what()) + " (at " + e.pointer() + ")");
      default:
        throw CompileError(std::string("schema is not valid JSON: ") + e.what() + (e.path.empty() ? "" : " (at " + e.pointer() + ")"));
    }
  }
  true_schema_.kind = JsonValue::Kind::kObject;
}

JsonValue* SchemaNormalizer::own(JsonValue v) {
  owned_.push_back(std::move(v));
  return &owned_.back();
}

JsonValue* SchemaNormalizer::own_bool(bool b) {
  JsonValue v;
  v.kind = JsonValue::Kind::kBool;
  v.boolean = b;
  return own(std::move(v));
}

const JsonValue* SchemaNormalizer::resolve_ref(const JsonValue& ref, const std::string& ptr) {
  if (!ref.is_string()) fail_at(ptr, "$ref must be a string");
  const std::string& r = ref.text;
  if (r.empty() || r[0] != '#') fail_at(ptr, "unsupported $ref '" + r + "': only local references ('#/...') are supported");
  if (r == "#") return &root_;
  if (r.size() < 2 || r[1] != '/') fail_at(ptr, "unsupported $ref '" + r + "': anchors are not supported");
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
    if (!cur) fail_at(ptr, "$ref '" + r + "' does not resolve");
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  return cur;
}

// Follows pure-$ref chains ({"$ref": ...} plus annotations only).
const JsonValue* SchemaNormalizer::follow_refs(const JsonValue* s, std::string& ptr) {
  std::set<const JsonValue*> seen;
  while (s->is_object()) {
    const JsonValue* ref = s->get("$ref");
    if (!ref || has_validation_siblings(*s, "$ref")) break;
    if (!seen.insert(s).second) fail_at(ptr, "$ref cycle that never reaches a schema");
    s = resolve_ref(*ref, ptr);
    ptr = ref->text;
  }
  return s;
}

// Returns a schema without allOf and without $ref+siblings (may be a boolean or a pure $ref).
const JsonValue* SchemaNormalizer::flatten(const JsonValue* s, const std::string& ptr, int depth) {
  if (!s->is_object()) return s;
  const JsonValue* all = s->get("allOf");
  const JsonValue* ref = s->get("$ref");
  bool ref_with_siblings = ref && has_validation_siblings(*s, "$ref");
  if (!all && !ref_with_siblings) return s;
  if (depth > kMaxFlattenDepth) fail_at(ptr, "allOf/$ref nesting too deep (recursive allOf is not supported)");
  std::vector<const JsonValue*> parts;
  JsonValue rest;
  rest.kind = JsonValue::Kind::kObject;
  for (const auto& m : s->members)
    if (m.first != "allOf" && m.first != "$ref") rest.members.push_back(m);
  parts.push_back(own(std::move(rest)));
  if (all) {
    if (!all->is_array() || all->items.empty()) fail_at(ptr + "/allOf", "allOf must be a non-empty array");
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
    if (!q->is_object()) fail_at(pp, "schema must be an object or boolean");
    if (q->get("allOf") || (q->get("$ref") && has_validation_siblings(*q, "$ref"))) q = flatten(q, pp, depth + 1);
    if (q->is_bool()) {
      if (!q->boolean) return own_bool(false);
      continue;
    }
    flat.push_back(q);
  }
  return merge(flat, ptr);
}

// anyOf/oneOf of the parts: one oneOf is kept as it is; several anyOf lists are distributed
// (allOf(anyOf A, anyOf B) = anyOf of allOf(a, b) over the pairs), at most kMaxDistributed
// combinations; two different oneOfs stay an error (their exclusivity would have to be proved
// pair by pair).
void SchemaNormalizer::merge_alternatives(const std::vector<const JsonValue*>& parts, const std::string& ptr, JsonValue& out) {
  constexpr size_t kMaxDistributed = 64;
  std::vector<const JsonValue*> any_lists, one_lists;
  auto add = [](std::vector<const JsonValue*>& lists, const JsonValue* v) {
    for (const JsonValue* x : lists)
      if (x->dump() == v->dump()) return;  // the same list twice constrains once
    lists.push_back(v);
  };
  for (const JsonValue* p : parts) {
    if (const JsonValue* a = p->get("anyOf")) add(any_lists, a);
    if (const JsonValue* o = p->get("oneOf")) add(one_lists, o);
  }
  if (one_lists.size() > 1) fail_at(ptr, "allOf with several oneOf parts is not supported");
  if (!one_lists.empty()) out.members.emplace_back("oneOf", *one_lists[0]);
  if (any_lists.empty()) return;
  if (any_lists.size() == 1) {
    out.members.emplace_back("anyOf", *any_lists[0]);
    return;
  }
  std::vector<std::vector<const JsonValue*>> combos{{}};
  for (const JsonValue* list : any_lists) {
    if (!list->is_array() || list->items.empty()) fail_at(ptr + "/anyOf", "anyOf/oneOf must be a non-empty array");
    std::vector<std::vector<const JsonValue*>> next;
    for (const auto& c : combos)
      for (const auto& branch : list->items) {
        next.push_back(c);
        next.back().push_back(&branch);
      }
    if (next.size() > kMaxDistributed)
      fail_at(ptr, "allOf with several anyOf parts: more than " + std::to_string(kMaxDistributed) + " combinations");
    combos = std::move(next);
  }
  JsonValue arr;
  arr.kind = JsonValue::Kind::kArray;
  for (const auto& c : combos) arr.items.push_back(make_allof(c));
  out.members.emplace_back("anyOf", std::move(arr));
}

JsonValue SchemaNormalizer::make_allof(const std::vector<const JsonValue*>& list) {
  if (list.size() == 1) return *list[0];
  JsonValue v, arr;
  v.kind = JsonValue::Kind::kObject;
  arr.kind = JsonValue::Kind::kArray;
  for (const JsonValue* x : list) arr.items.push_back(*x);
  v.members.emplace_back("allOf", std::move(arr));
  return v;
}

const JsonValue* SchemaNormalizer::merge(const std::vector<const JsonValue*>& parts, const std::string& ptr) {
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
    out.members.emplace_back("type", string_array(types));
  }
  // required: union
  std::vector<std::string> required;
  for (const JsonValue* p : parts)
    if (const JsonValue* r = p->get("required"); r && r->is_array())
      for (const auto& x : r->items)
        if (x.is_string() && std::find(required.begin(), required.end(), x.text) == required.end()) required.push_back(x.text);
  if (!required.empty()) {
    out.members.emplace_back("required", string_array(required));
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
          if (!sub && !matches_pattern_property(*p, n, ptr)) sub = p->get("additionalProperties");
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
  merge_pattern_properties(parts, ptr, out);
  static const std::unordered_set<std::string> kHandled{"type", "required", "properties", "additionalProperties",
                                                        "allOf", "$ref", "anyOf", "oneOf", "patternProperties"};
  static const std::unordered_set<std::string> kMax{"minLength", "minItems", "minimum", "minProperties"};
  static const std::unordered_set<std::string> kMin{"maxLength", "maxItems", "maximum", "maxProperties"};
  for (const JsonValue* p : parts) {
    for (const auto& m : p->members) {
      const std::string& k = m.first;
      if (kHandled.count(k) || annotation_keywords().count(k) || !validation_keyword(k)) continue;
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
      } else if ((k == "items" || k == "propertyNames") && !cur->is_array() && !v.is_array()) {
        *cur = make_allof({cur, &v});
      } else if (k == "pattern" && cur->is_string() && v.is_string()) {
        JsonValue* more = find(kMorePatterns);
        if (!more) {
          JsonValue arr;
          arr.kind = JsonValue::Kind::kArray;
          out.members.emplace_back(kMorePatterns, std::move(arr));
          more = &out.members.back().second;
        }
        bool known = false;
        for (const auto& x : more->items) known |= x.text == v.text;
        if (!known) more->items.push_back(v);
      } else {
        fail_at(ptr, "cannot merge differing '" + k + "' keywords of allOf/$ref parts");
      }
    }
  }
  merge_alternatives(parts, ptr, out);
  return own(std::move(out));
}

// patternProperties of allOf parts, by pattern text: a pattern in several parts gets the allOf
// of their schemas. Exact while no part's additionalProperties meets another part's pattern:
// a part that constrains additional keys must list every pattern of the others (a key that
// only another part's pattern matches would be additional to it); otherwise a CompileError.
void SchemaNormalizer::merge_pattern_properties(const std::vector<const JsonValue*>& parts, const std::string& ptr,
                                                JsonValue& out) {
  std::vector<std::string> patterns;
  for (const JsonValue* p : parts) {
    const JsonValue* pp = p->get("patternProperties");
    if (!pp) continue;
    if (!pp->is_object()) fail_at(ptr + "/patternProperties", "patternProperties must be an object");
    for (const auto& m : pp->members)
      if (std::find(patterns.begin(), patterns.end(), m.first) == patterns.end()) patterns.push_back(m.first);
  }
  if (patterns.empty()) return;
  for (const JsonValue* p : parts) {
    if (free_additional(p->get("additionalProperties"))) continue;
    const JsonValue* own_patterns = p->get("patternProperties");
    for (const auto& pattern : patterns)
      if (!own_patterns || !own_patterns->is_object() || !own_patterns->get(pattern))
        fail_at(ptr, "allOf: the patternProperties '" + pattern +
                         "' of one part meet the additionalProperties of another (not supported)");
  }
  JsonValue merged;
  merged.kind = JsonValue::Kind::kObject;
  for (const auto& pattern : patterns) {
    std::vector<const JsonValue*> list;
    for (const JsonValue* p : parts)
      if (const JsonValue* pp = p->get("patternProperties"); pp && pp->is_object())
        if (const JsonValue* sub = pp->get(pattern)) list.push_back(sub);
    merged.members.emplace_back(pattern, make_allof(list));
  }
  out.members.emplace_back("patternProperties", std::move(merged));
}

// A schema with $ref chains, allOf and $ref-with-siblings resolved (a boolean or an object).
const JsonValue* SchemaNormalizer::resolved(const JsonValue* s, std::string ptr) {
  s = follow_refs(s, ptr);
  s = flatten(s, ptr, 0);
  return follow_refs(s, ptr);
}

// allOf(rest, branch) when `rest` has validation keywords, else `branch`.
const JsonValue* SchemaNormalizer::with_siblings(const JsonValue* rest, const JsonValue* branch) {
  if (!has_validation_siblings(*rest, "")) return branch;
  JsonValue both, arr;
  both.kind = JsonValue::Kind::kObject;
  arr.kind = JsonValue::Kind::kArray;
  arr.items.push_back(*rest);
  arr.items.push_back(*branch);
  both.members.emplace_back("allOf", std::move(arr));
  return own(std::move(both));
}

}  // namespace toolken
