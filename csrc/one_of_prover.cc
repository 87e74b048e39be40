#include "one_of_prover.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <tuple>
#include <unordered_set>

#include "regex.h"

namespace toolken {

namespace {
// disjoint()/check_value() calls per check_one_of or narrow_one_of, and merges of an
// alternative with its siblings (copies of both) per check_one_of
constexpr int64_t kBudget = 50000;
constexpr int64_t kMerges = 500;
}  // namespace

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

bool OneOfProver::known_type_names(const JsonValue& t) {
  static const std::unordered_set<std::string> kKnown{"null", "boolean", "object", "array", "string", "integer", "number"};
  if (t.is_string()) return kKnown.count(t.text) > 0;
  if (!t.is_array()) return false;
  for (const auto& x : t.items)
    if (!x.is_string() || !kKnown.count(x.text)) return false;
  return true;
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

namespace {
// Whether toolken's regexes decide `text` as Python's `re.search` does: they differ only on
// non-ASCII characters (`\d \w \s` are ASCII), '\r' (`.`) and '\n' (`.`, `$`) (regex.h).
bool regex_exact_on(const std::string& text) {
  for (unsigned char c : text)
    if (c >= 0x80 || c == '\r' || c == '\n') return false;
  return true;
}
}  // namespace

std::vector<const JsonValue*> OneOfProver::property_schemas(const JsonValue& s, const std::string& name, bool* partial) {
  std::vector<const JsonValue*> out;
  bool covered = false, undecided = false;
  if (const JsonValue* pr = s.get("properties"); pr && pr->is_object())
    if (const JsonValue* p = pr->get(name)) {
      out.push_back(p);
      covered = true;
    }
  if (const JsonValue* pp = s.get("patternProperties"); pp && pp->is_object())
    for (const auto& m : pp->members) {
      try {
        if (pattern_matches(m.first, name)) {
          out.push_back(&m.second);
          covered = true;
        } else if (!regex_exact_on(name)) {
          undecided = true;  // Python's `re` may match it where toolken's regex does not
        }
      } catch (const CompileError&) {
        undecided = true;  // whether it applies is not known: leave it (and additionalProperties) out
      }
    }
  if (!covered && !undecided) out.push_back(additional_schema(s));
  if (partial) *partial = undecided;
  return out;
}

const JsonValue* OneOfProver::additional_schema(const JsonValue& s) {
  if (const JsonValue* a = s.get("additionalProperties")) return a;
  return (opts_.strict && s.get("properties")) ? schemas_.own_bool(false) : schemas_.true_schema();
}

bool OneOfProver::some_pair_disjoint(const std::vector<const JsonValue*>& a, const std::vector<const JsonValue*>& b,
                                     const std::string& ptr, int depth) {
  for (const JsonValue* x : a)
    for (const JsonValue* y : b)
      if (disjoint(x, y, ptr, depth + 1)) return true;
  return false;
}

bool OneOfProver::keys_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth) {
  for (const JsonValue* x : {&a, &b})
    if (const JsonValue* pp = x->get("patternProperties"); pp && !(pp->is_object() && pp->members.empty())) return false;
  for (const JsonValue* x : {&a, &b})
    if (const JsonValue* pr = x->get("properties"); pr && pr->is_object())
      for (const auto& m : pr->members)
        if (!some_pair_disjoint(property_schemas(a, m.first), property_schemas(b, m.first), ptr, depth)) return false;
  // every other name: the two additionalProperties
  return disjoint(additional_schema(a), additional_schema(b), ptr, depth + 1);
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
      // an instance of both has `name` (x requires it), valid under every schema either gives it
      if (some_pair_disjoint(property_schemas(x, name), property_schemas(y, name), ptr, depth)) return true;
    }
  }
  int64_t amin = count_of(a, "minProperties", 0), amax = count_of(a, "maxProperties", INT64_MAX);
  int64_t bmin = count_of(b, "minProperties", 0), bmax = count_of(b, "maxProperties", INT64_MAX);
  if (amax < bmin || bmax < amin) return true;
  // an instance of both has a key (one needs one) that no instance of both can have
  const bool nonempty = std::max(amin, bmin) >= 1 || !required_of(a).empty() || !required_of(b).empty();
  return nonempty && keys_disjoint(a, b, ptr, depth);
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
  if (depth > 16 || --budget_ < 0) return false;
  try {
    a = schemas_.resolved(a, ptr);
    b = schemas_.resolved(b, ptr);
  } catch (const CompileError&) {
    return false;  // parts that cannot be merged: no proof
  }
  if (a->is_bool() || b->is_bool()) return (a->is_bool() && !a->boolean) || (b->is_bool() && !b->boolean);
  if (!a->is_object() || !b->is_object()) return false;
  // alternatives: a value of `a` is valid under its other keywords and matches one of its branches
  for (int side = 0; side < 2; ++side) {
    const JsonValue* x = side ? b : a;
    const JsonValue* other = side ? a : b;
    for (const char* key : {"anyOf", "oneOf"}) {
      const JsonValue* list = x->get(key);
      if (!list || !list->is_array() || list->items.empty()) continue;
      JsonValue rest;
      rest.kind = JsonValue::Kind::kObject;
      for (const auto& m : x->members)
        if (m.first != key) rest.members.push_back(m);
      const JsonValue* restp = schemas_.own(std::move(rest));
      if (has_validation_siblings(*restp, "") && disjoint(restp, other, ptr, depth + 1)) return true;
      for (const auto& branch : list->items) {
        // the branch with its siblings, or (merge budget spent, or parts that cannot be merged)
        // the branch alone: a larger set, still a sound premise
        const JsonValue* with = &branch;
        if (--merges_ >= 0) {
          with = schemas_.with_siblings(restp, &branch);
          try {
            schemas_.resolved(with, ptr);
          } catch (const CompileError&) {
            with = &branch;
          }
        }
        if (!disjoint(with, other, ptr, depth + 1)) return false;
      }
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
      if (leaves_.strings_overlap(*a, *b, ptr) || !leaves_.regexes_read_alike(*a, *b, ptr)) return false;
    } catch (const CompileError&) {
      return false;  // too large to decide
    }
  }
  return true;
}

