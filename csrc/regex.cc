#include "regex.h"

#include <memory>
#include <vector>

#include "json_value.h"

namespace toolken {
namespace {

struct Node {
  enum class Kind { kEmpty, kClass, kConcat, kAlt, kRepeat, kStart, kEnd };
  Kind kind = Kind::kEmpty;
  CpRanges cls;
  std::vector<std::unique_ptr<Node>> kids;
  int min = 0, max = 0;  // repeat; max < 0 = unbounded
};
using NodePtr = std::unique_ptr<Node>;

constexpr int kMaxRepeat = 1000;
constexpr int kMaxRegexDepth = 100;

const CpRanges kDigit{{'0', '9'}};
const CpRanges kWord{{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const CpRanges kSpace{{'\t', '\r'}, {' ', ' '}};
const CpRanges kAscii{{0, 0x7F}};

class RegexParser {
 public:
  explicit RegexParser(const std::string& pattern) : pattern_(pattern) {
    try {
      cps_ = decode_utf8(pattern);
    } catch (const JsonParseError&) {
      fail("invalid UTF-8");
    }
  }

  NodePtr parse() {
    NodePtr n = parse_alt(0);
    if (pos_ < cps_.size()) fail("unbalanced ')'");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& why) {
    throw CompileError("unsupported or invalid regex " + std::string("'") + pattern_ + "': " + why);
  }
  bool at_end() const { return pos_ >= cps_.size(); }
  uint32_t peek() const { return cps_[pos_]; }

  NodePtr parse_alt(int depth) {
    if (depth > kMaxRegexDepth) fail("nesting too deep");
    auto alt = std::make_unique<Node>();
    alt->kind = Node::Kind::kAlt;
    alt->kids.push_back(parse_concat(depth));
    while (!at_end() && peek() == '|') {
      ++pos_;
      alt->kids.push_back(parse_concat(depth));
    }
    if (alt->kids.size() == 1) return std::move(alt->kids[0]);
    return alt;
  }

  NodePtr parse_concat(int depth) {
    auto cat = std::make_unique<Node>();
    cat->kind = Node::Kind::kConcat;
    while (!at_end() && peek() != '|' && peek() != ')') {
      NodePtr atom = parse_atom(depth);
      atom = parse_quantifiers(std::move(atom));
      cat->kids.push_back(std::move(atom));
    }
    return cat;
  }

  bool parse_int(int& out) {
    size_t start = pos_;
    long v = 0;
    while (!at_end() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > 100000) v = 100000;
      ++pos_;
    }
    out = static_cast<int>(v);
    return pos_ > start;
  }

  NodePtr parse_quantifiers(NodePtr atom) {
    bool quantified = false;  // a second quantifier ("a**", "a{2}+") is an error, as in Python's re
    while (!at_end()) {
      uint32_t c = peek();
      int lo, hi;
      if (c == '*') {
        lo = 0, hi = -1, ++pos_;
      } else if (c == '+') {
        lo = 1, hi = -1, ++pos_;
      } else if (c == '?') {
        lo = 0, hi = 1, ++pos_;
      } else if (c == '{') {
        size_t save = pos_;
        ++pos_;
        if (!parse_int(lo)) {
          pos_ = save;
          return atom;  // literal '{' (handled by caller as atom next round)
        }
        if (!at_end() && peek() == ',') {
          ++pos_;
          if (!parse_int(hi)) hi = -1;
        } else {
          hi = lo;
        }
        if (at_end() || peek() != '}') {
          pos_ = save;
          return atom;
        }
        ++pos_;
        if (hi >= 0 && hi < lo) fail("bad repetition bounds");
      } else {
        return atom;
      }
      if (quantified) fail("multiple repeat (a quantifier after a quantifier)");
      quantified = true;
      if (lo > kMaxRepeat || hi > kMaxRepeat) fail("repetition count above " + std::to_string(kMaxRepeat));
      if (!at_end() && peek() == '?') ++pos_;            // lazy: same language
      else if (!at_end() && peek() == '+') fail("possessive quantifier");
      if (atom->kind == Node::Kind::kStart || atom->kind == Node::Kind::kEnd) fail("quantified anchor");
      auto rep = std::make_unique<Node>();
      rep->kind = Node::Kind::kRepeat;
      rep->min = lo;
      rep->max = hi;
      rep->kids.push_back(std::move(atom));
      atom = std::move(rep);
    }
    return atom;
  }

  NodePtr make_class(CpRanges r) {
    auto n = std::make_unique<Node>();
    n->kind = Node::Kind::kClass;
    n->cls = cp_normalize(std::move(r));
    return n;
  }

  uint32_t parse_hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      if (at_end()) fail("bad hex escape");
      uint32_t c = cps_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad hex escape");
    }
    return v;
  }

