#include "compiled_grammar.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string_view>

#include "json_schema_converter.h"
#include "stepper.h"

namespace toolken {

namespace {
constexpr size_t kMaxClassStates = 1 << 17;  // larger rules: every node walks the whole trie
constexpr size_t kMaxCountMasks = 4096;       // cached count masks per grammar

// Sets token t's bit; returns 1 if it was not set yet.
size_t add_token(std::vector<uint64_t>& acc, int32_t t) {
  uint64_t bit = uint64_t(1) << (t & 63);
  if (acc[t >> 6] & bit) return 0;
  acc[t >> 6] |= bit;
  return 1;
}

// The rule was left after d bytes at trie node i: every token of i's subtree either ends there
// (accepted: the caller continues) or has a suffix to check against the caller at run time.
// The tokens newly accepted are also appended to `ids` when given.
size_t record_exit(const Vocabulary& v, size_t i, size_t d, std::vector<uint64_t>& acc,
                   std::vector<std::pair<int32_t, uint32_t>>& uncertain, std::vector<int32_t>* ids = nullptr) {
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  size_t added = 0;
  for (size_t j = i; j < trie[i].skip; ++j)
    for (uint32_t k = trie[j].tok_begin; k < trie[j].tok_end; ++k) {
      if (trie[j].depth != d) uncertain.push_back({ttok[k], static_cast<uint32_t>(d)});
      else if (add_token(acc, ttok[k])) {
        ++added;
        if (ids) ids->push_back(ttok[k]);
      }
    }
  return added;
}

// Token suffixes (token, bytes to skip) grouped by suffix text, sorted, de-duplicated.
std::shared_ptr<Suffixes> group_suffixes(const Vocabulary& v, const std::vector<std::pair<int32_t, uint32_t>>& list) {
  std::map<std::string, std::vector<int32_t>> groups;
  for (const auto& [t, k] : list) groups[v.token(t).substr(k)].push_back(t);
  auto sx = std::make_shared<Suffixes>();
  for (auto& [s, toks] : groups) {
    std::sort(toks.begin(), toks.end());
    toks.erase(std::unique(toks.begin(), toks.end()), toks.end());
    sx->data += s;
    sx->off.push_back(static_cast<uint32_t>(sx->data.size()));
    sx->toks.insert(sx->toks.end(), toks.begin(), toks.end());
    sx->tok_off.push_back(static_cast<uint32_t>(sx->toks.size()));
  }
  return sx;
}

// Calls walk(begin, end) for the trie range of each root child whose byte one of node n's edges
// takes (edges are sorted and disjoint: byte order): a walk from a node with few first bytes (a
// key, a literal) then touches only their subtrees instead of every root child (each a cache
// miss: they lie a whole subtree apart). A root child of another byte leads nowhere.
template <class F>
void for_first_bytes(const Vocabulary& v, const Grammar& g, uint32_t n, F&& walk) {
  for (uint32_t e = g.byte_begin[n], end = g.byte_begin[n + 1]; e < end; ++e)
    for (uint32_t b = g.byte_edges[e].lo; b <= g.byte_edges[e].hi; ++b)
      if (const uint32_t c = v.root_child(static_cast<uint8_t>(b))) walk(static_cast<size_t>(c), static_cast<size_t>(v.trie()[c].skip));
}

// {"type": "string"}: its node masks (kept in the vocabulary's shared cache) are the reference
// that string-like rules of every grammar derive theirs from.
const Grammar& canonical_string_grammar() {
  static const Grammar g = [] {
    SchemaOptions o;
    o.flexible_whitespace = false;
    return json_schema_to_grammar("{\"type\":\"string\"}", o);
  }();
  return g;
}
}  // namespace

CompiledGrammar::CompiledGrammar(Grammar g, std::shared_ptr<Vocabulary> vocab, bool canonical)
    : grammar_(std::move(g)), vocab_(std::move(vocab)), is_canonical_(canonical) {
  own_ = std::make_unique<MaskSlots>(grammar_.num_nodes());
  classes_.resize(grammar_.rules.size());
  classes_once_.reset(new std::once_flag[grammar_.rules.size()]);
  for (const auto& r : grammar_.rules) {
    MaskSlots* s = nullptr;
    if (r.terminal) s = vocab_->terminal_slots(r.signature, r.num_nodes);
    slots_of_rule_.push_back(s);
  }
}

const NodeMask* CompiledGrammar::node_mask(uint32_t n) const {
  uint32_t r = grammar_.node_rule[n];
  MaskSlots* shared = slots_of_rule_[r];
  size_t idx = shared ? n - grammar_.rules[r].first_node : n;
  MaskSlots* slots = shared ? shared : own_.get();
  const NodeMask* m = slots->get(idx);
  if (m) return m;
  return slots->publish(idx, compute(n));
}

size_t CompiledGrammar::memory_bytes() const {
  size_t b = sizeof(*this) + grammar_.memory_bytes() + own_->memory_bytes() + classes_memory_.load() + count_memory_.load();
  // masks this grammar uses from the vocabulary's shared cache (also counted by other grammars
  // that share them), including the canonical string rule's
  std::vector<const MaskSlots*> shared;
  for (const MaskSlots* s : slots_of_rule_)
    if (s && std::find(shared.begin(), shared.end(), s) == shared.end()) shared.push_back(s);
  for (const MaskSlots* s : shared) b += s->memory_bytes();
  if (const CompiledGrammar* c = canonical()) b += c->memory_bytes();
  return b;
}

// Terminal rules are call-free DFAs: one node per depth, no frames (the common, hot case:
// string bodies, numbers, literals).
std::unique_ptr<NodeMask> CompiledGrammar::compute_terminal(uint32_t n) const {
  const Vocabulary& v = *vocab_;
  const Grammar& g = grammar_;
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  std::vector<uint32_t> node(v.max_depth() + 2), ws(v.max_depth() + 2);
  node[0] = n;
  ws[0] = 0;
  std::vector<uint64_t> acc(v.words64(), 0);
  size_t n_acc = 0;
  std::vector<std::pair<int32_t, uint32_t>> uncertain;
  auto accept = [&](int32_t t) { n_acc += add_token(acc, t); };
  for_first_bytes(v, g, n, [&](size_t i, size_t end) {
    while (i < end) {
      const auto& tn = trie[i];
      size_t d = tn.depth;
      uint32_t cur = node[d - 1];
      int64_t nx = g.next(cur, tn.byte);
      if (nx < 0) {
        i = tn.skip;
        continue;
      }
      uint32_t w = 0;
      if (g.max_ws && g.is_ws_loop[nx] && Grammar::is_json_ws(tn.byte)) {
        w = (nx == cur ? ws[d - 1] : 0) + 1;
        if (w > g.max_ws) {
          i = tn.skip;
          continue;
        }
      }
      node[d] = static_cast<uint32_t>(nx);
      ws[d] = w;
      if (g.is_final[nx]) n_acc += record_exit(v, i, d, acc, uncertain);
      if (!g.has_bytes(nx)) {
        i = tn.skip;
        continue;
      }
      for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) accept(ttok[k]);
      ++i;
    }
  });
  return finish(acc, n_acc, uncertain);
}

