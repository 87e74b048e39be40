#include "leaf_languages.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>

#include "decimal_languages.h"
#include "json_encoding.h"
#include "regex.h"
#include "schema_normalizer.h"

namespace toolken {

Frag LeafLanguages::ws(Nfa& nfa) {
  // [ \t\n\r]* here; the matcher bounds the run length (Grammar::max_ws), which keeps one
  // DFA state per whitespace position instead of max_whitespace of them.
  if (!opts_.flexible_whitespace || opts_.max_whitespace <= 0) return nfa.empty();
  int s = nfa.add_state();
  nfa.add_bytes(s, '\t', '\n', s);
  nfa.add_bytes(s, '\r', '\r', s);
  nfa.add_bytes(s, ' ', ' ', s);
  return Frag{s, s};
}

Frag LeafLanguages::after_separator(Nfa& nfa) {
  if (opts_.canonical_separators) return nfa.literal(" ");  // json.dumps: ", " and ": "
  return ws(nfa);
}

std::string LeafLanguages::json_type_of(const JsonValue& v) {
  switch (v.kind) {
    case JsonValue::Kind::kNull: return "null";
    case JsonValue::Kind::kBool: return "boolean";
    case JsonValue::Kind::kNumber: return "number";
    case JsonValue::Kind::kString: return "string";
    case JsonValue::Kind::kArray: return "array";
    default: return "object";
  }
}

bool LeafLanguages::literal_allowed(const JsonValue& v, const JsonValue& s, const std::vector<std::string>& types) {
  std::string t = json_type_of(v);
  bool ok = false;
  for (const auto& x : types)
    if (x == t || (x == "integer" && v.is_integral()) || (x == "number" && t == "number")) ok = true;
  if (s.get("type") && !ok) return false;
  if (v.is_string()) {
    size_t n = decode_utf8(v.text).size();
    if (const JsonValue* m = s.get("minLength"); m && m->is_number() && static_cast<double>(n) < m->number) return false;
    if (const JsonValue* m = s.get("maxLength"); m && m->is_number() && static_cast<double>(n) > m->number) return false;
    const JsonValue* first = s.get("pattern");
    for (const std::string& pattern : first && !first->is_string() ? std::vector<std::string>{} : patterns_of(s, "#")) {
      Nfa tmp;
      Frag f = tmp.seq({tmp.literal("\""), compile_pattern(tmp, pattern), tmp.literal("\"")});
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

std::vector<std::string> LeafLanguages::number_texts(const JsonValue& v) {
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

Frag LeafLanguages::literal_frag(Nfa& nfa, const JsonValue& v, int depth) {
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
        if (i) parts.insert(parts.end(), {ws(nfa), nfa.literal(","), after_separator(nfa)});
        parts.push_back(literal_frag(nfa, v.items[i], depth + 1));
      }
      parts.insert(parts.end(), {ws(nfa), nfa.literal("]")});
      return nfa.seq(parts);
    }
    default: {
      if (v.members.empty()) return nfa.seq({nfa.literal("{"), ws(nfa), nfa.literal("}")});
      std::vector<Frag> parts{nfa.literal("{"), ws(nfa)};
      for (size_t i = 0; i < v.members.size(); ++i) {
        if (i) parts.insert(parts.end(), {ws(nfa), nfa.literal(","), after_separator(nfa)});
        parts.insert(parts.end(), {json_string_literal(nfa, v.members[i].first), ws(nfa), nfa.literal(":"), after_separator(nfa)});
        parts.push_back(literal_frag(nfa, v.members[i].second, depth + 1));
      }
      parts.insert(parts.end(), {ws(nfa), nfa.literal("}")});
      return nfa.seq(parts);
    }
  }
}

bool LeafLanguages::get_count(const JsonValue& s, const char* key, const std::string& ptr, int64_t& out) {
  const JsonValue* v = s.get(key);
  if (!v) return false;
  if (!v->is_number() || v->number < 0 || !v->is_integral())
    throw CompileError(std::string(key) + " must be a non-negative integer, not " + v->dump() + " (at " + ptr + "/" + key + ")");
  out = v->number > 1e9 ? 1000000000 : static_cast<int64_t>(std::ceil(v->number));
  if (std::string(key).rfind("max", 0) == 0) out = static_cast<int64_t>(std::floor(v->number > 1e9 ? 1e9 : v->number));
  return true;
}

std::string LeafLanguages::format_regex(const std::string& fmt, const std::string& ptr) {
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
  if (fmt == "ipv6") {
    // RFC 3986's IPv6address (what Python's ipaddress accepts; no zone id, which jsonschema refuses)
    const std::string h = "[0-9A-Fa-f]{1,4}", ls32 = "(" + h + ":" + h + "|" + kOctet + "(\\." + kOctet + "){3})";
    auto upto = [&](int n) { return n < 0 ? std::string() : "((" + h + ":){0," + std::to_string(n) + "}" + h + ")?"; };
    return "((" + h + ":){6}" + ls32 + "|::(" + h + ":){5}" + ls32 + "|" + upto(0) + "::(" + h + ":){4}" + ls32 + "|" +
           upto(1) + "::(" + h + ":){3}" + ls32 + "|" + upto(2) + "::(" + h + ":){2}" + ls32 + "|" + upto(3) + "::" + h +
           ":" + ls32 + "|" + upto(4) + "::" + ls32 + "|" + upto(5) + "::" + h + "|" + upto(6) + "::)";
  }
  if (fmt == "duration") {
    // RFC 3339 appendix A, upper-case designators (a subset: ABNF literals are case-insensitive)
    const std::string sec = "[0-9]+S", min = "[0-9]+M(" + sec + ")?", hour = "[0-9]+H(" + min + ")?";
    const std::string time = "T(" + hour + "|" + min + "|" + sec + ")";
    const std::string day = "[0-9]+D", month = "[0-9]+M(" + day + ")?", year = "[0-9]+Y(" + month + ")?";
    return "P((" + day + "|" + month + "|" + year + ")(" + time + ")?|" + time + "|[0-9]+W)";
  }
  if (fmt == "uri") return "[A-Za-z][A-Za-z0-9+.-]*:([A-Za-z0-9\\-._~:/?#\\[\\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*";
  static const std::set<std::string> kUnsupported{
      "uri-reference", "iri", "iri-reference", "idn-email", "idn-hostname", "json-pointer",
      "relative-json-pointer", "regex", "uri-template"};
  if (kUnsupported.count(fmt)) fail_at(ptr + "/format", "unsupported format '" + fmt + "'");
  return "";  // unknown formats are annotations
}


// One JSON-encoded character of any code point, as a minimal DFA (built once per process).
const Dfa& LeafLanguages::any_char_dfa() {
  static const Dfa d = [] {
    Nfa n;
    Frag f = json_char(n, {{0, kMaxCodePoint}});
    return minimize(determinize(n, f, 1000));
  }();
  return d;
}


std::vector<std::string> LeafLanguages::patterns_of(const JsonValue& s, const std::string& ptr) {
  std::vector<std::string> out;
  if (const JsonValue* p = s.get("pattern")) {
    if (!p->is_string()) fail_at(ptr + "/pattern", "pattern must be a string");
    out.push_back(p->text);
  }
  if (const JsonValue* more = s.get(kMorePatterns); more && more->is_array())
    for (const auto& x : more->items)
      if (x.is_string()) out.push_back(x.text);
  return out;
}

void LeafLanguages::get_lengths(const JsonValue& s, const std::string& ptr, uint64_t& min, uint64_t& max) {
  min = 0;
  max = kNoMaxLength;
  int64_t unused;
  for (const char* key : {"minLength", "maxLength"}) {
    if (!get_count(s, key, ptr, unused)) continue;  // validates: a non-negative integer
    const double v = s.get(key)->number;
    const uint64_t n = v >= static_cast<double>(kNoMaxLength) ? kNoMaxLength : static_cast<uint64_t>(v);
    (key[1] == 'i' ? min : max) = n;
  }
}

// Minimized pattern automata shared by every compile in the process (the same patterns and
// formats recur across schemas, as terminal masks recur across grammars: vocabulary.h). Keyed by
// the regex, its anchoring and the state limit; cleared whole when it holds too many states.
namespace {
class PatternCache {
 public:
  std::shared_ptr<const Dfa> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }
  void put(const std::string& key, std::shared_ptr<const Dfa> d) {
    std::lock_guard<std::mutex> lock(mu_);
    if (states_ + d->states.size() > kMaxStates) {
      map_.clear();
      states_ = 0;
    }
    if (map_.emplace(key, d).second) states_ += d->states.size();
  }

 private:
  static constexpr size_t kMaxStates = 200000;  // a few tens of MB at most
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Dfa>> map_;
  size_t states_ = 0;
};
PatternCache& pattern_cache() {
  static PatternCache* cache = new PatternCache;  // never destroyed: compiles may run at exit
  return *cache;
}
}  // namespace

bool LeafLanguages::string_content(const JsonValue& s, const std::string& ptr, Dfa& out) {
  std::vector<std::pair<std::string, bool>> regexes;  // (regex, anchored)
  if (const JsonValue* f = s.get("format"); f && f->is_string()) {
    std::string r = format_regex(f->text, ptr);
    if (!r.empty()) regexes.push_back({r, true});
  }
  for (std::string& p : patterns_of(s, ptr)) regexes.push_back({std::move(p), false});
  bool first = true;
  for (const auto& [regex, anchored] : regexes) {
    try {
      const std::string key = (anchored ? "^" : "~") + std::to_string(opts_.max_rule_states) + ":" + regex;
      std::shared_ptr<const Dfa> d = pattern_cache().find(key);
      if (!d) {
        Nfa tmp;
        Frag f = anchored ? compile_anchored_pattern(tmp, regex) : compile_pattern(tmp, regex);
        Dfa made = determinize(tmp, f, opts_.max_rule_states);
        if (made.states.size() <= kMaxMinimizeStates) made = minimize(made);
        d = std::make_shared<const Dfa>(std::move(made));
        pattern_cache().put(key, d);
      }
      out = first ? *d : intersect(out, *d, false, opts_.max_rule_states);
    } catch (const CompileError& e) {
      rethrow_at(e, ptr + (anchored ? "/format" : "/pattern"));
    }
    first = false;
  }
  return !first;
}

// '"' (content ∩ min..max characters) '"' with the length bounds stamped out copy by copy
// (repeat_dfa): O(max) states, for bounds up to max_unrolled_length.
Dfa LeafLanguages::unrolled_string(const Dfa* content, uint64_t min, uint64_t max) {
  Dfa d;
  if (min > 0 || max != kNoMaxLength || !content) {
    if (!repeat_dfa(any_char_dfa(), static_cast<int>(min), max == kNoMaxLength ? -1 : static_cast<int>(max), opts_.max_rule_states, d))
      throw CompileError("internal: the JSON character automaton is not prefix-free");
    if (content) d = intersect(d, *content, false, opts_.max_rule_states);
  } else {
    d = *content;
  }
  if (d.states.empty()) return d;
  if (!quote_dfa(d)) throw CompileError("internal: a string content automaton reads a raw quote");
  return d;
}

// The JSON-string language of string schema `s` (quotes included). Bounds up to
// max_unrolled_length are unrolled; above it the string is counted unless the bounds do not
// constrain its content (counted_strings.h).
LeafLanguages::StringLanguage LeafLanguages::string_language(const JsonValue& s, const std::string& ptr, int unroll_limit) {
  uint64_t mn, mx;
  get_lengths(s, ptr, mn, mx);
  StringLanguage out;
  if (mx < mn) return out;
  Dfa content;
  const bool has_content = string_content(s, ptr, content);
  const uint64_t lim = static_cast<uint64_t>(std::max(0, unroll_limit < 0 ? opts_.max_unrolled_length : unroll_limit));
  const bool small = mn <= lim && (mx == kNoMaxLength || mx <= lim);
  if (small) {
    try {
      out.dfa = unrolled_string(has_content ? &content : nullptr, mn, mx);
      return out;
    } catch (const CompileError& e) {
      // unrolled bounds times a large pattern: over the state limit; counted, it may fit
      if (!has_content || (mn == 0 && mx == kNoMaxLength)) throw;
      try {
        CountedKind kind = length_language(&content, mn, mx, opts_.max_rule_states, out.dfa, out.counter);
        out.counted = kind == CountedKind::kCounted;
        return out;
      } catch (const CompileError&) {
        rethrow_at(e, ptr + (s.get("pattern") ? "/pattern" : "/format"));
      }
    }
  }
  CountedKind kind;
  try {
    kind = length_language(has_content ? &content : nullptr, mn, mx, opts_.max_rule_states, out.dfa, out.counter);
  } catch (const CompileError& e) {
    rethrow_at(e, ptr + (mx != kNoMaxLength && mx > lim ? "/maxLength" : "/minLength"));
  }
  out.counted = kind == CountedKind::kCounted;
  return out;
}

Dfa LeafLanguages::string_dfa(const JsonValue& s, const std::string& ptr, const char* what) {
  // no counter here (keys are matched by their automaton): unroll further than string_language would
  const int unrolled = std::max(opts_.max_unrolled_length, kMaxDfaUnrolledLength);
  StringLanguage sl = string_language(s, ptr, unrolled);
  if (sl.counted) {
    const uint64_t lim = static_cast<uint64_t>(unrolled);
    const char* key = sl.counter.max != kNoMaxLength && sl.counter.max > lim ? "maxLength" : sl.counter.min > lim ? "minLength" : nullptr;
    if (key) fail_at(ptr + "/" + key, std::string(key) + " above " + std::to_string(lim) + " in " + what + " is not supported");
    fail_at(ptr + "/pattern", std::string("length bounds with this pattern exceed the state limit in ") + what);
  }
  return std::move(sl.dfa);
}

// A regex accepting at least what Python's `re` accepts for `p`, in toolken's syntax: outside
// classes `\d \w \s \D \W \S` also take non-ASCII characters, `.` also '\r' and U+2028/9, and
// `$` also comes after a final '\n' (toolken reads them narrower, regex.h). False when one of the
// class escapes is inside a class (not rewritten).
static bool python_superset(const std::string& p, std::string& out) {
  out.clear();
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[++i];
      if (std::string("dDwWsS").find(n) != std::string::npos) {
        if (in_class) return false;
        out += std::string("(?:\\") + n + "|[^\\x00-\\x7f])";
      } else {
        out += c;
        out += n;
      }
    } else if (in_class) {
      if (c == ']') in_class = false;
      out += c;
    } else if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is a member
    } else if (c == '.') {
      out += "(?:.|\\r|\\u2028|\\u2029)";
    } else if (c == '$') {
      out += "(?:\\n?$)";
    } else {
      out += c;
    }
  }
  return !in_class;
}

