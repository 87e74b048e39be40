// pybind11 module toolken.kernels._bitmask_cpu: the CPU path of apply_token_bitmask_ (see
// bitmask_apply.h), separate from the grammar engine so that the kernels never import it.
//
// apply_token_bitmask_cpu(logits, bitmask, rows, neg_inf_bits): logits as a [B, V] integer view
// (int16 for bf16/fp16, int32 for fp32) whose rows are contiguous, bitmask int32 [B', W]
// C-contiguous, rows int64 (the logits rows to mask, each < min(B, B')). The GIL is released
// while the loop runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>

#include "bitmask_apply.h"

namespace py = pybind11;

PYBIND11_MODULE(_bitmask_cpu, m) {
  m.doc() = "toolken.kernels: token bitmask applied to CPU logits in place (C++ loop)";
  m.def(
      "apply_token_bitmask_cpu",
      [](py::array logits, py::array_t<int32_t, py::array::c_style> bitmask, py::array_t<int64_t, py::array::c_style> rows,
         uint32_t neg_inf_bits) {
        const auto isz = static_cast<size_t>(logits.itemsize());
        if (logits.ndim() != 2 || bitmask.ndim() != 2 || rows.ndim() != 1)
          throw py::value_error("apply_token_bitmask_cpu: logits and bitmask must be 2-D, rows 1-D");
        if ((isz != 2 && isz != 4) || logits.dtype().kind() != 'i')
          throw py::value_error("apply_token_bitmask_cpu: logits must be an int16 or int32 view");
        if (!logits.writeable()) throw py::value_error("apply_token_bitmask_cpu: logits are read-only");
        if (logits.strides(1) != static_cast<py::ssize_t>(isz) || logits.strides(0) < 0 ||
            logits.strides(0) % static_cast<py::ssize_t>(isz) != 0)
          throw py::value_error("apply_token_bitmask_cpu: logits rows must be contiguous");
        const auto limit = std::min<int64_t>(logits.shape(0), bitmask.shape(0));
        const int64_t* r = rows.data();
        for (py::ssize_t k = 0; k < rows.shape(0); ++k)
          if (r[k] < 0 || r[k] >= limit) throw py::index_error("apply_token_bitmask_cpu: row index out of range");
        void* x = logits.mutable_data();
        const size_t vocab = static_cast<size_t>(logits.shape(1)), stride = static_cast<size_t>(logits.strides(0)) / isz;
        const size_t words = static_cast<size_t>(bitmask.shape(1)), n = static_cast<size_t>(rows.shape(0));
        const int32_t* mask = bitmask.data();
        py::gil_scoped_release nogil;
        toolken::apply_token_bitmask_rows(x, isz, vocab, stride, mask, words, r, n, neg_inf_bits);
      },
      py::arg("logits"), py::arg("bitmask"), py::arg("rows"), py::arg("neg_inf_bits"));
}