// The mask from node n of a counted rule with `count` characters read: node_mask(n) (the outcome
// with the count far from both bounds) minus the tokens that a bound now rejects. A counted rule
// is a DFA, so a token's path is the same at every count and the count can only remove it: the
// trie walk takes a byte only while the state stays live (Stepper::enter) and removes the
// subtree where it does not, and skips every subtree that cannot reach a bound (count >= min, or
// no '"' below when only the closing quote checks min; and count + the subtree's height + the
// longest shortest completion <= max): liveness there is the same as far from the bounds. So a
// count mask costs the few tokens long enough to reach a bound, not a walk of the whole trie
// (which made the first mask at each count cost ~8 ms on Llama-3's vocabulary).
std::unique_ptr<NodeMask> CompiledGrammar::compute_counted(uint32_t n, uint64_t count) const {
  const Vocabulary& v = *vocab_;
  const Grammar& g = grammar_;
  const CountedString& c = *g.counter_of(n);
  const uint32_t first = g.rules[g.node_rule[n]].first_node;
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  const auto& height = v.trie_height();
  const auto& quote_below = v.trie_quote_below();
  std::vector<uint32_t> node(v.max_depth() + 2);
  std::vector<uint64_t> cnt(v.max_depth() + 2);
  node[0] = n;
  cnt[0] = count;
  std::vector<uint64_t> removed(v.words64(), 0);
  bool any = false;
  size_t i = 1;
  while (i < trie.size()) {
    const auto& tn = trie[i];
    const size_t d = tn.depth;
    const int64_t nx = g.next(node[d - 1], tn.byte);
    if (nx < 0) {  // rejected at every count
      i = tn.skip;
      continue;
    }
    const uint32_t s = static_cast<uint32_t>(nx) - first;
    uint64_t k = cnt[d - 1] + c.completes[s];
    if (c.max == kNoMaxLength && k > c.min) k = c.min;
    if (!c.live(s, k)) {
      for (size_t j = i; j < tn.skip; ++j)
        for (uint32_t t = trie[j].tok_begin; t < trie[j].tok_end; ++t) add_token(removed, ttok[t]);
      any = true;
      i = tn.skip;
      continue;
    }
    // left the rule (the caller's part does not depend on the count), or no byte can follow, or
    // no token below reaches a bound (below minLength: none can close the string, when only the
    // closing quote checks it)
    const bool above_min = k >= c.min || (c.min_at_quote_only && !quote_below[i]);
    const bool safe = above_min && (c.max == kNoMaxLength || k + height[i] + c.max_lo <= c.max);
    if (g.is_final[nx] || !g.has_bytes(nx) || safe) {
      i = tn.skip;
      continue;
    }
    node[d] = static_cast<uint32_t>(nx);
    cnt[d] = k;
    ++i;
  }
  if (!any) return nullptr;
  const NodeMask& base = *node_mask(n);
  std::vector<uint64_t> acc(v.words64(), 0);
  if (base.dense) acc = base.bits;
  else
    for (int32_t t : base.ids) add_token(acc, t);
  size_t n_acc = 0;
  for (size_t w = 0; w < acc.size(); ++w) n_acc += __builtin_popcountll(acc[w] &= ~removed[w]);
  auto m = NodeMask::from_bits(std::move(acc), n_acc, v.size());
  m->recheck = base.recheck;
  m->suffixes = base.suffixes;
  m->owns_suffixes = false;
  auto is_removed = [&](int32_t t) { return ((removed[t >> 6] >> (t & 63)) & 1) != 0; };
  const Suffixes* bs = base.suffixes.get();
  if (bs && std::any_of(bs->toks.begin(), bs->toks.end(), is_removed)) {
    // the same sorted suffixes without the removed tokens
    auto sx = std::make_shared<Suffixes>();
    for (size_t si = 0; si < bs->size(); ++si) {
      const size_t before = sx->toks.size();
      for (uint32_t k = bs->tok_off[si]; k < bs->tok_off[si + 1]; ++k)
        if (!is_removed(bs->toks[k])) sx->toks.push_back(bs->toks[k]);
      if (sx->toks.size() == before) continue;
      sx->data.append(bs->data, bs->off[si], bs->off[si + 1] - bs->off[si]);
      sx->off.push_back(static_cast<uint32_t>(sx->data.size()));
      sx->tok_off.push_back(static_cast<uint32_t>(sx->toks.size()));
    }
    m->suffixes = std::move(sx);
    m->owns_suffixes = true;
  }
  return m;
}

