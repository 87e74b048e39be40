// pybind11 bindings: module toolken._grammar. Thin by design; toolken/grammar.py is the typed
// API and the manual. Every call that computes a mask or compiles releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <mutex>

#include "json_schema_converter.h"
#include "matcher.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace toolken;

namespace {

// Holds a matcher's mutex for its lifetime. Built with -DTOOLKEN_NO_MATCHER_LOCK it holds nothing:
// a measurement build for the lock's cost only (benchmarks), never the shipped extension.
struct MatcherGuard {
#ifdef TOOLKEN_NO_MATCHER_LOCK
  explicit MatcherGuard(Matcher&) {}
#else
  explicit MatcherGuard(Matcher& mt) : lock(mt.mutex()) {}
  std::lock_guard<std::mutex> lock;
#endif
};

// Runs f() holding mt's mutex, with the GIL released while waiting for it and while f runs.
template <class F>
auto locked(Matcher& mt, F f) -> decltype(f()) {
  py::gil_scoped_release nogil;
  MatcherGuard guard(mt);
  return f();
}

int32_t* row_pointer(py::array& arr, int64_t row, size_t words) {
  if (arr.ndim() != 2) throw ArgumentError("bitmask must be a 2-D int32 array [batch, ceil(vocab_size/32)]");
  if (!arr.dtype().is(py::dtype::of<int32_t>())) throw ArgumentError("bitmask must have dtype int32");
  if (!arr.writeable()) throw ArgumentError("bitmask is read-only");
  if (arr.strides(1) != 4) throw ArgumentError("bitmask rows must be contiguous");
  if (static_cast<size_t>(arr.shape(1)) < words)
    throw ArgumentError("bitmask has " + std::to_string(arr.shape(1)) + " words per row, the vocabulary needs " + std::to_string(words));
  if (row < 0 || row >= arr.shape(0)) throw ArgumentError("bitmask row " + std::to_string(row) + " out of range");
  return reinterpret_cast<int32_t*>(static_cast<char*>(arr.mutable_data()) + row * arr.strides(0));
}

std::shared_ptr<CompiledGrammar> compile(const std::string& schema, std::shared_ptr<Vocabulary> vocab, bool flexible,
                                         int max_whitespace, bool strict, bool one_of_any, bool canonical,
                                         bool any_order, int max_unrolled_length) {
  if (!vocab) throw ArgumentError("compile_json_schema needs a Vocabulary, got None");
  if (flexible && canonical) throw ArgumentError("canonical separators exclude flexible whitespace");
  SchemaOptions o;
  o.canonical_separators = canonical;
  o.one_of_any = one_of_any;
  o.flexible_whitespace = flexible;
  o.max_whitespace = max_whitespace;
  o.strict = strict;
  o.any_order = any_order;
  if (max_unrolled_length < 0) throw ArgumentError("max_unrolled_length must be >= 0");
  o.max_unrolled_length = max_unrolled_length;
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
  py::register_exception<ArgumentError>(m, "ArgumentError", PyExc_ValueError);

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
        if (i >= v.num_tokens()) throw ArgumentError("token id out of range");
        return py::bytes(v.token(i));
      });

  m.def("max_vocabulary_size", &Vocabulary::max_size, py::arg("num_tokens"),
        "Largest mask width a Vocabulary of num_tokens tokens accepts.");

  py::class_<CompiledGrammar, std::shared_ptr<CompiledGrammar>>(m, "CompiledGrammar")
      .def_property_readonly("memory_bytes", &CompiledGrammar::memory_bytes)
      .def_property_readonly("num_rules", [](const CompiledGrammar& c) { return c.grammar().rules.size(); })
      .def_property_readonly("num_nodes", [](const CompiledGrammar& c) { return c.grammar().num_nodes(); })
      .def_property_readonly("vocab", &CompiledGrammar::vocab_ptr)
      .def("dump", [](const CompiledGrammar& c) { return c.grammar().to_string(); });

  m.def("compile_json_schema", &compile, py::arg("schema"), py::arg("vocab"), py::arg("flexible_whitespace"),
        py::arg("max_whitespace"), py::arg("strict"), py::arg("one_of_any") = false, py::arg("canonical") = false,
        py::arg("any_order") = false, py::arg("max_unrolled_length") = kMaxUnrolledLength,
        "max_unrolled_length: string length bounds above it are counted in the matcher state instead of "
        "unrolled into automaton states (the default suits every use; tests lower it to exercise the counters).");

  // Every Matcher method runs under the matcher's mutex, taken with the GIL released (a thread
  // waiting for a matcher never blocks the interpreter; a thread holding it never needs the GIL).
  py::class_<Matcher>(m, "Matcher")
      .def(py::init([](std::shared_ptr<CompiledGrammar> cg) {
        if (!cg) throw ArgumentError("Matcher needs a CompiledGrammar, got None");
        return std::make_unique<Matcher>(std::move(cg));
      }))
      .def("fill_next_token_bitmask",
           [](Matcher& mt, py::array arr, int64_t row) {
             int32_t* p = row_pointer(arr, row, (mt.compiled().vocab().size() + 31) / 32);
             py::gil_scoped_release nogil;
             MatcherGuard guard(mt);
             mt.fill_next_token_bitmask(p);
           })
      .def("accept_token", [](Matcher& mt, int64_t id) { return locked(mt, [&]() { return mt.accept_token(id); }); })
      .def("accept_bytes", [](Matcher& mt, const py::bytes& b) {
        std::string s = b;
        return locked(mt, [&]() { return mt.accept_bytes(s); });
      })
      .def("rollback", [](Matcher& mt, size_t n) { locked(mt, [&]() { mt.rollback(n); }); })
      .def("reset", [](Matcher& mt) { locked(mt, [&]() { mt.reset(); }); })
      .def("is_terminated", [](Matcher& mt) { return locked(mt, [&]() { return mt.is_terminated(); }); })
      .def("can_terminate", [](Matcher& mt) { return locked(mt, [&]() { return mt.can_terminate(); }); })
      .def_property_readonly("num_accepted", [](Matcher& mt) { return locked(mt, [&]() { return mt.num_accepted(); }); })
      .def("copy", [](Matcher& mt) { return locked(mt, [&]() { return std::make_unique<Matcher>(mt); }); })
      .def("find_jump_forward_bytes", [](Matcher& mt) {
        std::string s = locked(mt, [&]() { return mt.find_jump_forward_bytes(); });
        return py::bytes(s);
      });

  m.def(
      "fill_next_token_bitmasks",
      [](const std::vector<Matcher*>& matchers, py::array arr, int num_threads) {
        std::vector<int32_t*> rows;
        for (size_t i = 0; i < matchers.size(); ++i)
          rows.push_back(row_pointer(arr, static_cast<int64_t>(i), (matchers[i]->compiled().vocab().size() + 31) / 32));
        {  // a matcher twice in one batch would race with itself on the worker threads: refuse it
          std::vector<Matcher*> sorted(matchers);
          std::sort(sorted.begin(), sorted.end());
          if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
            throw ArgumentError("a matcher appears more than once in the batch");
        }
        py::gil_scoped_release nogil;
        auto fill = [&](size_t i) {
          MatcherGuard guard(*matchers[i]);  // one matcher locked at a time: no deadlock
          matchers[i]->fill_next_token_bitmask(rows[i]);
        };
        size_t nt = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(num_threads, 1)), matchers.size()));
        if (nt == 1) {
          for (size_t i = 0; i < matchers.size(); ++i) fill(i);
          return;
        }
        WorkerPool::get().run(matchers.size(), nt, fill);
      },
      py::arg("matchers"), py::arg("bitmask"), py::arg("num_threads"));
}
