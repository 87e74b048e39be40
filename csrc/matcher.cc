#include "matcher.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "compile_error.h"

namespace toolken {

namespace {
constexpr size_t kMaxJumpForward = 4096;  // bytes find_jump_forward_bytes looks ahead at most
}  // namespace

Matcher::Matcher(std::shared_ptr<const CompiledGrammar> cg) : cg_(std::move(cg)), stepper_(&cg_->grammar()) { reset(); }

Matcher::Matcher(const Matcher& o)
    : cg_(o.cg_), stepper_(&cg_->grammar()), history_(o.history_) {
  stepper_.frames = o.stepper_.frames;
}

void Matcher::reset() {
  history_.clear();
  stepper_.frames.resize(2);
  Entry e;
  const Grammar& g = cg_->grammar();
  stepper_.start(g.rule_start(g.root_rule), kRootFrame, e.state);
  e.frames_size = stepper_.frames.size();
  e.terminated = false;
  history_.push_back(std::move(e));
}

void Matcher::rollback(size_t n) {
  if (n > num_accepted()) throw ArgumentError("cannot roll back " + std::to_string(n) + " tokens: only " + std::to_string(num_accepted()) + " accepted");
  history_.resize(history_.size() - n);
  stepper_.frames.resize(history_.back().frames_size);
}

bool Matcher::accept_bytes(const std::string& bytes) {
  const Entry& cur = history_.back();
  if (cur.terminated) return false;
  if (bytes.empty()) return true;
  size_t mark = stepper_.frames.size();
  const ParseState* in = &cur.state;
  ParseState* out = &tmp_a_;
  for (size_t i = 0; i < bytes.size(); ++i) {
    stepper_.step(*in, static_cast<uint8_t>(bytes[i]), *out);
    if (!out->alive()) {
      stepper_.frames.resize(mark);
      return false;
    }
    in = out;
    out = out == &tmp_a_ ? &tmp_b_ : &tmp_a_;
  }
  Entry e{*in, stepper_.frames.size(), false};
  history_.push_back(std::move(e));
  return true;
}

bool Matcher::accept_token(int64_t id) {
  const Vocabulary& v = cg_->vocab();
  const Entry& cur = history_.back();
  if (cur.terminated || id < 0 || static_cast<size_t>(id) >= v.size()) return false;
  if (v.is_stop(id)) {
    if (!cur.state.ended) return false;
    Entry e{ParseState{}, stepper_.frames.size(), true};
    e.state.ended = true;
    history_.push_back(std::move(e));
    return true;
  }
  if (static_cast<size_t>(id) >= v.num_tokens() || v.token(id).empty()) return false;
  return accept_bytes(v.token(id));
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
    size_t mark = stepper_.frames.size();
    const uint32_t max_ws = cg_->grammar().max_ws;
    // tops that already consumed whitespace first, most consumed first (see matcher.h)
    std::vector<Top> tops(cur.state.tops);
    std::stable_sort(tops.begin(), tops.end(), [](const Top& a, const Top& b) { return a.ws > b.ws; });
    for (const Top& top : tops) {
      const NodeMask* nm = cg_->node_mask(top.node);
      if (top.ws > 0 || std::find(done_nodes.begin(), done_nodes.end(), top.node) == done_nodes.end()) {
        if (top.ws == 0) done_nodes.push_back(top.node);
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
      const uint32_t ws_budget = top.ws > 0 ? max_ws - top.ws : 0xFFFFFFFFu;
      size_t ns = nm->num_suffixes();
      if (ns == 0 || top.frame == kRootFrame) continue;
      const Suffixes& sx = *nm->suffixes;
      // run the suffixes from the caller's continuation, sharing prefixes (suffixes are sorted)
      if (scratch_.size() < 2) scratch_.resize(2);
      stepper_.frames.resize(mark);
      stepper_.pop(top.frame, scratch_[0]);
      std::vector<size_t> fmark{stepper_.frames.size()};
      size_t valid = 0;  // scratch_[0..valid] are computed for the previous suffix and alive
      const char* prev = nullptr;
      size_t prev_len = 0;
      for (size_t si = 0; si < ns; ++si) {
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
          stepper_.frames.resize(fmark[d]);
          stepper_.step(scratch_[d], static_cast<uint8_t>(s[d]), scratch_[d + 1]);
          fmark[d + 1] = stepper_.frames.size();
          if (!scratch_[d + 1].alive()) {
            ok = false;
            break;
          }
        }
        valid = ok ? len : d;
        if (!ok) {
          // mark the failing prefix: later suffixes sharing s[0..d] skip via lcp > valid
          continue;
        }
        for (uint32_t k = sx.tok_off[si]; k < sx.tok_off[si + 1]; ++k) {
          int32_t t = sx.toks[k];
          if (v.lead_ws(t) > ws_budget) continue;
          words_[t >> 6] |= uint64_t(1) << (t & 63);
        }
      }
      stepper_.frames.resize(mark);
    }
  }
  std::memcpy(row, words_.data(), nw32 * 4);
}

std::string Matcher::find_jump_forward_bytes() {
  std::string out;
  const Entry& cur = history_.back();
  if (cur.terminated) return out;
  const Grammar& g = cg_->grammar();
  size_t mark = stepper_.frames.size();
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
  stepper_.frames.resize(mark);
  return out;
}

}  // namespace toolken