const NodeMask* CompiledGrammar::count_mask(uint32_t n, uint64_t count, std::unique_ptr<NodeMask>& hold) const {
  const CountedString* c = grammar_.counter_of(n);
  if (!c) return nullptr;
  // a token completes at most one character per byte
  const uint64_t reach = vocab_->max_depth();
  if (count >= c->min && (c->max == kNoMaxLength || count + reach + c->max_lo <= c->max)) return nullptr;
  // far below min, a state is live by its residue of the count modulo the period alone, or
  // whatever the count when the bounds' window holds a whole period (counted_strings.h)
  uint64_t key = count;
  if (count + reach + c->zone_from <= c->min) key = c->full_window || c->period == 0 ? 0 : count % c->period;
  {
    std::lock_guard<std::mutex> lock(count_mu_);
    auto it = count_masks_.find({n, key});
    if (it != count_masks_.end()) return it->second.get();
  }
  std::unique_ptr<NodeMask> m = compute_counted(n, key);  // null: node_mask(n) is exact
  std::lock_guard<std::mutex> lock(count_mu_);
  auto it = count_masks_.find({n, key});
  if (it != count_masks_.end()) return it->second.get();
  if (count_masks_.size() >= kMaxCountMasks) {
    hold = std::move(m);
    return hold.get();
  }
  if (m) count_memory_ += m->memory_bytes();
  return count_masks_.emplace(std::make_pair(n, key), std::move(m)).first->second.get();
}

