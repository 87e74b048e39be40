#include "key_trie.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "json_encoding.h"

namespace toolken {

namespace {
using Member = std::pair<uint32_t, uint32_t>;  // (name index, state of that name's literal DFA)

struct MembersHash {
  size_t operator()(const std::vector<Member>& v) const {
    uint64_t h = 1469598103934665603ull;
    for (const auto& [a, b] : v) h = (h ^ ((static_cast<uint64_t>(a) << 32) | b)) * 1099511628211ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};
}  // namespace

KeyTrie::KeyTrie(const std::vector<std::string>& names, size_t max_states) {
  std::vector<Dfa> lit(names.size());
  for (size_t j = 0; j < names.size(); ++j) {
    Nfa nfa;
    lit[j] = determinize(nfa, json_string_literal(nfa, names[j]), max_states);
  }
  std::vector<std::vector<Member>> members;
  std::unordered_map<std::vector<Member>, uint32_t, MembersHash> id_of;
  auto node_of = [&](std::vector<Member>&& m) -> uint32_t {
    auto it = id_of.find(m);
    if (it != id_of.end()) return it->second;
    if (members.size() >= max_states) too_many_states(max_states);
    uint32_t id = static_cast<uint32_t>(members.size());
    members.push_back(m);
    id_of.emplace(std::move(m), id);
    return id;
  };
  std::vector<Member> root;
  for (uint32_t j = 0; j < lit.size(); ++j)
    if (!lit[j].states.empty()) root.push_back({j, 0});
  node_of(std::move(root));
  std::vector<std::vector<Member>> bucket(256);
  for (size_t u = 0; u < members.size(); ++u) {
    // members of each child, byte by byte (sorted by name: members are, and a DFA state has one
    // successor per byte)
    std::vector<int> touched;
    int64_t fin = -1;
    for (const auto& [j, s] : members[u]) {
      const Dfa::State& st = lit[j].states[s];
      if (st.final) fin = j;
      for (const ByteEdge& e : st.bytes)
        for (int b = e.lo; b <= e.hi; ++b) {
          if (bucket[b].empty()) touched.push_back(b);
          bucket[b].push_back({j, e.to});
        }
    }
    std::sort(touched.begin(), touched.end());
    std::vector<ByteEdge> out;
    std::vector<Member> prev;
    for (int b : touched) {
      if (!out.empty() && out.back().hi + 1 == b && bucket[b] == prev) {
        out.back().hi = static_cast<uint8_t>(b);
      } else {
        prev = bucket[b];
        uint32_t child = node_of(std::vector<Member>(bucket[b]));
        out.push_back({static_cast<uint8_t>(b), static_cast<uint8_t>(b), child});
      }
      bucket[b].clear();
    }
    std::vector<uint32_t> ks;
    ks.reserve(members[u].size());
    for (const auto& m : members[u]) ks.push_back(m.first);
    edges_.push_back(std::move(out));
    keys_.push_back(std::move(ks));
    final_.push_back(fin);
  }
}

bool KeyTrie::narrow(uint32_t u, uint32_t& lo, uint32_t& hi) const {
  const auto& k = keys_[u];
  auto a = std::lower_bound(k.begin(), k.end(), lo);
  auto b = std::upper_bound(k.begin(), k.end(), hi);
  if (a >= b) return false;
  lo = *a;
  hi = *(b - 1);
  return true;
}

}  // namespace toolken
