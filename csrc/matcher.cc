#include "matcher.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "compile_error.h"

namespace toolken {

namespace {
constexpr size_t kMaxJumpForward = 4096;  // bytes find_jump_forward_bytes looks ahead at most
constexpr size_t kMaxSuffixMemo = 32;     // remembered suffix outcomes per matcher
}  // namespace

Matcher::Matcher(std::shared_ptr<const CompiledGrammar> cg) : cg_(std::move(cg)), stepper_(&cg_->grammar()) { reset(); }

Matcher::Matcher(const Matcher& o)
    : cg_(o.cg_), stepper_(&cg_->grammar()), history_(o.history_) {
  stepper_.frames = o.stepper_.frames;
  stepper_.sets = o.stepper_.sets;
  stepper_.set_words = o.stepper_.set_words;
}

void Matcher::reset() {
  history_.clear();
  memo_.clear();
  stepper_.clear_arenas();
  Entry e;
  const Grammar& g = cg_->grammar();
  stepper_.start(g.rule_start(g.root_rule), kRootFrame, e.state);
  e.arenas = stepper_.mark();
  e.terminated = false;
  history_.push_back(std::move(e));
}

void Matcher::rollback(size_t n) {
  if (n > num_accepted()) throw ArgumentError("cannot roll back " + std::to_string(n) + " tokens: only " + std::to_string(num_accepted()) + " accepted");
  history_.resize(history_.size() - n);
  stepper_.restore(history_.back().arenas);
  const size_t frames = history_.back().arenas.frames;
  memo_.erase(std::remove_if(memo_.begin(), memo_.end(), [&](const SuffixMemo& m) { return m.frame >= frames; }), memo_.end());
  memo_next_ = 0;
}

bool Matcher::accept_bytes(const std::string& bytes) {
  const Entry& cur = history_.back();
  if (cur.terminated) return false;
  if (bytes.empty()) return true;
  const Stepper::Mark mark = stepper_.mark();
  const ParseState* in = &cur.state;
  ParseState* out = &tmp_a_;
  for (size_t i = 0; i < bytes.size(); ++i) {
    stepper_.step(*in, static_cast<uint8_t>(bytes[i]), *out);
    if (!out->alive()) {
      stepper_.restore(mark);
      return false;
    }
    in = out;
    out = out == &tmp_a_ ? &tmp_b_ : &tmp_a_;
  }
  Entry e{*in, stepper_.mark(), false};
  history_.push_back(std::move(e));
  return true;
}

bool Matcher::accept_token(int64_t id) {
  const Vocabulary& v = cg_->vocab();
  const Entry& cur = history_.back();
  if (cur.terminated || id < 0 || static_cast<size_t>(id) >= v.size()) return false;
  if (v.is_stop(id)) {
    if (!cur.state.ended) return false;
    Entry e{ParseState{}, stepper_.mark(), true};
    e.state.ended = true;
    history_.push_back(std::move(e));
    return true;
  }
  if (static_cast<size_t>(id) >= v.num_tokens() || v.token(id).empty()) return false;
  return accept_bytes(v.token(id));
}

void Matcher::run_suffixes(const ParseState& start, const Suffixes& sx, uint32_t ws_budget, std::vector<int32_t>* record) {
  const Vocabulary& v = cg_->vocab();
  const Stepper::Mark mark = stepper_.mark();
  if (scratch_.size() < 2) scratch_.resize(2);
  scratch_[0] = start;
  std::vector<Stepper::Mark> fmark{mark};
  size_t valid = 0;  // scratch_[0..valid] are computed for the previous suffix and alive
  const char* prev = nullptr;
  size_t prev_len = 0;
  for (size_t si = 0, ns = sx.size(); si < ns; ++si) {
    const char* s = sx.data.data() + sx.off[si];
    size_t len = sx.off[si + 1] - sx.off[si];
    size_t lcp = 0;
    if (prev)
      while (lcp < len && lcp < prev_len && s[lcp] == prev[lcp]) ++lcp;
    prev = s;
    prev_len = len;
    if (lcp > valid) continue;  // shares a prefix that already failed (valid stays)
    if (scratch_.size() < len + 1) scratch_.resize(len + 1);
    if (fmark.size() < len + 1) fmark.resize(len + 1);
    bool ok = true;
    size_t d = lcp;
    for (; d < len; ++d) {
      stepper_.restore(fmark[d]);
      stepper_.step(scratch_[d], static_cast<uint8_t>(s[d]), scratch_[d + 1]);
      fmark[d + 1] = stepper_.mark();
      if (!scratch_[d + 1].alive()) {
        ok = false;
        break;
      }
    }
    valid = ok ? len : d;  // a failing prefix s[0..d] makes later suffixes sharing it skip
    if (!ok) continue;
    for (uint32_t k = sx.tok_off[si]; k < sx.tok_off[si + 1]; ++k) {
      int32_t t = sx.toks[k];
      if (v.lead_ws(t) > ws_budget) continue;
      words_[t >> 6] |= uint64_t(1) << (t & 63);
      if (record) record->push_back(t);
    }
  }
  stepper_.restore(mark);
}

void Matcher::fill_next_token_bitmask(int32_t* row) {
  const Vocabulary& v = cg_->vocab();
  size_t nw64 = v.words64();
  size_t nw32 = (v.size() + 31) / 32;
  words_.assign(nw64, 0);
  const Entry& cur = history_.back();
  if (!cur.terminated) {
    if (cur.state.ended)
      for (int32_t s : v.stop_ids()) words_[s >> 6] |= uint64_t(1) << (s & 63);
    std::vector<uint32_t> done_nodes;
    const Stepper::Mark mark = stepper_.mark();
    const uint32_t max_ws = cg_->grammar().max_ws;
    // tops that already consumed whitespace first, most consumed first (see matcher.h)
    std::vector<Top> tops(cur.state.tops);
    std::stable_sort(tops.begin(), tops.end(), [](const Top& a, const Top& b) { return a.ws > b.ws; });
    std::unique_ptr<NodeMask> held;
    for (const Top& top : tops) {
      // a counted string near its bounds has a mask of its own (compiled_grammar.h)
      const NodeMask* counted = cg_->count_mask(top.node, top.count, held);
      const NodeMask* nm = counted ? counted : cg_->node_mask(top.node);
      if (counted || top.ws > 0 || std::find(done_nodes.begin(), done_nodes.end(), top.node) == done_nodes.end()) {
        if (top.ws == 0 && !counted) done_nodes.push_back(top.node);
        if (nm->dense) {
          const uint64_t* b = nm->bits.data();
          for (size_t w = 0; w < nw64; ++w) words_[w] |= b[w];
        } else {
          for (int32_t t : nm->ids) words_[t >> 6] |= uint64_t(1) << (t & 63);
        }
        if (top.ws > 0) {
          uint32_t budget = max_ws - top.ws;
          for (int32_t t : v.ws_led_tokens()) {
            if (v.lead_ws(t) <= budget) break;
            words_[t >> 6] &= ~(uint64_t(1) << (t & 63));
          }
        }
      }
      if (nm->recheck) {  // whole tokens from this very stack (its seen-key set decides)
        tmp_b_.clear();
        tmp_b_.tops.push_back(top);
        run_suffixes(tmp_b_, *nm->recheck, 0xFFFFFFFFu);
      }
      if (nm->num_suffixes() == 0 || top.frame == kRootFrame) continue;
      const uint32_t ws_budget = top.ws > 0 ? max_ws - top.ws : 0xFFFFFFFFu;
      auto hit = std::find_if(memo_.begin(), memo_.end(), [&](const SuffixMemo& m) {
        return m.sx == nm->suffixes && m.frame == top.frame && m.ws_budget == ws_budget;
      });
      if (hit != memo_.end()) {
        for (int32_t t : hit->toks) words_[t >> 6] |= uint64_t(1) << (t & 63);
        continue;
      }
      // run the suffixes from the caller's continuation, sharing prefixes (suffixes are sorted)
      SuffixMemo memo{nm->suffixes, top.frame, ws_budget, {}};
      stepper_.restore(mark);
      stepper_.pop(top.frame, tmp_a_);
      run_suffixes(tmp_a_, *nm->suffixes, ws_budget, &memo.toks);
      stepper_.restore(mark);
      if (memo_.size() < kMaxSuffixMemo) memo_.push_back(std::move(memo));
      else memo_[memo_next_++ % kMaxSuffixMemo] = std::move(memo);
    }
  }
  std::memcpy(row, words_.data(), nw32 * 4);
}

std::string Matcher::find_jump_forward_bytes() {
  std::string out;
  const Entry& cur = history_.back();
  if (cur.terminated) return out;
  const Grammar& g = cg_->grammar();
  const Stepper::Mark mark = stepper_.mark();
  ParseState a = cur.state, b;
  while (out.size() < kMaxJumpForward && !a.ended && !a.tops.empty()) {
    int only = -1;
    bool unique = true;
    for (const Top& t : a.tops) {
      for (uint32_t i = g.byte_begin[t.node]; i < g.byte_begin[t.node + 1] && unique; ++i) {
        const ByteEdge& e = g.byte_edges[i];
        if (e.lo != e.hi || (only >= 0 && only != e.lo)) unique = false;
        else only = e.lo;
      }
      if (!unique) break;
    }
    if (!unique || only < 0) break;
    stepper_.step(a, static_cast<uint8_t>(only), b);
    if (!b.alive()) break;
    out.push_back(static_cast<char>(only));
    std::swap(a, b);
  }
  stepper_.restore(mark);
  return out;
}

}  // namespace toolken
