// CPU application of a token bitmask to logits, in place: the decode hot path when the logits
// live on the CPU (one [1, V] row per step). The same contract as toolken.kernels'
// apply_token_bitmask_: bit j % 32 of word j / 32 set = token j allowed; tokens at or beyond
// 32 * words are disallowed; a disallowed logit becomes -inf. Logits are handled as raw bit
// patterns of their width (2 bytes for bf16/fp16, 4 for fp32), so one loop serves every dtype:
// the caller passes the bit pattern of -inf. Words with every bit set are skipped and words
// with none set are filled whole, so a mostly-open or mostly-closed mask costs one pass over
// the words, not over the vocabulary.
#include "bitmask_apply.h"

#include <cstring>

namespace toolken {
namespace {

template <typename T>
void mask_row(T* x, size_t vocab, const int32_t* words, size_t num_words, T neg_inf) {
  const size_t covered = vocab < 32 * num_words ? vocab : 32 * num_words;
  const size_t full = covered / 32;
  for (size_t w = 0; w < full; ++w) {
    uint32_t word = static_cast<uint32_t>(words[w]);
    if (word == 0xFFFFFFFFu) continue;
    T* block = x + 32 * w;
    if (word == 0) {
      for (int j = 0; j < 32; ++j) block[j] = neg_inf;
      continue;
    }
    for (uint32_t off = ~word; off; off &= off - 1) block[__builtin_ctz(off)] = neg_inf;
  }
  if (full * 32 < covered) {  // a partial last word
    uint32_t word = static_cast<uint32_t>(words[full]);
    for (size_t j = full * 32; j < covered; ++j)
      if (!((word >> (j - full * 32)) & 1u)) x[j] = neg_inf;
  }
  for (size_t j = covered; j < vocab; ++j) x[j] = neg_inf;  // beyond the mask's vocabulary
}

}  // namespace

void apply_token_bitmask_rows(void* logits, size_t elem_size, size_t vocab, size_t logits_stride,
                              const int32_t* bitmask, size_t num_words, const int64_t* rows, size_t num_rows,
                              uint32_t neg_inf_bits) {
  for (size_t k = 0; k < num_rows; ++k) {
    const size_t r = static_cast<size_t>(rows[k]);
    const int32_t* words = bitmask + r * num_words;
    if (elem_size == 4) {
      mask_row(static_cast<uint32_t*>(logits) + r * logits_stride, vocab, words, num_words, neg_inf_bits);
    } else {
      mask_row(static_cast<uint16_t*>(logits) + r * logits_stride, vocab, words, num_words,
               static_cast<uint16_t>(neg_inf_bits));
    }
  }
}

}  // namespace toolken