const CompiledGrammar* CompiledGrammar::canonical() const {
  if (is_canonical_) return nullptr;
  std::call_once(canon_once_, [&]() { canon_.reset(new CompiledGrammar(canonical_string_grammar(), vocab_, true)); });
  return canon_.get();
}

// Classes of rule r's states (see build_rule_classes), computed on the rule's first mask.
const RuleClasses& CompiledGrammar::classes_of(uint32_t r) const {
  std::call_once(classes_once_[r], [&]() {
    auto rc = std::make_unique<RuleClasses>();
    const Grammar& g = grammar_;
    const uint32_t first = g.rules[r].first_node, num = g.rules[r].num_nodes;
    // worth it when walking the trie costs more than refining the rule's states (real
    // vocabularies: always; a tiny test vocabulary with a huge rule: walk instead)
    bool ok = num > 1 && num <= kMaxClassStates && num < 4 * vocab_->trie().size();
    for (uint32_t s = 0; ok && s < num; ++s) ok = !g.is_ws_loop[first + s];  // ws counts depend on node identity
    if (ok) {
      const CompiledGrammar* canon = canonical();
      const Grammar* cg = canon && canon->grammar().rules[canon->grammar().root_rule].terminal ? &canon->grammar() : nullptr;
      build_rule_classes(g, r, cg, *rc);
    }
    classes_memory_ += rc->memory_bytes();
    classes_[r] = std::move(rc);
  });
  return *classes_[r];
}


