// pybind11 bindings: module toolken._grammar. Thin by design; toolken/grammar.py is the typed
// API and the manual. Every call that computes a mask or compiles releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "bitmask_apply.h"
#include "json_schema_converter.h"
#include "matcher.h"

namespace py = pybind11;
using namespace toolken;

namespace {

// Persistent worker threads for batch mask filling: spawning threads per call costs more than
// a warm mask (a few microseconds). Detached workers and one pool per process id, so that a
// forked child (multiprocessing) builds its own instead of waiting on its parent's threads.
class FillPool {
 public:
  static FillPool& get() {
    static std::mutex mu;
    static FillPool* pool = nullptr;
    std::lock_guard<std::mutex> lock(mu);
    if (!pool || pool->pid_ != getpid()) pool = new FillPool();  // a stale parent's pool is leaked
    return *pool;
  }
  // Calls fn(i) for every i in [0, n) on `threads` threads (the caller's included).
  void run(size_t n, size_t threads, const std::function<void(size_t)>& fn) {
    std::lock_guard<std::mutex> serial(run_mu_);
    size_t helpers = threads - 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (num_workers_ < helpers) {
        std::thread([this, id = num_workers_]() { loop(id); }).detach();
        ++num_workers_;
      }
      job_ = &fn;
      n_ = n;
      next_ = 0;
      wanted_ = helpers;
      remaining_ = helpers;
      err_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&]() { return remaining_ == 0; });
    job_ = nullptr;
    if (err_) std::rethrow_exception(err_);
  }

 private:
  FillPool() : pid_(getpid()) {}
  void work() {
    for (size_t i; (i = next_.fetch_add(1)) < n_;) {
      try {
        (*job_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        err_ = std::current_exception();
      }
    }
  }
  void loop(size_t id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&]() { return generation_ != seen && id < wanted_; });
      seen = generation_;
      lock.unlock();
      work();
      lock.lock();
      if (--remaining_ == 0) done_.notify_all();
    }
  }
  pid_t pid_;
  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_;
  size_t num_workers_ = 0, n_ = 0, wanted_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
  std::atomic<size_t> next_{0};
  const std::function<void(size_t)>* job_ = nullptr;
  std::exception_ptr err_;
};

int32_t* row_pointer(py::array& arr, int64_t row, size_t words) {
  if (arr.ndim() != 2) throw py::value_error("bitmask must be a 2-D int32 array [batch, ceil(vocab_size/32)]");
  if (!arr.dtype().is(py::dtype::of<int32_t>())) throw py::value_error("bitmask must have dtype int32");
  if (!arr.writeable()) throw py::value_error("bitmask is read-only");
  if (arr.strides(1) != 4) throw py::value_error("bitmask rows must be contiguous");
  if (static_cast<size_t>(arr.shape(1)) < words)
    throw py::value_error("bitmask has " + std::to_string(arr.shape(1)) + " words per row, the vocabulary needs " + std::to_string(words));
  if (row < 0 || row >= arr.shape(0)) throw py::index_error("bitmask row " + std::to_string(row) + " out of range");
  return reinterpret_cast<int32_t*>(static_cast<char*>(arr.mutable_data()) + row * arr.strides(0));
}

std::shared_ptr<CompiledGrammar> compile(const std::string& schema, std::shared_ptr<Vocabulary> vocab, bool flexible,
                                         int max_whitespace, bool strict, bool one_of_any) {
  SchemaOptions o;
  o.one_of_any = one_of_any;
  o.flexible_whitespace = flexible;
  o.max_whitespace = max_whitespace;
  o.strict = strict;
  Grammar g;
  {
    py::gil_scoped_release nogil;
    g = json_schema_to_grammar(schema, o);
  }
  return std::make_shared<CompiledGrammar>(std::move(g), std::move(vocab));
}

}  // namespace

