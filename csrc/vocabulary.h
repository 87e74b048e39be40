// Token byte strings of a tokenizer, the byte trie walked when computing masks, and the
// per-vocabulary cache of token masks for terminal rules.
//
// Trie layout: nodes in preorder; node 0 is the root (no byte, depth 0). Node i's subtree is
// [i, skip); tokens whose bytes end at node i are trie_tokens[tok_begin, tok_end). Walking
// i = i + 1 descends, i = skip prunes the whole subtree; depth tells which parser state (the
// one at depth - 1) the byte extends. Tokens with empty bytes (special/control tokens) and
// stop tokens are not in the trie, so they never match grammar text.
//
// NodeMask is the context-independent part of the mask at a grammar node n, computed by one
// trie walk from the stack [n] over an unknown caller (see matcher.h): `accepted` tokens are
// allowed whatever the caller is; each `uncertain` token leaves n's rule after some prefix and
// is allowed iff its remaining suffix is accepted from the caller's continuation; each `recheck`
// token went through an object guard (grammar.h) and is run whole from the stack. Suffixes are
// stored sorted and de-duplicated so that the run-time check walks shared prefixes once.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace toolken {

// Uncertain-token suffixes of a NodeMask: suffix i = data[off[i], off[i+1]), its tokens
// toks[tok_off[i], tok_off[i+1]); sorted by suffix, de-duplicated.
struct Suffixes {
  std::string data;
  std::vector<uint32_t> off{0};
  std::vector<uint32_t> tok_off{0};
  std::vector<int32_t> toks;
  size_t size() const { return off.size() - 1; }
  size_t memory_bytes() const { return sizeof(*this) + data.size() + off.size() * 4 + tok_off.size() * 4 + toks.size() * 4; }
};

struct NodeMask {
  bool dense = false;
  std::vector<uint64_t> bits;  // dense: one bit per token id
  std::vector<int32_t> ids;    // sparse: accepted token ids
  std::shared_ptr<const Suffixes> suffixes;  // may be shared with the mask this one was derived from
  bool owns_suffixes = true;                 // counted in memory_bytes
  // Tokens (whole, same layout) whose walk from n went through an object guard checked without
  // knowing n's seen-key set: each is run from the actual stack at run time. Null when none.
  std::shared_ptr<const Suffixes> recheck;
  size_t num_suffixes() const { return suffixes ? suffixes->size() : 0; }
  // A mask accepting the tokens whose bits are set in `bits` (n_accepted of them, vocab_size
  // tokens): kept dense above 1 in 32 tokens, else as a sorted id list. No suffixes yet.
  static bool keeps_dense(size_t n_accepted, size_t vocab_size) { return n_accepted * 32 > vocab_size; }
  static std::unique_ptr<NodeMask> from_bits(std::vector<uint64_t>&& bits, size_t n_accepted, size_t vocab_size) {
    auto m = std::make_unique<NodeMask>();
    if (keeps_dense(n_accepted, vocab_size)) {
      m->dense = true;
      m->bits = std::move(bits);
    } else {
      for (size_t w = 0; w < bits.size(); ++w)
        for (uint64_t x = bits[w]; x; x &= x - 1) m->ids.push_back(static_cast<int32_t>(w * 64 + __builtin_ctzll(x)));
    }
    return m;
  }
  bool accepts(int32_t t) const {
    return dense ? ((bits[t >> 6] >> (t & 63)) & 1) != 0 : std::binary_search(ids.begin(), ids.end(), t);
  }
  size_t memory_bytes() const {
    return sizeof(*this) + bits.size() * 8 + ids.size() * 4 + (owns_suffixes && suffixes ? suffixes->memory_bytes() : 0) +
           (recheck ? recheck->memory_bytes() : 0);
  }
};