// The mask of terminal node n derived from that of `rep`, an equivalent-looking node of the same
// rule: walk the trie from both nodes at once and skip every subtree whose outcomes must be the
// same from both (same node, states that agree up to the subtree's height (on its quote-free
// strings when it has no '"'), or both rejecting its first byte, after the same rule exits), so
// that only the tokens whose outcome may differ are computed. Bounded strings
// (one DFA state per position) and key strings that exclude known names are the cases that
// need it: their states differ only on the few tokens that reach the bound or the name.
// (Idea: llguidance computes masks by a trie walk that prunes subtrees; xgrammar shares masks
// between grammar positions; the pairing with a reference node is toolken's.)
std::unique_ptr<NodeMask> CompiledGrammar::compute_derived(uint32_t n, const CompiledGrammar* ref, uint32_t rep,
                                                           const RuleClasses& rc) const {
  const NodeMask* base = ref->node_mask(rep);
  const Vocabulary& v = *vocab_;
  const Grammar& g = grammar_;
  const Grammar& gb = ref->grammar_;
  const bool same_grammar = ref == this;
  const uint32_t bfirst = gb.rules[gb.node_rule[rep]].first_node, boff = same_grammar ? 0 : rc.num_own;
  const auto& trie = v.trie();
  const auto& height = v.trie_height();
  const auto& quote_below = v.trie_quote_below();
  const auto& ttok = v.trie_tokens();
  const uint32_t first = g.rules[g.node_rule[n]].first_node;
  constexpr uint32_t kNone = 0xFFFFFFFFu;
  std::vector<uint32_t> a(v.max_depth() + 2), b(v.max_depth() + 2);
  std::vector<char> same(v.max_depth() + 2);
  std::vector<uint32_t> exits;  // depths at which n's walk left the rule, on the current path
  std::vector<uint64_t> expl(v.words64(), 0);  // tokens whose outcome is computed here
  std::vector<int32_t> accepted;
  std::vector<std::pair<int32_t, uint32_t>> uncertain;
  auto cut = [&](size_t i) {  // n cannot go on below i: outcomes from the exits on the path
    for (size_t j = i; j < trie[i].skip; ++j)
      for (uint32_t k = trie[j].tok_begin; k < trie[j].tok_end; ++k) {
        int32_t t = ttok[k];
        expl[t >> 6] |= uint64_t(1) << (t & 63);
        for (uint32_t e : exits) {
          if (e == trie[j].depth) accepted.push_back(t);
          else uncertain.push_back({t, e});
        }
      }
  };
  a[0] = n;
  b[0] = rep;
  same[0] = 1;
  size_t i = 1;
  while (i < trie.size()) {
    const auto& tn = trie[i];
    const size_t d = tn.depth;
    while (!exits.empty() && exits.back() >= d) exits.pop_back();
    int64_t na = g.next(a[d - 1], tn.byte);
    int64_t nb = b[d - 1] == kNone ? -1 : gb.next(b[d - 1], tn.byte);
    if (na < 0) {
      // the reference rejects the subtree too, after the same path: its outcomes hold
      if (!(same[d - 1] && nb < 0)) cut(i);
      i = tn.skip;
      continue;
    }
    if (same[d - 1] && nb >= 0 &&
        ((same_grammar && na == nb) ||
         rc.equivalent(static_cast<uint32_t>(na - first), static_cast<uint32_t>(nb - bfirst + boff), height[i], !quote_below[i]))) {
      i = tn.skip;  // the reference's outcomes hold for the whole subtree
      continue;
    }
    const bool fa = g.is_final[na], fb = nb >= 0 && gb.is_final[nb];
    a[d] = static_cast<uint32_t>(na);
    b[d] = nb >= 0 ? static_cast<uint32_t>(nb) : kNone;
    same[d] = same[d - 1] && nb >= 0 && fa == fb;
    if (fa) exits.push_back(static_cast<uint32_t>(d));
    if (!g.has_bytes(na)) {
      cut(i);
      i = tn.skip;
      continue;
    }
    for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) {
      int32_t t = ttok[k];
      expl[t >> 6] |= uint64_t(1) << (t & 63);
      accepted.push_back(t);
    }
    ++i;
  }
  // accepted: the reference's outside the explicit tokens, plus n's own
  std::vector<uint64_t> acc(v.words64(), 0);
  if (base->dense) acc = base->bits;
  else
    for (int32_t t : base->ids) acc[t >> 6] |= uint64_t(1) << (t & 63);
  size_t n_acc = 0;
  for (size_t w = 0; w < acc.size(); ++w) {
    acc[w] &= ~expl[w];
  }
  for (int32_t t : accepted) acc[t >> 6] |= uint64_t(1) << (t & 63);
  for (uint64_t w : acc) n_acc += __builtin_popcountll(w);
  auto m = NodeMask::from_bits(std::move(acc), n_acc, v.size());
  // uncertain suffixes: the reference's groups without explicit tokens, merged (sorted) with n's
  std::map<std::string, std::vector<int32_t>> own;
  for (const auto& [t, k] : uncertain)
    if (!m->accepts(t)) own[v.token(t).substr(k)].push_back(t);
  const Suffixes empty;
  const Suffixes& bs = base->suffixes ? *base->suffixes : empty;
  bool touched = !own.empty();
  for (size_t k = 0; k < bs.toks.size() && !touched; ++k) touched = (expl[bs.toks[k] >> 6] >> (bs.toks[k] & 63)) & 1;
  if (!touched) {  // the common case: share the reference's suffixes
    m->suffixes = base->suffixes;
    m->owns_suffixes = false;
    return m;
  }
  auto sx = std::make_shared<Suffixes>();
  std::vector<int32_t> toks;
  auto emit = [&](std::string_view s, std::vector<int32_t>& list) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    if (list.empty()) return;
    sx->data.append(s.data(), s.size());
    sx->off.push_back(static_cast<uint32_t>(sx->data.size()));
    sx->toks.insert(sx->toks.end(), list.begin(), list.end());
    sx->tok_off.push_back(static_cast<uint32_t>(sx->toks.size()));
  };
  auto it = own.begin();
  for (size_t si = 0; si < bs.size(); ++si) {
    std::string_view s(bs.data.data() + bs.off[si], bs.off[si + 1] - bs.off[si]);
    for (; it != own.end() && std::string_view(it->first) < s; ++it) emit(it->first, it->second);
    toks.clear();
    for (uint32_t k = bs.tok_off[si]; k < bs.tok_off[si + 1]; ++k) {
      int32_t t = bs.toks[k];
      if (!((expl[t >> 6] >> (t & 63)) & 1)) toks.push_back(t);
    }
    if (it != own.end() && std::string_view(it->first) == s) {
      toks.insert(toks.end(), it->second.begin(), it->second.end());
      ++it;
    }
    emit(s, toks);
  }
  for (; it != own.end(); ++it) emit(it->first, it->second);
  m->suffixes = std::move(sx);
  return m;
}