PYBIND11_MODULE(_grammar, m) {
  m.doc() = "toolken C++ grammar engine (JSON Schema -> token bitmask)";
  py::register_exception<CompileError>(m, "CompileError", PyExc_ValueError);

  py::class_<Vocabulary, std::shared_ptr<Vocabulary>>(m, "Vocabulary")
      .def(py::init([](const std::vector<py::object>& tokens, std::vector<int32_t> stop_ids, size_t size) {
             std::vector<std::string> bytes;
             bytes.reserve(tokens.size());
             for (const auto& t : tokens) bytes.push_back(t.is_none() ? std::string() : t.cast<std::string>());
             py::gil_scoped_release nogil;
             return std::make_shared<Vocabulary>(std::move(bytes), std::move(stop_ids), size);
           }),
           py::arg("tokens"), py::arg("stop_ids"), py::arg("size"))
      .def_property_readonly("size", &Vocabulary::size)
      .def_property_readonly("num_tokens", &Vocabulary::num_tokens)
      .def_property_readonly("stop_ids", &Vocabulary::stop_ids)
      .def("token_bytes", [](const Vocabulary& v, size_t i) {
        if (i >= v.num_tokens()) throw py::index_error("token id out of range");
        return py::bytes(v.token(i));
      });

  py::class_<CompiledGrammar, std::shared_ptr<CompiledGrammar>>(m, "CompiledGrammar")
      .def_property_readonly("memory_bytes", &CompiledGrammar::memory_bytes)
      .def_property_readonly("num_rules", [](const CompiledGrammar& c) { return c.grammar().rules.size(); })
      .def_property_readonly("num_nodes", [](const CompiledGrammar& c) { return c.grammar().num_nodes(); })
      .def_property_readonly("vocab", &CompiledGrammar::vocab_ptr)
      .def("dump", [](const CompiledGrammar& c) { return c.grammar().to_string(); });

  m.def("compile_json_schema", &compile, py::arg("schema"), py::arg("vocab"), py::arg("flexible_whitespace"),
        py::arg("max_whitespace"), py::arg("strict"), py::arg("one_of_any") = false);

  py::class_<Matcher>(m, "Matcher")
      .def(py::init([](std::shared_ptr<CompiledGrammar> cg) { return std::make_unique<Matcher>(std::move(cg)); }))
      .def("fill_next_token_bitmask",
           [](Matcher& mt, py::array arr, int64_t row) {
             int32_t* p = row_pointer(arr, row, (mt.compiled().vocab().size() + 31) / 32);
             py::gil_scoped_release nogil;
             mt.fill_next_token_bitmask(p);
           })
      .def("accept_token", &Matcher::accept_token, py::call_guard<py::gil_scoped_release>())
      .def("accept_bytes", [](Matcher& mt, const py::bytes& b) {
        std::string s = b;
        py::gil_scoped_release nogil;
        return mt.accept_bytes(s);
      })
      .def("rollback", &Matcher::rollback)
      .def("reset", &Matcher::reset)
      .def("is_terminated", &Matcher::is_terminated)
      .def("can_terminate", &Matcher::can_terminate)
      .def_property_readonly("num_accepted", &Matcher::num_accepted)
      .def("copy", [](const Matcher& mt) { return std::make_unique<Matcher>(mt); })
      .def("find_jump_forward_bytes", [](Matcher& mt) { return py::bytes(mt.find_jump_forward_bytes()); });

  m.def(
      "fill_next_token_bitmasks",
      [](const std::vector<Matcher*>& matchers, py::array arr, int num_threads) {
        std::vector<int32_t*> rows;
        for (size_t i = 0; i < matchers.size(); ++i)
          rows.push_back(row_pointer(arr, static_cast<int64_t>(i), (matchers[i]->compiled().vocab().size() + 31) / 32));
        py::gil_scoped_release nogil;
        size_t nt = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(num_threads, 1)), matchers.size()));
        if (nt == 1) {
          for (size_t i = 0; i < matchers.size(); ++i) matchers[i]->fill_next_token_bitmask(rows[i]);
          return;
        }
        FillPool::get().run(matchers.size(), nt, [&](size_t i) { matchers[i]->fill_next_token_bitmask(rows[i]); });
      },
      py::arg("matchers"), py::arg("bitmask"), py::arg("num_threads"));

  // toolken.kernels' CPU path of apply_token_bitmask_: logits as a [B, V] integer view (int16
  // for bf16/fp16, int32 for fp32) whose rows are contiguous, bitmask int32 [B', W], rows int64.
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
        apply_token_bitmask_rows(x, isz, vocab, stride, mask, words, r, n, neg_inf_bits);
      },
      py::arg("logits"), py::arg("bitmask"), py::arg("rows"), py::arg("neg_inf_bits"));
}