  // After a backslash: fills `set` and returns true for class escapes (\d...), or sets `cp`.
  bool parse_escape(uint32_t& cp, CpRanges& set, bool& ambiguous, bool in_class) {
    if (at_end()) fail("trailing backslash");
    uint32_t c = cps_[pos_++];
    switch (c) {
      case 'd': set = kDigit; ambiguous = true; return true;
      case 'w': set = kWord; ambiguous = true; return true;
      case 's': set = kSpace; ambiguous = true; return true;
      case 'D': set = cp_subtract(kAscii, kDigit); ambiguous = true; return true;
      case 'W': set = cp_subtract(kAscii, kWord); ambiguous = true; return true;
      case 'S': set = cp_subtract(kAscii, kSpace); ambiguous = true; return true;
      case 'n': cp = '\n'; return false;
      case 'r': cp = '\r'; return false;
      case 't': cp = '\t'; return false;
      case 'f': cp = '\f'; return false;
      case 'v': cp = '\v'; return false;
      case '0': cp = 0; return false;
      case 'x': cp = parse_hex(2); return false;
      case 'u': cp = parse_hex(4); return false;
      case 'b':
        if (in_class) {
          cp = 8;
          return false;
        }
        fail("word boundary \\b");
      default:
        break;
    }
    if (c >= '1' && c <= '9') fail("backreference");
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) fail(std::string("escape \\") + static_cast<char>(c));
    cp = c;  // escaped punctuation or other literal
    return false;
  }

