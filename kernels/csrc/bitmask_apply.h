// Token bitmask applied to CPU logits in place (see bitmask_apply.cc).
#pragma once

#include <cstddef>
#include <cstdint>

namespace toolken {

// For each r in rows[0..num_rows): logits row r (elements of elem_size 2 or 4 bytes, row r
// starting at element r * logits_stride) masked by bitmask row r (num_words int32 words):
// disallowed tokens get the bit pattern neg_inf_bits (its low 16 bits for 2-byte elements).
// The caller checks bounds; this never allocates.
void apply_token_bitmask_rows(void* logits, size_t elem_size, size_t vocab, size_t logits_stride,
                              const int32_t* bitmask, size_t num_words, const int64_t* rows, size_t num_rows,
                              uint32_t neg_inf_bits);

}  // namespace toolken
