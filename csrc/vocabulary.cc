#include "vocabulary.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "compile_error.h"

namespace toolken {

namespace {
constexpr size_t kSharedCacheBudget = size_t(1) << 30;  // bytes of shared terminal masks per vocabulary
constexpr size_t kMaxTokenBytes = 65535;
}  // namespace

MaskSlots::MaskSlots(size_t n) : n_(n), slots_(new std::atomic<const NodeMask*>[n]) {
  for (size_t i = 0; i < n; ++i) slots_[i].store(nullptr, std::memory_order_relaxed);
}

MaskSlots::~MaskSlots() {
  for (size_t i = 0; i < n_; ++i) delete slots_[i].load();
}

const NodeMask* MaskSlots::publish(size_t i, std::unique_ptr<NodeMask> m) {
  const NodeMask* expected = nullptr;
  size_t bytes = m->memory_bytes();
  const NodeMask* raw = m.get();
  if (slots_[i].compare_exchange_strong(expected, raw, std::memory_order_acq_rel)) {
    m.release();
    memory_ += bytes;
    return raw;
  }
  return expected;
}

Vocabulary::Vocabulary(std::vector<std::string> tokens, std::vector<int32_t> stop_ids, size_t size)
    : tokens_(std::move(tokens)), size_(size) {
  if (size_ < tokens_.size()) throw ArgumentError("vocabulary size is smaller than the number of tokens");
  if (size_ > max_size(tokens_.size()))
    throw ArgumentError("vocabulary size " + std::to_string(size_) + " is far beyond the " + std::to_string(tokens_.size()) +
                        " tokens given (at most " + std::to_string(max_size(tokens_.size())) +
                        "): pass the model's (padded) vocabulary size");
  if (size_ == 0) throw ArgumentError("empty vocabulary");
  is_stop_.assign(size_, 0);
  for (int32_t s : stop_ids) {
    if (s < 0 || static_cast<size_t>(s) >= size_) throw ArgumentError("stop id " + std::to_string(s) + " is outside the vocabulary");
    if (!is_stop_[s]) {
      is_stop_[s] = 1;
      stop_ids_.push_back(s);
    }
  }
  // sorted (bytes, id) of text tokens
  std::vector<int32_t> order;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].size() > kMaxTokenBytes) throw ArgumentError("token " + std::to_string(i) + " is longer than 65535 bytes");
    if (!tokens_[i].empty() && !is_stop_[i]) order.push_back(static_cast<int32_t>(i));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    int c = tokens_[a].compare(tokens_[b]);
    return c != 0 ? c < 0 : a < b;
  });
  trie_.push_back({0, 0, 0, 0, 0});
  std::vector<uint32_t> path{0};  // path[d] = trie node at depth d on the current branch
  std::string prev;
  for (int32_t id : order) {
    const std::string& t = tokens_[id];
    size_t lcp = 0;
    while (lcp < prev.size() && lcp < t.size() && prev[lcp] == t[lcp]) ++lcp;
    // close nodes deeper than lcp
    while (path.size() > lcp + 1) {
      trie_[path.back()].skip = static_cast<uint32_t>(trie_.size());
      path.pop_back();
    }
    for (size_t d = lcp; d < t.size(); ++d) {
      trie_.push_back({static_cast<uint8_t>(t[d]), static_cast<uint16_t>(d + 1), 0, 0, 0});
      path.push_back(static_cast<uint32_t>(trie_.size() - 1));
    }
    TrieNode& node = trie_[path.back()];
    if (node.tok_begin == node.tok_end) node.tok_begin = node.tok_end = static_cast<uint32_t>(trie_tokens_.size());
    trie_tokens_.push_back(id);
    node.tok_end = static_cast<uint32_t>(trie_tokens_.size());
    max_depth_ = std::max(max_depth_, t.size());
    prev = t;
  }
  while (!path.empty()) {
    trie_[path.back()].skip = static_cast<uint32_t>(trie_.size());
    path.pop_back();
  }
  root_child_.fill(0);
  for (size_t c = 1; c < trie_.size(); c = trie_[c].skip) root_child_[trie_[c].byte] = static_cast<uint32_t>(c);
  trie_height_.assign(trie_.size(), 0);
  trie_quote_below_.assign(trie_.size(), 0);
  for (size_t i = trie_.size(); i-- > 0;)  // children have larger indices: computed first
    for (size_t c = i + 1; c < trie_[i].skip; c = trie_[c].skip) {
      trie_height_[i] = std::max<uint16_t>(trie_height_[i], static_cast<uint16_t>(trie_height_[c] + 1));
      trie_quote_below_[i] |= static_cast<uint8_t>(trie_[c].byte == '"' || trie_quote_below_[c]);
    }
  lead_ws_.assign(tokens_.size(), 0);
  for (int32_t id : order) {
    const std::string& t = tokens_[id];
    uint32_t k = 0;
    while (k < t.size() && (t[k] == ' ' || t[k] == '\n' || t[k] == '\t' || t[k] == '\r')) ++k;
    lead_ws_[id] = k;
    if (k) ws_led_.push_back(id);
  }
  std::sort(ws_led_.begin(), ws_led_.end(), [&](int32_t a, int32_t b) { return lead_ws_[a] > lead_ws_[b]; });
}

MaskSlots* Vocabulary::terminal_slots(const std::string& signature, size_t num_nodes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = terminal_.find(signature);
  if (it != terminal_.end()) return it->second.get();
  size_t used = 0;
  for (const auto& kv : terminal_) used += kv.second->memory_bytes();
  if (used > kSharedCacheBudget) return nullptr;
  auto slots = std::make_unique<MaskSlots>(num_nodes);
  MaskSlots* raw = slots.get();
  terminal_.emplace(signature, std::move(slots));
  return raw;
}

}  // namespace toolken