  NodePtr parse_class() {
    // at '[' already consumed
    bool negate = false;
    if (!at_end() && peek() == '^') {
      negate = true;
      ++pos_;
    }
    CpRanges set;
    bool ambiguous = false, first = true;
    while (true) {
      if (at_end()) fail("unterminated character class");
      uint32_t c = cps_[pos_];
      if (c == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      ++pos_;
      uint32_t lo;
      if (c == '\\') {
        CpRanges esc;
        if (parse_escape(lo, esc, ambiguous, true)) {
          set.insert(set.end(), esc.begin(), esc.end());
          continue;
        }
      } else if (c == '[' && !at_end() && peek() == ':') {
        fail("POSIX class");
      } else {
        lo = c;
      }
      uint32_t hi = lo;
      if (pos_ + 1 < cps_.size() && peek() == '-' && cps_[pos_ + 1] != ']') {
        ++pos_;
        uint32_t d = cps_[pos_++];
        if (d == '\\') {
          CpRanges esc;
          if (parse_escape(hi, esc, ambiguous, true)) fail("class escape as range end");
        } else {
          hi = d;
        }
        if (hi < lo) fail("reversed range");
      }
      set.push_back({lo, hi});
    }
    set = cp_normalize(set);
    if (negate) set = ambiguous ? cp_subtract(kAscii, set) : cp_complement(set);
    return make_class(set);
  }

  NodePtr parse_atom(int depth) {
    uint32_t c = cps_[pos_++];
    switch (c) {
      case '(': {
        if (!at_end() && peek() == '?') {
          ++pos_;
          if (at_end()) fail("bad group");
          uint32_t k = cps_[pos_];
          if (k == ':') {
            ++pos_;
          } else if (k == 'P' || k == '<') {
            if (k == 'P') ++pos_;
            if (at_end() || peek() != '<') fail("bad group");
            ++pos_;
            if (!at_end() && (peek() == '=' || peek() == '!')) fail("lookbehind");
            while (!at_end() && peek() != '>') ++pos_;
            if (at_end()) fail("bad group name");
            ++pos_;
          } else if (k == '=' || k == '!') {
            fail("lookahead");
          } else {
            fail("inline flags or unsupported group");
          }
        }
        NodePtr inner = parse_alt(depth + 1);
        if (at_end() || peek() != ')') fail("missing ')'");
        ++pos_;
        return inner;
      }
      case '[':
        return parse_class();
      case '.':
        return make_class(cp_complement({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}));
      case '^': {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kStart;
        return n;
      }
      case '$': {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kEnd;
        return n;
      }
      case '\\': {
        uint32_t cp = 0;
        CpRanges set;
        bool amb = false;
        if (!at_end() && (peek() == 'A' || peek() == 'Z' || peek() == 'z')) {
          uint32_t k = cps_[pos_++];
          auto n = std::make_unique<Node>();
          n->kind = k == 'A' ? Node::Kind::kStart : Node::Kind::kEnd;
          return n;
        }
        if (parse_escape(cp, set, amb, false)) return make_class(set);
        return make_class({{cp, cp}});
      }
      case '*': case '+': case '?':
        fail("nothing to repeat");
      default:
        return make_class({{c, c}});
    }
  }

  const std::string& pattern_;
  std::vector<uint32_t> cps_;
  size_t pos_ = 0;
};

bool contains_anchor(const Node& n) {
  if (n.kind == Node::Kind::kStart || n.kind == Node::Kind::kEnd) return true;
  for (const auto& k : n.kids)
    if (contains_anchor(*k)) return true;
  return false;
}

// Anchors left inside a pattern are built as marker edges (call edges with these ids) in a
// scratch automaton, which anchored_product() then resolves.
constexpr uint32_t kStartMarker = 0xFFFFFFFEu, kEndMarker = 0xFFFFFFFFu;

Frag marker(Nfa& nfa, uint32_t id) {
  int a = nfa.add_state(), b = nfa.add_state();
  nfa.add_call(a, id, b);
  return {a, b};
}

Frag build(Nfa& nfa, const Node& n) {
  switch (n.kind) {
    case Node::Kind::kEmpty:
      return nfa.empty();
    case Node::Kind::kClass:
      return json_char(nfa, n.cls);
    case Node::Kind::kConcat: {
      std::vector<Frag> parts;
      for (const auto& k : n.kids) parts.push_back(build(nfa, *k));
      return nfa.seq(parts);
    }
    case Node::Kind::kAlt: {
      std::vector<Frag> parts;
      for (const auto& k : n.kids) parts.push_back(build(nfa, *k));
      return nfa.alt(parts);
    }
    case Node::Kind::kRepeat: {
      const Node& kid = *n.kids[0];
      return nfa.repeat([&]() { return build(nfa, kid); }, n.min, n.max);
    }
    case Node::Kind::kStart:
      return marker(nfa, kStartMarker);
    case Node::Kind::kEnd:
      return marker(nfa, kEndMarker);
    default:
      throw CompileError("regex anchor in an unsupported position");
  }
}

// Copies fragment `f` of `src`, whose marker edges stand for `^` and `$` anywhere in the pattern,
// into `out` without them: each state is paired with a phase, 0 (no byte read yet), 1 (bytes
// read) or 2 (after a `$`: no byte may follow). `^` passes only in phase 0, `$` moves to phase
// 2; a byte edge leads to phase 1 and is dropped in phase 2. So `^` holds only at the start of
// the whole string and `$` only at its end (the subset semantics of the header), wherever the
// anchors sit in the pattern: in groups, alternatives or repetitions.
Frag anchored_product(const Nfa& src, Frag f, Nfa& out) {
  std::vector<int> id(src.size() * 3, -1);
  std::vector<std::pair<int, int>> work;
  auto get = [&](int q, int phase) {
    int& slot = id[static_cast<size_t>(q) * 3 + phase];
    if (slot < 0) {
      slot = out.add_state();
      work.push_back({q, phase});
    }
    return slot;
  };
  const int start = get(f.start, 0), end = out.add_state();
  while (!work.empty()) {
    auto [q, phase] = work.back();
    work.pop_back();
    const int from = id[static_cast<size_t>(q) * 3 + phase];
    const Nfa::State& st = src.states()[q];
    if (q == f.end) out.add_eps(from, end);
    if (phase != 2)
      for (const ByteEdge& e : st.bytes) out.add_bytes(from, e.lo, e.hi, get(static_cast<int>(e.to), 1));
    for (int t : st.eps) out.add_eps(from, get(t, phase));
    for (const CallEdge& c : st.calls) {
      if (c.rule == kStartMarker && phase == 0) out.add_eps(from, get(static_cast<int>(c.to), 0));
      else if (c.rule == kEndMarker) out.add_eps(from, get(static_cast<int>(c.to), 2));
    }
  }
  return {start, end};
}

// Anchored at the start/end of one top-level alternative: strips ^ (leading) and $ (trailing),
// looking through single-alternative groups.
void strip_anchors(Node& alt, bool& start, bool& end) {
  Node* cat = &alt;
  if (cat->kind != Node::Kind::kConcat) return;
  auto& kids = cat->kids;
  while (!kids.empty() && kids.front()->kind == Node::Kind::kStart) {
    start = true;
    kids.erase(kids.begin());
  }
  while (!kids.empty() && kids.back()->kind == Node::Kind::kEnd) {
    end = true;
    kids.pop_back();
  }
  // ^(a|b)$ style: anchors inside a lone group alternative
  if (kids.size() == 1 && kids[0]->kind == Node::Kind::kAlt) {
    // every branch must agree; otherwise leave them for the error check
    bool all_start = true, all_end = true;
    for (auto& b : kids[0]->kids) {
      bool s = false, e = false;
      if (b->kind == Node::Kind::kConcat) {
        auto& bk = b->kids;
        s = !bk.empty() && bk.front()->kind == Node::Kind::kStart;
        e = !bk.empty() && bk.back()->kind == Node::Kind::kEnd;
      }
      all_start &= s;
      all_end &= e;
    }
    for (auto& b : kids[0]->kids) {
      if (b->kind != Node::Kind::kConcat) continue;
      auto& bk = b->kids;
      if (all_start && !bk.empty() && bk.front()->kind == Node::Kind::kStart) bk.erase(bk.begin());
      if (all_end && !bk.empty() && bk.back()->kind == Node::Kind::kEnd) bk.pop_back();
    }
    start |= all_start;
    end |= all_end;
  }
}

Frag compile(Nfa& nfa, const std::string& pattern, bool force_anchored) {
  NodePtr root = RegexParser(pattern).parse();
  std::vector<Node*> alts;
  if (root->kind == Node::Kind::kAlt) {
    for (auto& k : root->kids) alts.push_back(k.get());
  } else {
    alts.push_back(root.get());
  }
  const CpRanges kAny{{0, kMaxCodePoint}};
  // Alternatives with the same anchoring share one `.*` prefix/suffix: .*a.*|.*b.* == .*(a|b).*,
  // and the shared form determinizes to an Aho-Corasick-sized automaton instead of a product of
  // per-branch "already matched" flags.
  std::vector<Frag> groups[2][2];  // [anchored start][anchored end]
  for (Node* a : alts) {
    if (a->kind != Node::Kind::kConcat) {
      // wrap a lone atom so anchors can be stripped uniformly
      auto cat = std::make_unique<Node>();
      cat->kind = Node::Kind::kConcat;
      auto moved = std::make_unique<Node>(std::move(*a));
      cat->kids.push_back(std::move(moved));
      *a = std::move(*cat);
    }
    bool start = force_anchored, end = force_anchored;
    strip_anchors(*a, start, end);
    if (contains_anchor(*a)) {  // anchors inside: the alternative's search language through the product
      Nfa scratch;
      Frag body = build(scratch, *a);
      if (!start) body = scratch.seq(scratch.star(json_char(scratch, kAny)), body);
      if (!end) body = scratch.seq(body, scratch.star(json_char(scratch, kAny)));
      groups[1][1].push_back(anchored_product(scratch, body, nfa));
      continue;
    }
    groups[start][end].push_back(build(nfa, *a));
  }
  std::vector<Frag> options;
  for (int start = 0; start < 2; ++start)
    for (int end = 0; end < 2; ++end) {
      if (groups[start][end].empty()) continue;
      Frag body = groups[start][end].size() == 1 ? groups[start][end][0] : nfa.alt(groups[start][end]);
      if (!start) body = nfa.seq(nfa.star(json_char(nfa, kAny)), body);
      if (!end) body = nfa.seq(body, nfa.star(json_char(nfa, kAny)));
      options.push_back(body);
    }
  return options.size() == 1 ? options[0] : nfa.alt(options);
}

}  // namespace

Frag compile_pattern(Nfa& nfa, const std::string& pattern) { return compile(nfa, pattern, false); }
Frag compile_anchored_pattern(Nfa& nfa, const std::string& pattern) { return compile(nfa, pattern, true); }

}  // namespace toolken