bool LeafLanguages::regexes_read_alike(const JsonValue& a, const JsonValue& b, const std::string& ptr) {
  static const Dfa safe = [] {  // encoded content of strings of ASCII characters other than \r \n
    Nfa n;
    return minimize(determinize(n, n.star(json_char(n, {{0, 9}, {11, 12}, {14, 127}})), 1000));
  }();
  for (int side = 0; side < 2; ++side) {
    const JsonValue& x = side ? b : a;
    const JsonValue& y = side ? a : b;
    const std::vector<std::string> patterns = patterns_of(x, ptr);
    if (patterns.empty()) continue;
    // x with each pattern widened to Python's reading: disjoint from y, or no proof
    JsonValue wide;
    wide.kind = JsonValue::Kind::kObject;
    for (const auto& m : x.members)
      if (m.first != "pattern" && m.first != kMorePatterns) wide.members.push_back(m);
    JsonValue more;
    more.kind = JsonValue::Kind::kArray;
    bool rewritten = true;
    for (size_t i = 0; i < patterns.size() && rewritten; ++i) {
      JsonValue w;
      w.kind = JsonValue::Kind::kString;
      rewritten = python_superset(patterns[i], w.text);
      if (i == 0) wide.members.emplace_back("pattern", std::move(w));
      else more.items.push_back(std::move(w));
    }
    if (!more.items.empty()) wide.members.emplace_back(kMorePatterns, std::move(more));
    if (rewritten) {
      if (strings_overlap(wide, y, ptr)) return false;
      continue;
    }
    // not rewritten: y must admit none of the characters the two readings differ on
    Dfa cy;
    if (!string_content(y, ptr, cy)) return false;  // y admits any characters
    if (!intersect(cy, safe, true, opts_.max_rule_states).states.empty()) return false;
  }
  return true;
}

