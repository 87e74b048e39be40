#include "decimal_languages.h"

#include <algorithm>

#include "json_encoding.h"

namespace toolken {

bool parse_decimal(const std::string& text, Decimal& out) {
  out = Decimal{};
  size_t i = 0;
  bool neg = false;
  if (i < text.size() && text[i] == '-') neg = true, ++i;
  std::string digits;
  int64_t point = 0;  // digits before the decimal point
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') digits += text[i++], ++point;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') digits += text[i++];
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool eneg = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) eneg = text[i++] == '-';
    int64_t e = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      e = e * 10 + (text[i++] - '0');
      if (e > 100000) return false;
    }
    point += eneg ? -e : e;
  }
  if (i != text.size() || digits.empty()) return false;
  std::string ip, frac;
  if (point <= 0) {
    frac = std::string(static_cast<size_t>(-point), '0') + digits;
  } else if (static_cast<size_t>(point) >= digits.size()) {
    ip = digits + std::string(static_cast<size_t>(point) - digits.size(), '0');
  } else {
    ip = digits.substr(0, static_cast<size_t>(point));
    frac = digits.substr(static_cast<size_t>(point));
  }
  ip.erase(0, std::min(ip.find_first_not_of('0'), ip.size()));
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  if (ip.size() > 18 || frac.size() > kMaxFractionDigits) return false;
  for (char c : ip) out.ip = out.ip * 10 + static_cast<uint64_t>(c - '0');
  out.frac = frac;
  out.neg = neg && !out.is_zero();
  return true;
}

namespace {

// Fractions ("" or '.' digits+) whose value is >= F (greater: > F), F without trailing zeros.
// States: 0 start (no fraction yet), 1 + i: after '.' and i digits equal to F's, k + 2: already
// greater (any digits). Built as a Dfa directly.
Dfa fraction_at_least(const std::string& F, bool greater) {
  const size_t k = F.size();
  Dfa d;
  d.states.resize(k + 3);
  const uint32_t any = static_cast<uint32_t>(k + 2);
  d.states[0].final = k == 0 && !greater;
  d.states[0].bytes.push_back({'.', '.', 1});
  for (size_t i = 0; i < k; ++i) {
    auto& st = d.states[1 + i];
    const uint8_t f = static_cast<uint8_t>(F[i]);
    // a proper prefix of F followed by nothing is less than F: not final
    st.bytes.push_back({f, f, static_cast<uint32_t>(2 + i)});
    if (f < '9') st.bytes.push_back({static_cast<uint8_t>(f + 1), '9', any});
  }
  auto& eq = d.states[1 + k];  // all of F read, equal so far
  eq.final = k > 0 && !greater;
  if (greater) {
    eq.bytes.push_back({'0', '0', static_cast<uint32_t>(1 + k)});
    eq.bytes.push_back({'1', '9', any});
  } else {
    eq.bytes.push_back({'0', '9', any});
  }
  d.states[any].final = true;
  d.states[any].bytes.push_back({'0', '9', any});
  trim(d);
  return d;
}

// Fractions whose value is <= F (less: < F). States: 0 start, 1 + i: after '.' and i digits
// equal to F's, k + 2: already less (any digits), k + 3: all of F read then zeros (F = 0 case).
Dfa fraction_at_most(const std::string& F, bool less) {
  const size_t k = F.size();
  Dfa d;
  d.states.resize(k + 3);
  const uint32_t any = static_cast<uint32_t>(k + 2);
  d.states[0].final = !less || k > 0;
  d.states[0].bytes.push_back({'.', '.', 1});
  for (size_t i = 0; i < k; ++i) {
    auto& st = d.states[1 + i];
    const uint8_t f = static_cast<uint8_t>(F[i]);
    st.final = i > 0;  // a proper prefix of F followed by nothing is less than F
    if (f > '0') st.bytes.push_back({'0', static_cast<uint8_t>(f - 1), any});
    st.bytes.push_back({f, f, static_cast<uint32_t>(2 + i)});
  }
  auto& eq = d.states[1 + k];
  eq.final = !less && k > 0;
  if (!less) {
    // zeros keep the value equal; after '.' with F = "" the first zero makes it final
    if (k == 0) {
      d.states.push_back({});
      const uint32_t zeros = static_cast<uint32_t>(d.states.size() - 1);
      d.states[1].bytes.push_back({'0', '0', zeros});
      d.states[zeros].final = true;
      d.states[zeros].bytes.push_back({'0', '0', zeros});
    } else {
      eq.bytes.push_back({'0', '0', static_cast<uint32_t>(1 + k)});
    }
  }
  d.states[any].final = true;
  d.states[any].bytes.push_back({'0', '9', any});
  trim(d);
  return d;
}

// Integer part `v` exactly, then a fraction from `frac`.
Frag int_then(Nfa& n, uint64_t v, const Dfa& frac) { return n.seq(decimal_range(n, v, v, false), embed(n, frac)); }

Frag any_fraction(Nfa& n) { return n.opt(n.seq(n.literal("."), n.plus(n.byte_range('0', '9')))); }

// Non-negative x with lo (<, <=) x (<, <=) hi (lo: x >= 0 when null; hi: unbounded when null).
Frag magnitude_between(Nfa& n, const Decimal* lo, bool lo_excl, const Decimal* hi, bool hi_excl) {
  static const Decimal kZero;
  if (!lo) lo = &kZero;
  const uint64_t a = lo->ip;
  std::vector<Frag> alts;
  if (hi && hi->ip < a) return n.alt({});
  // integer parts strictly between: any fraction
  if (!hi) alts.push_back(n.seq(decimal_range(n, a + 1, 0, true), any_fraction(n)));
  else if (hi->ip >= 2 && a + 1 <= hi->ip - 1) alts.push_back(n.seq(decimal_range(n, a + 1, hi->ip - 1, false), any_fraction(n)));
  Dfa lo_frac = fraction_at_least(lo->frac, lo_excl);
  if (hi && hi->ip == a) {
    Dfa both = intersect(lo_frac, fraction_at_most(hi->frac, hi_excl), false, 1000);
    if (!both.states.empty()) alts.push_back(int_then(n, a, both));
  } else {
    if (!lo_frac.states.empty()) alts.push_back(int_then(n, a, lo_frac));
    if (hi) {
      Dfa hi_frac = fraction_at_most(hi->frac, hi_excl);
      if (!hi_frac.states.empty()) alts.push_back(int_then(n, hi->ip, hi_frac));
    }
  }
  return n.alt(alts);
}

uint64_t mulmod(uint64_t a, uint64_t b, uint64_t m) { return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) % m); }

}  // namespace

