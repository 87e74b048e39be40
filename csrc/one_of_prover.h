// The oneOf disjointness prover.
//
// oneOf accepts an instance that matches exactly one branch. The grammar is a union of the
// branches, so it is exact only when no instance can match two branches. disjoint() proves
// that for a pair of schemas from a few sufficient conditions (different JSON types, disjoint
// const/enum values, each value of one invalid under the other (check_value: a three-valued
// validator of one concrete value), a property both must have (one requires it) whose schemas
// are disjoint, a property required by one and forbidden by the other, non-empty objects whose
// every key name has disjoint schemas in the two, non-overlapping numeric ranges, string
// languages with an empty DFA intersection, array length ranges or first items; alternatives
// are taken branch by branch, each with its sibling keywords); it answers false ("may
// overlap") whenever it cannot prove disjointness. Sound, not complete: a `true` is a proof, a
// `false` only means no proof was found (then check_one_of refuses the oneOf).
//
// narrow_one_of() makes more oneOfs exact where branches overlap only on values that every
// instance of the oneOf must avoid: a JSON type that two branches accept whole (e.g. every
// non-object matches two branches that only constrain objects) and the empty object, string
// and array where two branches accept them; it returns the sibling keywords with those values
// excluded (`type` narrowed, minProperties/minLength/minItems 1), which the prover then checks
// as before. Excluding a value that matches two branches is exact: oneOf rejects it anyway.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "json_schema_converter.h"
#include "leaf_languages.h"
#include "schema_normalizer.h"

namespace toolken {

class OneOfProver {
 public:
  OneOfProver(SchemaNormalizer& schemas, LeafLanguages& leaves, const SchemaOptions& o)
      : schemas_(schemas), leaves_(leaves), opts_(o) {}
  // True only when no JSON value can be valid under both `a` and `b`.
  bool disjoint(const JsonValue* a, const JsonValue* b, const std::string& ptr, int depth);
  // Throws unless the branches of oneOf `list` (each combined with the sibling keywords `rest`)
  // are pairwise disjoint, or the options accept overlapping branches.
  void check_one_of(const JsonValue* rest, const JsonValue& list, const std::string& ptr);
  // `rest` (the oneOf's sibling keywords) with the values excluded that match two or more
  // branches whole (see above); nullptr when no such value was found.
  const JsonValue* narrow_one_of(const JsonValue* rest, const JsonValue& list, const std::string& ptr);
  // True only when value `v` is surely invalid under schema `s` (check_value).
  bool value_invalid(const JsonValue& v, const JsonValue& s, const std::string& ptr);

 private:
  // JSON types as bits; integers and non-integral numbers apart.
  enum TypeBit : unsigned {
    kTNull = 1, kTBool = 2, kTObject = 4, kTArray = 8, kTString = 16, kTInteger = 32, kTFraction = 64, kTAll = 127
  };
  // The types `s` allows (ignoring its alternatives) and, when it has const/enum, its values.
  struct Shape {
    unsigned types = kTAll;
    bool finite = false;
    std::vector<const JsonValue*> values;
  };
  static unsigned type_bits_of_names(const std::vector<std::string>& names);
  static unsigned type_bit_of_value(const JsonValue& v);
  // Whether a `type` keyword is a known type name or an array of them.
  static bool known_type_names(const JsonValue& t);
  static bool json_equal(const JsonValue& a, const JsonValue& b);
  static Shape shape_of(const JsonValue& s);
  static std::vector<std::string> required_of(const JsonValue& s);
  const JsonValue* first_item_schema(const JsonValue& s);
  static int64_t count_of(const JsonValue& s, const char* key, int64_t dflt);
  // Three-valued validation of one concrete value: kUnknown where a keyword is not decided here
  // (format, multipleOf, dependencies, ...); kValid and kInvalid are exact.
  enum class Verdict { kValid, kInvalid, kUnknown };
  Verdict check_value(const JsonValue& v, const JsonValue* s, const std::string& ptr, int depth);
  Verdict check_object(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth);
  Verdict check_array(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth);
  Verdict check_leaf(const JsonValue& v, const JsonValue& s, const std::string& ptr);
  // The schemas a property `name` of an object instance must satisfy under `s` (its
  // `properties` entry, the patternProperties whose pattern matches it, else its
  // additionalProperties); where a pattern cannot be decided, the others (`partial` true).
  std::vector<const JsonValue*> property_schemas(const JsonValue& s, const std::string& name, bool* partial = nullptr);
  // The schema of the keys of `s` that no properties entry names (nullptr: patternProperties).
  const JsonValue* additional_schema(const JsonValue& s);
  bool some_pair_disjoint(const std::vector<const JsonValue*>& a, const std::vector<const JsonValue*>& b,
                          const std::string& ptr, int depth);
  // True only when no key name can be in an instance of both `a` and `b`.
  bool keys_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth);
  // The JSON type classes (TypeBit, integers and fractions as one class) that `branch` accepts
  // whole: every value of the class is valid under it.
  unsigned whole_types(const JsonValue* branch, const std::string& ptr);
  bool numbers_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr);
  bool objects_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth);
  bool arrays_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth);
  bool value_excluded(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth);
  SchemaNormalizer& schemas_;
  LeafLanguages& leaves_;
  SchemaOptions opts_;
  // disjoint/check_value calls left in this check_one_of (a bound on the work of nested
  // alternatives); at 0 the prover answers "may overlap" / kUnknown
  int64_t budget_ = 0;
  int64_t merges_ = 0;  // alternatives merged with their siblings left in this check_one_of
};

}  // namespace toolken
