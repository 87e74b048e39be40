#include "one_of_prover.h"

#include <algorithm>
#include <climits>

namespace toolken {

unsigned OneOfProver::type_bits_of_names(const std::vector<std::string>& names) {
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

unsigned OneOfProver::type_bit_of_value(const JsonValue& v) {
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
bool OneOfProver::json_equal(const JsonValue& a, const JsonValue& b) {
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

OneOfProver::Shape OneOfProver::shape_of(const JsonValue& s) {
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
const JsonValue* OneOfProver::property_schema(const JsonValue& s, const std::string& name) {
  if (const JsonValue* pr = s.get("properties"); pr && pr->is_object())
    if (const JsonValue* p = pr->get(name)) return p;
  if (const JsonValue* pp = s.get("patternProperties"); pp && pp->is_object() && !pp->members.empty()) return nullptr;
  if (const JsonValue* a = s.get("additionalProperties")) return a;
  return (opts_.strict && s.get("properties")) ? schemas_.own_bool(false) : schemas_.true_schema();
}

std::vector<std::string> OneOfProver::required_of(const JsonValue& s) {
  std::vector<std::string> out;
  if (const JsonValue* r = s.get("required"); r && r->is_array())
    for (const auto& x : r->items)
      if (x.is_string()) out.push_back(x.text);
  return out;
}

// The schema the first item of an array instance must satisfy under `s`.
const JsonValue* OneOfProver::first_item_schema(const JsonValue& s) {
  if (const JsonValue* p = s.get("prefixItems"); p && p->is_array()) return p->items.empty() ? s.get("items") : &p->items[0];
  const JsonValue* it = s.get("items");
  if (it && it->is_array()) return it->items.empty() ? s.get("additionalItems") : &it->items[0];
  return it;
}

int64_t OneOfProver::count_of(const JsonValue& s, const char* key, int64_t dflt) {
  const JsonValue* v = s.get(key);
  return v && v->is_number() && v->number >= 0 ? static_cast<int64_t>(v->number > 1e15 ? 1e15 : v->number) : dflt;
}

bool OneOfProver::numbers_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr) {
  Bound alo, ahi, blo, bhi;
  LeafLanguages::read_bounds(a, ptr, alo, ahi);
  LeafLanguages::read_bounds(b, ptr, blo, bhi);
  auto below = [](const Bound& hi, const Bound& lo) {  // every value <= hi is < every value >= lo
    if (!hi.present || !lo.present) return false;
    return hi.value < lo.value || (hi.value == lo.value && (hi.exclusive || lo.exclusive));
  };
  return below(ahi, blo) || below(bhi, alo);
}

bool OneOfProver::objects_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth) {
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

bool OneOfProver::arrays_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth) {
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
bool OneOfProver::disjoint(const JsonValue* a, const JsonValue* b, const std::string& ptr, int depth) {
  if (depth > 16) return false;
  a = schemas_.resolved(a, ptr);
  b = schemas_.resolved(b, ptr);
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
      if (leaves_.strings_overlap(*a, *b, ptr)) return false;
    } catch (const CompileError&) {
      return false;  // too large to decide
    }
  }
  return true;
}

// True only when value `v` is surely invalid under schema `s` (see disjoint()).
bool OneOfProver::value_excluded(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth) {
  JsonValue* lit = schemas_.own(v);
  JsonValue one;
  one.kind = JsonValue::Kind::kObject;
  one.members.emplace_back("const", *lit);
  return disjoint(schemas_.own(std::move(one)), &s, ptr, depth);
}

// Throws unless the branches of oneOf `list` (each combined with the sibling keywords `rest`)
// are pairwise disjoint, or the options accept overlapping branches.
void OneOfProver::check_one_of(const JsonValue* rest, const JsonValue& list, const std::string& ptr) {
  if (opts_.one_of_any || !list.is_array()) return;
  std::vector<const JsonValue*> branches;
  for (const auto& item : list.items) branches.push_back(schemas_.with_siblings(rest, &item));
  for (size_t i = 0; i < branches.size(); ++i)
    for (size_t j = i + 1; j < branches.size(); ++j)
      if (!disjoint(branches[i], branches[j], ptr, 0))
        fail_at(ptr, "oneOf branches " + std::to_string(i) + " and " + std::to_string(j) +
                      " may overlap (a value matching both is invalid under oneOf, and the grammar cannot exclude it); "
                      "make the branches mutually exclusive (e.g. different types, or a required property with "
                      "distinct const/enum values) or compile with one_of=\"any\" to accept a value matching any branch");
}

}  // namespace toolken