Frag decimal_between(Nfa& n, const Decimal* lo, bool lo_excl, const Decimal* hi, bool hi_excl) {
  std::vector<Frag> alts;
  // x >= 0: unless hi < 0, or hi == 0 exclusive
  if (!hi || (!hi->neg && !(hi->is_zero() && hi_excl))) {
    const bool lo_nonneg = lo && !lo->neg;  // else x >= 0 inclusive
    alts.push_back(magnitude_between(n, lo_nonneg ? lo : nullptr, lo_nonneg && lo_excl, hi, hi_excl));
  }
  // x < 0, x = -m with m > 0: m <= -lo (lo < 0), m >= -hi (hi < 0); "-0" is left out (a subset)
  if (!lo || lo->neg) {
    Decimal mlo, mhi;
    const Decimal* plo = &mlo;  // zero
    bool plo_excl = true;       // m > 0
    if (hi && hi->neg) {
      mlo = *hi;
      mlo.neg = false;
      plo = &mlo;
      plo_excl = hi_excl;
    }
    const Decimal* phi = nullptr;
    if (lo) {
      mhi = *lo;
      mhi.neg = false;
      phi = &mhi;
    }
    alts.push_back(n.seq(n.literal("-"), magnitude_between(n, plo, plo_excl, phi, lo_excl)));
  }
  return n.alt(alts);
}

