// JSON string characters and numerals as automata: code point sets, one JSON-encoded
// character of a set (json_char), exact string literals, and canonical decimal ranges (see
// json_encoding.h).
#include "json_encoding.h"

#include <algorithm>
#include <cstring>

#include "json_value.h"

namespace toolken {


// ---------------------------------------------------------------- code point sets
CpRanges cp_normalize(CpRanges r) {
  std::sort(r.begin(), r.end());
  CpRanges out;
  for (const auto& p : r) {
    if (p.first > p.second) continue;
    if (!out.empty() && p.first <= out.back().second + 1) out.back().second = std::max(out.back().second, p.second);
    else out.push_back(p);
  }
  return out;
}

CpRanges cp_complement(const CpRanges& r0) {
  CpRanges r = cp_normalize(r0), out;
  uint32_t next = 0;
  for (const auto& p : r) {
    if (p.first > next) out.push_back({next, p.first - 1});
    next = p.second + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

CpRanges cp_intersect(const CpRanges& a0, const CpRanges& b0) {
  CpRanges a = cp_normalize(a0), b = cp_normalize(b0), out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    uint32_t lo = std::max(a[i].first, b[j].first), hi = std::min(a[i].second, b[j].second);
    if (lo <= hi) out.push_back({lo, hi});
    if (a[i].second < b[j].second) ++i;
    else ++j;
  }
  return out;
}

CpRanges cp_subtract(const CpRanges& a, const CpRanges& b) { return cp_intersect(a, cp_complement(b)); }

bool cp_contains(const CpRanges& r, uint32_t cp) {
  for (const auto& p : r)
    if (p.first <= cp && cp <= p.second) return true;
  return false;
}

namespace {

using DigitSeq = std::vector<std::pair<int, int>>;  // per position: inclusive digit-value range

uint64_t ipow(uint64_t base, int e) {
  uint64_t r = 1;
  for (int i = 0; i < e; ++i) r *= base;
  return r;
}

// All fixed-width (ndig digits, base `base`) numerals of the values in [lo, hi], as a union of
// digit-range sequences (the classic range-to-regex split).
void split_digits(uint64_t lo, uint64_t hi, int ndig, uint64_t base, DigitSeq& prefix, std::vector<DigitSeq>& out) {
  if (ndig == 0) {
    out.push_back(prefix);
    return;
  }
  uint64_t p = ipow(base, ndig - 1);
  uint64_t a = lo / p, b = hi / p;
  if (a == b) {
    prefix.push_back({static_cast<int>(a), static_cast<int>(a)});
    split_digits(lo % p, hi % p, ndig - 1, base, prefix, out);
    prefix.pop_back();
    return;
  }
  if (lo % p != 0) {
    prefix.push_back({static_cast<int>(a), static_cast<int>(a)});
    split_digits(lo % p, p - 1, ndig - 1, base, prefix, out);
    prefix.pop_back();
    ++a;
  }
  bool upper_partial = hi % p != p - 1;
  if (upper_partial) --b;
  if (a <= b) {
    prefix.push_back({static_cast<int>(a), static_cast<int>(b)});
    for (int k = 1; k < ndig; ++k) prefix.push_back({0, static_cast<int>(base - 1)});
    out.push_back(prefix);
    prefix.resize(prefix.size() - static_cast<size_t>(ndig));
  }
  if (upper_partial) {
    uint64_t hb = hi / p;
    prefix.push_back({static_cast<int>(hb), static_cast<int>(hb)});
    split_digits(0, hi % p, ndig - 1, base, prefix, out);
    prefix.pop_back();
  }
}

// Adds byte edges from `from` to `to` for digit values [a, b] in base 10 or 16 (hex: both cases).
void add_digit_edges(Nfa& nfa, int from, int to, int a, int b) {
  int dlo = a, dhi = std::min(b, 9);
  if (dlo <= dhi) nfa.add_bytes(from, static_cast<uint8_t>('0' + dlo), static_cast<uint8_t>('0' + dhi), to);
  int xlo = std::max(a, 10), xhi = b;
  if (xlo <= xhi) {
    nfa.add_bytes(from, static_cast<uint8_t>('a' + xlo - 10), static_cast<uint8_t>('a' + xhi - 10), to);
    nfa.add_bytes(from, static_cast<uint8_t>('A' + xlo - 10), static_cast<uint8_t>('A' + xhi - 10), to);
  }
}

// Chains each digit sequence from `start` to `end`.
void add_digit_seqs(Nfa& nfa, int start, int end, const std::vector<DigitSeq>& seqs) {
  for (const auto& seq : seqs) {
    int cur = start;
    for (size_t k = 0; k < seq.size(); ++k) {
      int nxt = k + 1 == seq.size() ? end : nfa.add_state();
      add_digit_edges(nfa, cur, nxt, seq[k].first, seq[k].second);
      cur = nxt;
    }
  }
}

// `\u` + 4 hex digits for values in [lo, hi] (<= 0xFFFF), from `from` to `to`.
void add_u_escape(Nfa& nfa, int from, int to, uint32_t lo, uint32_t hi) {
  std::vector<DigitSeq> seqs;
  DigitSeq prefix;
  split_digits(lo, hi, 4, 16, prefix, seqs);
  int u = nfa.add_state();
  nfa.add_bytes(from, '\\', '\\', u);
  int h = nfa.add_state();
  nfa.add_bytes(u, 'u', 'u', h);
  add_digit_seqs(nfa, h, to, seqs);
}

// UTF-8 byte-range sequences covering code points [lo, hi] (no surrogates inside).
void utf8_sequences(uint32_t lo, uint32_t hi, std::vector<std::vector<std::pair<uint8_t, uint8_t>>>& out) {
  static const uint32_t kLimits[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  for (int n = 0; n < 4; ++n) {
    uint32_t start = n == 0 ? 0 : kLimits[n - 1] + 1;
    if (lo <= kLimits[n] && hi >= start && lo <= hi) {
      uint32_t a = std::max(lo, start), b = std::min(hi, kLimits[n]);
      if (a < start || a > b) continue;
      if (std::max(lo, start) > kLimits[n]) continue;
      // split so that every continuation position spans a full or a single byte range
      std::function<void(uint32_t, uint32_t)> rec = [&](uint32_t x, uint32_t y) {
        for (int i = 1; i <= n; ++i) {
          uint32_t m = (1u << (6 * i)) - 1;
          if ((x & ~m) != (y & ~m)) {
            if ((x & m) != 0) {
              rec(x, x | m);
              rec((x | m) + 1, y);
              return;
            }
            if ((y & m) != m) {
              rec(x, (y & ~m) - 1);
              rec(y & ~m, y);
              return;
            }
          }
        }
        std::string ex, ey;
        append_utf8(ex, x);
        append_utf8(ey, y);
        std::vector<std::pair<uint8_t, uint8_t>> seq;
        for (size_t k = 0; k < ex.size(); ++k) seq.push_back({static_cast<uint8_t>(ex[k]), static_cast<uint8_t>(ey[k])});
        out.push_back(std::move(seq));
      };
      rec(a, b);
    }
  }
}

}  // namespace

namespace {
void add_utf8_ranges(Nfa& nfa, int start, int end, const CpRanges& raw) {
  std::vector<std::vector<std::pair<uint8_t, uint8_t>>> seqs;
  for (const auto& r : raw) utf8_sequences(r.first, r.second, seqs);
  for (const auto& seq : seqs) {
    int cur = start;
    for (size_t k = 0; k < seq.size(); ++k) {
      int nxt = k + 1 == seq.size() ? end : nfa.add_state();
      nfa.add_bytes(cur, seq[k].first, seq[k].second, nxt);
      cur = nxt;
    }
  }
}
}  // namespace

Frag json_char(Nfa& nfa, const CpRanges& set0) {
  // fast path: one printable ASCII character that JSON never escapes (json.dumps writes it raw)
  if (set0.size() == 1 && set0[0].first == set0[0].second && set0[0].first >= 0x20 && set0[0].first < 0x7F &&
      set0[0].first != '"' && set0[0].first != '\\' && set0[0].first != '/') {
    return nfa.byte_range(static_cast<uint8_t>(set0[0].first), static_cast<uint8_t>(set0[0].first));
  }
  CpRanges set = cp_normalize(set0);
  int start = nfa.add_state(), end = nfa.add_state();
  const CpRanges kSurrogates{{0xD800, 0xDFFF}};
  // raw: everything JSON allows unescaped
  CpRanges raw = cp_subtract(set, cp_normalize({{0, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0xD800, 0xDFFF}}));
  add_utf8_ranges(nfa, start, end, raw);
  // short escapes
  static const std::pair<uint32_t, char> kShort[] = {{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {8, 'b'},
                                                     {12, 'f'}, {10, 'n'}, {13, 'r'}, {9, 't'}};
  int esc = -1;
  for (const auto& p : kShort) {
    if (!cp_contains(set, p.first)) continue;
    if (esc < 0) {
      esc = nfa.add_state();
      nfa.add_bytes(start, '\\', '\\', esc);
    }
    nfa.add_bytes(esc, static_cast<uint8_t>(p.second), static_cast<uint8_t>(p.second), end);
  }
  // \uXXXX: control characters without a short form, DEL and non-ASCII BMP characters (as json.dumps writes them)
  CpRanges uesc = cp_subtract(cp_intersect(set, {{0, 0x1F}, {0x7F, 0xFFFF}}),
                              cp_normalize({{8, 10}, {12, 13}, {0xD800, 0xDFFF}}));
  for (const auto& r : uesc) add_u_escape(nfa, start, end, r.first, r.second);
  // surrogate pairs for astral characters
  for (const auto& r : cp_intersect(set, {{0x10000, kMaxCodePoint}})) {
    uint32_t lo = r.first - 0x10000, hi = r.second - 0x10000;
    uint32_t hlo = lo >> 10, hhi = hi >> 10;
    auto pair_edge = [&](uint32_t h1, uint32_t h2, uint32_t l1, uint32_t l2) {
      int mid = nfa.add_state();
      add_u_escape(nfa, start, mid, 0xD800 + h1, 0xD800 + h2);
      add_u_escape(nfa, mid, end, 0xDC00 + l1, 0xDC00 + l2);
    };
    if (hlo == hhi) {
      pair_edge(hlo, hlo, lo & 0x3FF, hi & 0x3FF);
      continue;
    }
    uint32_t a = hlo, b = hhi;
    if ((lo & 0x3FF) != 0) {
      pair_edge(hlo, hlo, lo & 0x3FF, 0x3FF);
      ++a;
    }
    bool upper_partial = (hi & 0x3FF) != 0x3FF;
    if (upper_partial) --b;
    if (a <= b && a <= hhi) pair_edge(a, b, 0, 0x3FF);
    if (upper_partial) pair_edge(hhi, hhi, 0, hi & 0x3FF);
  }
  (void)kSurrogates;
  return {start, end};
}

Frag json_string_literal(Nfa& nfa, const std::string& value, bool open_quote) {
  std::vector<Frag> parts;
  if (open_quote) parts.push_back(nfa.literal("\""));
  for (uint32_t cp : decode_utf8(value)) parts.push_back(json_char(nfa, {{cp, cp}}));
  parts.push_back(nfa.literal("\""));
  return nfa.seq(parts);
}

Frag decimal_range(Nfa& nfa, uint64_t lo, uint64_t hi, bool hi_unbounded) {
  const uint64_t kMax = 1000000000000000000ull;
  if (lo > kMax || (!hi_unbounded && hi > kMax)) throw CompileError("integer bound beyond 10^18 is not supported");
  int start = nfa.add_state(), end = nfa.add_state();
  auto ndigits = [](uint64_t v) {
    int n = 1;
    while (v >= 10) {
      v /= 10;
      ++n;
    }
    return n;
  };
  if (!hi_unbounded && hi < lo) return {start, end};
  int kmax = hi_unbounded ? ndigits(lo) : ndigits(hi);
  for (int k = ndigits(lo); k <= kmax; ++k) {
    uint64_t a = std::max(lo, k == 1 ? 0 : ipow(10, k - 1));
    uint64_t b = ipow(10, k) - 1;
    if (!hi_unbounded) b = std::min(b, hi);
    if (a > b) continue;
    std::vector<DigitSeq> seqs;
    DigitSeq prefix;
    split_digits(a, b, k, 10, prefix, seqs);
    add_digit_seqs(nfa, start, end, seqs);
  }
  if (hi_unbounded) {
    // more than kmax digits: [1-9][0-9]{kmax}[0-9]*
    int cur = nfa.add_state();
    nfa.add_bytes(start, '1', '9', cur);
    for (int k = 0; k < kmax; ++k) {
      int nxt = nfa.add_state();
      nfa.add_bytes(cur, '0', '9', nxt);
      cur = nxt;
    }
    nfa.add_bytes(cur, '0', '9', cur);
    nfa.add_eps(cur, end);
  }
  return {start, end};
}

}  // namespace toolken