// True only when value `v` is surely invalid under schema `s` (see disjoint()).
bool OneOfProver::value_excluded(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth) {
  return check_value(v, &s, ptr, depth) == Verdict::kInvalid;
}

bool OneOfProver::value_invalid(const JsonValue& v, const JsonValue& s, const std::string& ptr) {
  budget_ = kBudget;
  return check_value(v, &s, ptr, 0) == Verdict::kInvalid;
}

namespace {

// The type classes (OneOfProver's TypeBit values) a validation keyword constrains; any other
// keyword constrains every class.
unsigned keyword_classes(const std::string& k) {
  static const std::unordered_set<std::string> kString{"minLength", "maxLength", "pattern", "format", kMorePatterns};
  static const std::unordered_set<std::string> kNumber{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                                       "multipleOf"};
  static const std::unordered_set<std::string> kObject{
      "properties", "patternProperties", "additionalProperties", "required", "minProperties", "maxProperties",
      "propertyNames", "dependencies", "dependentRequired", "dependentSchemas", "unevaluatedProperties"};
  static const std::unordered_set<std::string> kArray{"items", "prefixItems", "additionalItems", "minItems", "maxItems",
                                                      "uniqueItems", "contains", "minContains", "maxContains",
                                                      "unevaluatedItems"};
  if (kString.count(k)) return 16;
  if (kNumber.count(k)) return 32 | 64;
  if (kObject.count(k)) return 4;
  if (kArray.count(k)) return 8;
  return 127;
}

// A non-negative count keyword's value; false when absent or not a number.
bool count_value(const JsonValue& s, const char* key, double& out) {
  const JsonValue* v = s.get(key);
  if (!v || !v->is_number()) return false;
  out = v->number;
  return true;
}

// Unique member names of object `v` (the last of duplicates wins, as JsonValue::get reads them).
std::vector<std::string> member_names(const JsonValue& v) {
  std::vector<std::string> names;
  for (const auto& m : v.members) names.push_back(m.first);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

// x < y, x > y, or neither (a tie of doubles that may hide different decimals) for a value and
// a bound; exact ties only between integers that doubles hold exactly.
int compare_numbers(double x, double y, bool& undecided) {
  if (x < y) return -1;
  if (x > y) return 1;
  const double kExact = 9007199254740992.0;  // 2^53
  if (!(std::fabs(x) < kExact && std::floor(x) == x)) undecided = true;
  return 0;
}

}  // namespace

OneOfProver::Verdict OneOfProver::check_value(const JsonValue& v, const JsonValue* s, const std::string& ptr, int depth) {
  if (depth > 32 || --budget_ < 0) return Verdict::kUnknown;
  try {
    s = schemas_.resolved(s, ptr);
  } catch (const CompileError&) {
    return Verdict::kUnknown;
  }
  if (s->is_bool()) return s->boolean ? Verdict::kValid : Verdict::kInvalid;
  if (!s->is_object()) return Verdict::kUnknown;
  static const std::unordered_set<std::string> kDecided{
      "type", "enum", "const", "minLength", "maxLength", "pattern", kMorePatterns, "minimum", "maximum",
      "exclusiveMinimum", "exclusiveMaximum", "properties", "patternProperties", "additionalProperties",
      "required", "minProperties", "maxProperties", "propertyNames", "items", "prefixItems", "additionalItems",
      "minItems", "maxItems", "uniqueItems", "anyOf", "oneOf", "not"};
  const unsigned cls = type_bit_of_value(v);
  bool unknown = false;
  auto invalid = [&](Verdict r) {
    if (r == Verdict::kUnknown) unknown = true;
    return r == Verdict::kInvalid;
  };
  for (const auto& m : s->members) {
    const std::string& k = m.first;
    if (!validation_keyword(k) || !(keyword_classes(k) & cls)) continue;  // annotations; keywords of other types
    if (!kDecided.count(k)) {
      unknown = true;
    } else if (k == "type") {
      if (!known_type_names(m.second)) return Verdict::kUnknown;
      if (!(type_bits_of_names(type_list(&m.second)) & cls)) return Verdict::kInvalid;
    } else if (k == "enum") {
      if (!m.second.is_array()) return Verdict::kUnknown;
      bool in = false;
      for (const auto& x : m.second.items) in = in || json_equal(v, x);
      if (!in) return Verdict::kInvalid;
    } else if (k == "const") {
      if (!json_equal(v, m.second)) return Verdict::kInvalid;
    } else if (k == "anyOf" || k == "oneOf") {
      if (!m.second.is_array() || m.second.items.empty()) return Verdict::kUnknown;
      int valid = 0, undecided = 0;
      for (const auto& b : m.second.items) {
        const Verdict r = check_value(v, &b, ptr, depth + 1);
        valid += r == Verdict::kValid;
        undecided += r == Verdict::kUnknown;
      }
      if (k == "anyOf" ? (valid == 0 && undecided == 0) : (valid >= 2 || (undecided == 0 && valid != 1)))
        return Verdict::kInvalid;
      if (k == "anyOf" ? valid == 0 : undecided > 0) unknown = true;
    } else if (k == "not") {
      const Verdict r = check_value(v, &m.second, ptr, depth + 1);
      if (r == Verdict::kValid) return Verdict::kInvalid;
      if (r == Verdict::kUnknown) unknown = true;
    }
  }
  // the keywords of v's own type, checked together
  if ((v.is_string() || v.is_number()) && invalid(check_leaf(v, *s, ptr))) return Verdict::kInvalid;
  if (v.is_object() && invalid(check_object(v, *s, ptr, depth))) return Verdict::kInvalid;
  if (v.is_array() && invalid(check_array(v, *s, ptr, depth))) return Verdict::kInvalid;
  return unknown ? Verdict::kUnknown : Verdict::kValid;
}

OneOfProver::Verdict OneOfProver::check_leaf(const JsonValue& v, const JsonValue& s, const std::string& ptr) {
  bool unknown = false;
  double n;
  try {
    if (v.is_string()) {
      const double len = static_cast<double>(decode_utf8(v.text).size());
      if (count_value(s, "minLength", n) && len < n) return Verdict::kInvalid;
      if (count_value(s, "maxLength", n) && len > n) return Verdict::kInvalid;
      for (const std::string& pattern : LeafLanguages::patterns_of(s, ptr))
        if (!pattern_matches(pattern, v.text)) {
          if (!regex_exact_on(v.text)) return Verdict::kUnknown;
          return Verdict::kInvalid;
        }
    } else {
      Bound lo, hi;
      LeafLanguages::read_bounds(s, ptr, lo, hi);
      if (lo.present) {
        const int c = compare_numbers(v.number, lo.value, unknown);
        if (c < 0 || (c == 0 && lo.exclusive && !unknown)) return Verdict::kInvalid;
      }
      if (hi.present) {
        const int c = compare_numbers(v.number, hi.value, unknown);
        if (c > 0 || (c == 0 && hi.exclusive && !unknown)) return Verdict::kInvalid;
      }
    }
  } catch (const CompileError&) {
    return Verdict::kUnknown;  // a pattern not supported, a malformed keyword
  }
  for (const char* k : {"minLength", "maxLength"})
    if (v.is_string() && s.get(k) && !s.get(k)->is_number()) unknown = true;
  return unknown ? Verdict::kUnknown : Verdict::kValid;
}

OneOfProver::Verdict OneOfProver::check_object(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth) {
  bool unknown = false;
  auto invalid = [&](Verdict r) {
    if (r == Verdict::kUnknown) unknown = true;
    return r == Verdict::kInvalid;
  };
  const std::vector<std::string> names = member_names(v);
  if (const JsonValue* r = s.get("required"); r && r->is_array())
    for (const auto& x : r->items) {
      if (!x.is_string()) unknown = true;
      else if (!v.get(x.text)) return Verdict::kInvalid;
    }
  double n;
  if (count_value(s, "minProperties", n) && static_cast<double>(names.size()) < n) return Verdict::kInvalid;
  if (count_value(s, "maxProperties", n) && static_cast<double>(names.size()) > n) return Verdict::kInvalid;
  const bool keyed = s.get("properties") || s.get("patternProperties") || s.get("additionalProperties");
  for (const std::string& name : names) {
    if (keyed) {
      bool partial = false;
      for (const JsonValue* sub : property_schemas(s, name, &partial))
        if (invalid(check_value(*v.get(name), sub, ptr, depth + 1))) return Verdict::kInvalid;
      if (partial) unknown = true;
    }
    if (const JsonValue* pn = s.get("propertyNames")) {
      JsonValue key;
      key.kind = JsonValue::Kind::kString;
      key.text = name;
      if (invalid(check_value(key, pn, ptr, depth + 1))) return Verdict::kInvalid;
    }
  }
  return unknown ? Verdict::kUnknown : Verdict::kValid;
}

OneOfProver::Verdict OneOfProver::check_array(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth) {
  bool unknown = false;
  auto invalid = [&](Verdict r) {
    if (r == Verdict::kUnknown) unknown = true;
    return r == Verdict::kInvalid;
  };
  double n;
  const double size = static_cast<double>(v.items.size());
  if (count_value(s, "minItems", n) && size < n) return Verdict::kInvalid;
  if (count_value(s, "maxItems", n) && size > n) return Verdict::kInvalid;
  // the schema of each item: prefixItems then items (2020-12), or items as a tuple then
  // additionalItems (draft 4-2019), or items for all
  const JsonValue* prefix = s.get("prefixItems");
  const JsonValue* items = s.get("items");
  const JsonValue* tuple = prefix && prefix->is_array() ? prefix : (items && items->is_array() ? items : nullptr);
  const JsonValue* tail = tuple == prefix && prefix ? items : (tuple ? s.get("additionalItems") : items);
  for (size_t i = 0; i < v.items.size(); ++i) {
    const JsonValue* sub = tuple && i < tuple->items.size() ? &tuple->items[i] : tail;
    if (sub && invalid(check_value(v.items[i], sub, ptr, depth + 1))) return Verdict::kInvalid;
  }
  if (const JsonValue* u = s.get("uniqueItems"); u && u->is_bool() && u->boolean)
    for (size_t i = 0; i < v.items.size(); ++i)
      for (size_t j = i + 1; j < v.items.size(); ++j)
        if (json_equal(v.items[i], v.items[j])) return Verdict::kInvalid;
  return unknown ? Verdict::kUnknown : Verdict::kValid;
}

unsigned OneOfProver::whole_types(const JsonValue* branch, const std::string& ptr) {
  const JsonValue* s;
  try {
    s = schemas_.resolved(branch, ptr);
  } catch (const CompileError&) {
    return 0;
  }
  if (s->is_bool()) return s->boolean ? kTAll : 0;
  if (!s->is_object()) return 0;
  unsigned whole = kTAll;
  for (const auto& m : s->members) {
    if (!validation_keyword(m.first)) continue;
    if (m.first == "type") {
      if (!known_type_names(m.second)) return 0;
      whole &= type_bits_of_names(type_list(&m.second));
    } else {
      whole &= ~keyword_classes(m.first);
    }
  }
  if (!(whole & kTFraction)) whole &= ~kTInteger;  // numbers count as one class: integers alone are not whole
  return whole;
}

const JsonValue* OneOfProver::narrow_one_of(const JsonValue* rest, const JsonValue& list, const std::string& ptr) {
  if (!list.is_array() || list.items.size() < 2) return nullptr;
  budget_ = kBudget;
  unsigned once = 0, twice = 0;
  for (const auto& item : list.items) {
    const unsigned w = whole_types(&item, ptr);
    twice |= once & w;
    once |= w;
  }
  JsonValue out = *rest;
  auto set = [&](const char* key, JsonValue value) {
    for (auto& m : out.members)
      if (m.first == key) {
        m.second = std::move(value);
        return;
      }
    out.members.emplace_back(key, std::move(value));
  };
  unsigned allowed = kTAll;
  if (const JsonValue* t = rest->get("type")) {
    if (!known_type_names(*t)) return nullptr;
    allowed = type_bits_of_names(type_list(t));
  }
  bool changed = false;
  if (allowed & twice) {
    allowed &= ~twice;
    JsonValue types;
    types.kind = JsonValue::Kind::kArray;
    const std::pair<unsigned, const char*> kNames[] = {{kTNull, "null"},     {kTBool, "boolean"}, {kTObject, "object"},
                                                       {kTArray, "array"},   {kTString, "string"}};
    for (const auto& [bit, name] : kNames)
      if (allowed & bit) types.items.push_back(JsonValue{JsonValue::Kind::kString, false, 0, name, {}, {}});
    if (allowed & kTInteger)
      types.items.push_back(JsonValue{JsonValue::Kind::kString, false, 0, allowed & kTFraction ? "number" : "integer", {}, {}});
    set("type", std::move(types));
    changed = true;
  }
  // the empty object, string and array, where two branches accept them
  JsonValue empty_object, empty_string, empty_array;
  empty_object.kind = JsonValue::Kind::kObject;
  empty_string.kind = JsonValue::Kind::kString;
  empty_array.kind = JsonValue::Kind::kArray;
  const std::tuple<unsigned, const char*, const JsonValue*> kEmpty[] = {
      {kTObject, "minProperties", &empty_object}, {kTString, "minLength", &empty_string}, {kTArray, "minItems", &empty_array}};
  for (const auto& [bit, key, value] : kEmpty) {
    if (!(allowed & bit)) continue;
    if (const JsonValue* m = rest->get(key); m && (!m->is_number() || m->number >= 1)) continue;
    int matched = 0;
    for (const auto& item : list.items) matched += check_value(*value, &item, ptr, 0) == Verdict::kValid;
    if (matched < 2) continue;
    set(key, JsonValue{JsonValue::Kind::kNumber, false, 1, "1", {}, {}});
    changed = true;
  }
  return changed ? schemas_.own(std::move(out)) : nullptr;
}

// Throws unless the branches of oneOf `list` (each combined with the sibling keywords `rest`)
// are pairwise disjoint, or the options accept overlapping branches.
void OneOfProver::check_one_of(const JsonValue* rest, const JsonValue& list, const std::string& ptr) {
  if (opts_.one_of_any || !list.is_array()) return;
  budget_ = kBudget;
  merges_ = kMerges;
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