Dfa multiple_of_dfa(const Decimal& m, size_t max_states) {
  // m = p / 10^k
  const size_t k = m.frac.size();
  unsigned __int128 p128 = m.ip;
  for (char c : m.frac) p128 = p128 * 10 + static_cast<unsigned>(c - '0');
  if (p128 == 0 || p128 > (static_cast<unsigned __int128>(1) << 62)) throw CompileError("multipleOf too large");
  const uint64_t p = static_cast<uint64_t>(p128);
  if (static_cast<unsigned __int128>(p) * (k + 2) + 4 > max_states) too_many_states(max_states);
  // states: 0 start, 1 after '-', 2 after a leading '0', 3 + r: integer digits with remainder r,
  // then per fraction position j = 1..k and remainder r: 3 + p + (j - 1) p + r (j = k loops on '0');
  // 3 + p + k p + r: right after '.' (no digit yet) with remainder r.
  const size_t nstates = 3 + p + k * p + p;
  Dfa d;
  d.states.resize(nstates);
  auto int_state = [&](uint64_t r) { return static_cast<uint32_t>(3 + r); };
  auto frac_state = [&](size_t j, uint64_t r) { return static_cast<uint32_t>(3 + p + (j - 1) * p + r); };
  auto dot_state = [&](uint64_t r) { return static_cast<uint32_t>(3 + p + k * p + r); };
  std::vector<uint64_t> pow10(k + 1, 1 % p);
  for (size_t j = 1; j <= k; ++j) pow10[j] = mulmod(pow10[j - 1], 10, p);
  auto int_digits = [&](uint32_t from, uint64_t r) {
    for (int c = 0; c <= 9; ++c) d.states[from].bytes.push_back({static_cast<uint8_t>('0' + c), static_cast<uint8_t>('0' + c), int_state((mulmod(r, 10, p) + c) % p)});
  };
  for (uint32_t s : {0u, 1u}) {
    d.states[s].bytes.push_back({'0', '0', 2});
    for (int c = 1; c <= 9; ++c) d.states[s].bytes.push_back({static_cast<uint8_t>('0' + c), static_cast<uint8_t>('0' + c), int_state(static_cast<uint64_t>(c) % p)});
  }
  d.states[0].bytes.insert(d.states[0].bytes.begin(), {'-', '-', 1});
  // after "0": value 0 so far
  d.states[2].final = true;
  d.states[2].bytes.push_back({'.', '.', dot_state(0)});
  for (uint64_t r = 0; r < p; ++r) {
    auto& st = d.states[int_state(r)];
    st.final = mulmod(r, pow10[k], p) == 0;
    st.bytes.push_back({'.', '.', dot_state(r)});
    int_digits(int_state(r), r);
    // sort: '.' (0x2e) comes before the digits already
    auto& dt = d.states[dot_state(r)];
    if (k == 0) {
      dt.bytes.push_back({'0', '0', dot_state(r)});  // only zeros after the point; final once one is read
    } else {
      for (int c = 0; c <= 9; ++c)
        dt.bytes.push_back({static_cast<uint8_t>('0' + c), static_cast<uint8_t>('0' + c), frac_state(1, (mulmod(r, 10, p) + c) % p)});
    }
    for (size_t j = 1; j <= k; ++j) {
      auto& fs = d.states[frac_state(j, r)];
      fs.final = mulmod(r, pow10[k - j], p) == 0;
      if (j < k) {
        for (int c = 0; c <= 9; ++c)
          fs.bytes.push_back({static_cast<uint8_t>('0' + c), static_cast<uint8_t>('0' + c), frac_state(j + 1, (mulmod(r, 10, p) + c) % p)});
      } else {
        fs.bytes.push_back({'0', '0', frac_state(k, r)});
      }
    }
  }
  if (k == 0) {
    // integer multiples: after '.', zeros only, and at least one: a separate "zeros read" state per r
    // is not needed: the value is r * 1 with r == 0 required; reuse: dot_state(r) loops on '0' and
    // is final when r == 0 and a zero was read, so split it into "dot" and "dot+zeros"
    const size_t base = d.states.size();
    d.states.resize(base + p);
    for (uint64_t r = 0; r < p; ++r) {
      d.states[dot_state(r)].bytes.clear();
      d.states[dot_state(r)].bytes.push_back({'0', '0', static_cast<uint32_t>(base + r)});
      d.states[base + r].final = r == 0;
      d.states[base + r].bytes.push_back({'0', '0', static_cast<uint32_t>(base + r)});
    }
  }
  trim(d);
  return d;
}

}  // namespace toolken