std::unique_ptr<NodeMask> CompiledGrammar::compute(uint32_t n) const {
  const uint32_t r = grammar_.node_rule[n];
  if (grammar_.rules[r].terminal) {
    const RuleClasses& rc = classes_of(r);
    const uint32_t first = grammar_.rules[r].first_node;
    if (!rc.rep.empty()) {
      const uint32_t x = rc.rep[n - first];
      if (x >= rc.num_own) return compute_derived(n, canonical(), rc.canonical_first + (x - rc.num_own), rc);
      if (x != n - first) return compute_derived(n, this, first + x, rc);
    }
    return compute_terminal(n);
  }
  const Vocabulary& v = *vocab_;
  const auto& trie = v.trie();
  const auto& ttok = v.trie_tokens();
  Stepper st(&grammar_);
  std::vector<ParseState> states(v.max_depth() + 2);
  std::vector<Stepper::Mark> mark(v.max_depth() + 2, st.mark());
  // A rule is always entered at its start with an empty seen-key set; anywhere else an object
  // rule's set is not known here, and tokens that pass its guards are rechecked at run time.
  std::vector<char> tainted(v.max_depth() + 2, 0);
  const uint32_t seen0 = n == grammar_.rule_start(r) ? kEmptySeen : kUnknownSeen;
  states[0].tops.push_back({n, kBottomFrame, seen0, 0, 0});
  std::vector<uint64_t> acc(v.words64(), 0);
  size_t n_acc = 0;
  std::vector<std::pair<int32_t, uint32_t>> uncertain;  // (token, bytes consumed inside the rule)
  std::vector<int32_t> recheck;
  // the accepted ids as they come, so that a sparse mask (most non-terminal nodes: a key, a
  // literal) is not found by scanning the whole vocabulary's bits; past the sparse size they
  // are no longer kept (finish then reads the bits)
  std::vector<int32_t> ids;
  auto accept = [&](int32_t t) {
    if (add_token(acc, t)) {
      ++n_acc;
      if (!NodeMask::keeps_dense(ids.size() + 1, v.size())) ids.push_back(t);
    }
  };
  for_first_bytes(v, grammar_, n, [&](size_t i, size_t end) {
    while (i < end) {
      const auto& tn = trie[i];
      size_t d = tn.depth;
      st.restore(mark[d - 1]);
      ParseState& cur = states[d];
      st.step(states[d - 1], tn.byte, cur);
      mark[d] = st.mark();
      tainted[d] = tainted[d - 1] || cur.tainted;
      if (!tainted[d] && !cur.tops.empty() &&
          std::all_of(cur.tops.begin(), cur.tops.end(), [](const Top& t) { return t.tainted != 0; }))
        tainted[d] = 1;  // alive only through guards not known here: the token's fate is the guards'
      if (tainted[d]) {
        if (cur.bottom_popped) {  // any token below may go on in the caller: recheck them all
          for (size_t j = i; j < tn.skip; ++j)
            for (uint32_t k = trie[j].tok_begin; k < trie[j].tok_end; ++k) recheck.push_back(ttok[k]);
          i = tn.skip;
          continue;
        }
        if (cur.tops.empty()) {
          i = tn.skip;
          continue;
        }
        for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) recheck.push_back(ttok[k]);
        ++i;
        continue;
      }
      if (cur.bottom_popped) n_acc += record_exit(v, i, d, acc, uncertain, &ids);
      if (cur.tops.empty()) {
        i = tn.skip;
        continue;
      }
      for (uint32_t k = tn.tok_begin; k < tn.tok_end; ++k) accept(ttok[k]);
      ++i;
    }
  });
  auto m = finish(acc, n_acc, uncertain, &ids);
  if (!recheck.empty()) {
    std::vector<std::pair<int32_t, uint32_t>> whole;
    for (int32_t t : recheck)
      if (!m->accepts(t)) whole.push_back({t, 0});
    if (!whole.empty()) m->recheck = group_suffixes(v, whole);
  }
  return m;
}

std::unique_ptr<NodeMask> CompiledGrammar::finish(std::vector<uint64_t>& acc, size_t n_acc,
                                                  const std::vector<std::pair<int32_t, uint32_t>>& uncertain,
                                                  std::vector<int32_t>* ids) const {
  const Vocabulary& v = *vocab_;
  std::unique_ptr<NodeMask> m;
  if (ids && ids->size() == n_acc && !NodeMask::keeps_dense(n_acc, v.size())) {
    m = std::make_unique<NodeMask>();
    std::sort(ids->begin(), ids->end());
    m->ids = std::move(*ids);
  } else {
    m = NodeMask::from_bits(std::move(acc), n_acc, v.size());
  }
  // group uncertain tokens by suffix (skip tokens already accepted)
  std::vector<std::pair<int32_t, uint32_t>> left;
  for (const auto& u : uncertain)
    if (!m->accepts(u.first)) left.push_back(u);
  m->suffixes = group_suffixes(v, left);
  return m;
}

}  // namespace toolken
