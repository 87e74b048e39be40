// The oneOf disjointness prover.
//
// oneOf accepts an instance that matches exactly one branch. The grammar is a union of the
// branches, so it is exact only when no instance can match two branches. disjoint() proves
// that for a pair of schemas from a few sufficient conditions (different JSON types, disjoint
// const/enum values, a property both must have (one requires it) whose schemas are disjoint, a
// property required by one and forbidden by the other, non-overlapping numeric ranges, string
// languages with an empty DFA intersection, array length ranges or first items); it answers
// false ("may overlap") whenever it cannot prove disjointness. Sound, not complete: a `true`
// is a proof, a `false` only means no proof was found (then check_one_of refuses the oneOf).
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
  static bool json_equal(const JsonValue& a, const JsonValue& b);
  static Shape shape_of(const JsonValue& s);
  const JsonValue* property_schema(const JsonValue& s, const std::string& name);
  static std::vector<std::string> required_of(const JsonValue& s);
  const JsonValue* first_item_schema(const JsonValue& s);
  static int64_t count_of(const JsonValue& s, const char* key, int64_t dflt);
  bool numbers_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr);
  bool objects_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth);
  bool arrays_disjoint(const JsonValue& a, const JsonValue& b, const std::string& ptr, int depth);
  bool value_excluded(const JsonValue& v, const JsonValue& s, const std::string& ptr, int depth);
  SchemaNormalizer& schemas_;
  LeafLanguages& leaves_;
  SchemaOptions opts_;
};

}  // namespace toolken