// Lazily filled, lock-free-readable slots of NodeMask pointers (owned).
class MaskSlots {
 public:
  explicit MaskSlots(size_t n);
  ~MaskSlots();
  MaskSlots(const MaskSlots&) = delete;
  MaskSlots& operator=(const MaskSlots&) = delete;
  const NodeMask* get(size_t i) const { return slots_[i].load(std::memory_order_acquire); }
  // Stores `m` unless another thread stored first; returns the stored mask either way.
  const NodeMask* publish(size_t i, std::unique_ptr<NodeMask> m);
  size_t memory_bytes() const { return memory_.load(); }
  size_t size() const { return n_; }

 private:
  size_t n_;
  std::unique_ptr<std::atomic<const NodeMask*>[]> slots_;
  std::atomic<size_t> memory_{0};
};

class Vocabulary {
 public:
  struct TrieNode {
    uint8_t byte;
    uint16_t depth;
    uint32_t skip;
    uint32_t tok_begin, tok_end;
  };

  // `tokens[i]` are token i's bytes (empty: never matches text); `size` >= tokens.size() is the
  // mask width (a model's padded vocabulary); stop ids must be < size.
  Vocabulary(std::vector<std::string> tokens, std::vector<int32_t> stop_ids, size_t size);
  // The largest mask width accepted for `num_tokens` tokens: padded rows beyond the tokenizer
  // are a few hundred in practice; the bound keeps a wrong size from allocating gigabytes.
  static size_t max_size(size_t num_tokens) {
    size_t m = 2 * num_tokens + 65536;
    return m < 0x7FFFFFFF ? m : 0x7FFFFFFF;  // token ids are int32
  }

  size_t size() const { return size_; }
  size_t num_tokens() const { return tokens_.size(); }
  size_t words64() const { return (size_ + 63) / 64; }
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  bool is_stop(int64_t id) const { return id >= 0 && static_cast<size_t>(id) < size_ && is_stop_[id]; }
  const std::string& token(size_t id) const { return tokens_[id]; }
  const std::vector<TrieNode>& trie() const { return trie_; }
  const std::vector<int32_t>& trie_tokens() const { return trie_tokens_; }
  size_t max_depth() const { return max_depth_; }
  // root_child(b): the depth-1 trie node of byte b, 0 when no token starts with b. The root's
  // children lie far apart in the trie (each after its whole subtree): a walk that can take only
  // a few first bytes jumps to them instead of visiting all of them.
  uint32_t root_child(uint8_t b) const { return root_child_[b]; }
  // trie_height()[i]: bytes from trie node i down to the deepest token end in its subtree.
  const std::vector<uint16_t>& trie_height() const { return trie_height_; }
  // trie_quote_below()[i]: some token in node i's subtree reads '"' after node i's own byte.
  const std::vector<uint8_t>& trie_quote_below() const { return trie_quote_below_; }
  // Number of leading JSON whitespace bytes of token id (0 for special tokens).
  uint32_t lead_ws(size_t id) const { return lead_ws_[id]; }
  // Text tokens with lead_ws >= 1, by lead_ws descending.
  const std::vector<int32_t>& ws_led_tokens() const { return ws_led_; }

  // Mask slots shared by every grammar of this vocabulary for the terminal rule with this
  // signature; nullptr once the shared cache is over its memory budget (callers then keep
  // their own slots).
  MaskSlots* terminal_slots(const std::string& signature, size_t num_nodes);

 private:
  std::vector<std::string> tokens_;
  std::vector<int32_t> stop_ids_;
  std::vector<char> is_stop_;
  size_t size_;
  std::vector<TrieNode> trie_;
  std::vector<int32_t> trie_tokens_;
  std::vector<uint16_t> trie_height_;
  std::vector<uint8_t> trie_quote_below_;
  std::array<uint32_t, 256> root_child_{};
  size_t max_depth_ = 0;
  std::vector<uint32_t> lead_ws_;
  std::vector<int32_t> ws_led_;
  std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<MaskSlots>> terminal_;
};

}  // namespace toolken