bool LeafLanguages::strings_overlap(const JsonValue& a, const JsonValue& b, const std::string& ptr) {
  uint64_t amn, amx, bmn, bmx;
  get_lengths(a, ptr, amn, amx);
  get_lengths(b, ptr, bmn, bmx);
  const uint64_t mn = std::max(amn, bmn), mx = std::min(amx, bmx);
  if (mx < mn) return false;
  Dfa ca, cb;
  const bool ha = string_content(a, ptr, ca), hb = string_content(b, ptr, cb);
  const Dfa* c = nullptr;
  if (ha && hb) {
    ca = intersect(ca, cb, false, opts_.max_rule_states);
    c = &ca;
  } else if (ha || hb) {
    c = ha ? &ca : &cb;
  }
  const uint64_t lim = static_cast<uint64_t>(std::max(0, opts_.max_unrolled_length));
  if (mn <= lim && (mx == kNoMaxLength || mx <= lim)) return !unrolled_string(c, mn, mx).states.empty();
  Dfa plain;
  CountedString counter;
  return length_language(c, mn, mx, opts_.max_rule_states, plain, counter) != CountedKind::kEmpty;
}

void LeafLanguages::read_bounds(const JsonValue& s, const std::string& ptr, Bound& lo, Bound& hi) {
  auto num = [&](const char* k) -> const JsonValue* {
    const JsonValue* v = s.get(k);
    if (v && !v->is_number() && !v->is_bool()) fail_at(ptr + "/" + k, std::string(k) + " must be a number");
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

Frag LeafLanguages::frac_any(Nfa& n) { return n.opt(n.seq(n.literal("."), n.plus(n.byte_range('0', '9')))); }

Frag LeafLanguages::frac_zero(Nfa& n) { return n.opt(n.seq(n.literal("."), n.plus(n.byte_range('0', '0')))); }

Frag LeafLanguages::frac_nonzero(Nfa& n) {
  return n.seq({n.literal("."), n.star(n.byte_range('0', '9')), n.byte_range('1', '9'), n.star(n.byte_range('0', '9'))});
}


// Non-negative magnitudes m (decimal, no exponent) with L (<, <=) m (<, <=) H; bounds integral.
Frag LeafLanguages::magnitude(Nfa& n, uint64_t L, bool lo_excl, bool has_hi, uint64_t H, bool hi_excl) {
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

// Numbers between bounds of which one is not an integer: exact on the bounds' decimal text
// (decimal_languages.h); a bound beyond +-(10^18 - 1) is clamped inward.
Frag LeafLanguages::decimal_bounds(Nfa& n, const Bound& lo, const Bound& hi, const std::string& ptr) {
  Decimal d[2];
  bool excl[2] = {lo.exclusive, hi.exclusive};
  const Bound* b[2] = {&lo, &hi};
  bool present[2] = {lo.present, hi.present};
  for (int i = 0; i < 2; ++i) {
    if (!present[i]) continue;
    const std::string text = b[i]->src && b[i]->src->is_number() ? b[i]->src->text : std::string();
    if (parse_decimal(text, d[i])) continue;
    if (std::fabs(b[i]->value) < 1e18) fail_at(ptr, "numeric bound with more than " + std::to_string(kMaxFractionDigits) + " fraction digits is not supported");
    const bool outward = (i == 0) == (b[i]->value < 0);  // a lower bound far below, an upper bound far above
    if (!outward) return n.alt({});
    d[i] = Decimal{i == 0, kMaxBound, ""};
    excl[i] = false;
  }
  return decimal_between(n, present[0] ? &d[0] : nullptr, excl[0], present[1] ? &d[1] : nullptr, excl[1]);
}

Frag LeafLanguages::number_frag(Nfa& n, const JsonValue& s, const std::string& ptr, bool integer) {
  Decimal md;
  bool use_mult = false;
  if (const JsonValue* m = s.get("multipleOf")) {
    if (!m->is_number() || !parse_decimal(m->text, md) || md.neg || md.is_zero())
      fail_at(ptr + "/multipleOf", "multipleOf must be a positive number (at most 18 integer and " +
                                       std::to_string(kMaxFractionDigits) + " fraction digits)");
    use_mult = !(integer && md.ip == 1 && md.is_integer());
  }
  if (!use_mult) return number_base(n, s, ptr, integer, false);
  // multiples: the bounded language (without exponents) intersected with the remainder automaton
  Nfa t;
  Frag f = number_base(t, s, ptr, integer, true);
  Dfa d = determinize(t, f, opts_.max_rule_states);
  try {
    d = intersect(d, multiple_of_dfa(md, opts_.max_rule_states), false, opts_.max_rule_states);
  } catch (const CompileError& e) {
    fail_at(ptr + "/multipleOf", std::string("unsupported multipleOf: ") + e.what());
  }
  if (d.states.empty()) return n.alt({});
  return embed(n, d);
}

Frag LeafLanguages::number_base(Nfa& n, const JsonValue& s, const std::string& ptr, bool integer, bool no_exponent) {
  Bound lo, hi;
  read_bounds(s, ptr, lo, hi);
  if (!lo.present && !hi.present) {
    Frag intpart = n.alt({n.literal("0"), n.seq(n.byte_range('1', '9'), n.star(n.byte_range('0', '9')))});
    Frag f = n.seq(n.opt(n.literal("-")), intpart);
    if (integer) return f;
    if (no_exponent) return n.seq(f, frac_any(n));
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
  bool fractional = false;
  for (const Bound* b : {&lo, &hi})
    fractional = fractional || (b->present && std::fabs(b->value) < kLimit && std::floor(b->value) != b->value);
  if (fractional) return decimal_bounds(n, lo, hi, ptr);
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

}  // namespace toolken
