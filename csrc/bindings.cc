// pybind11 bindings: module toolken._grammar. Thin by design; toolken/grammar.py is the typed
// API and the manual. Every call that computes a mask or compiles releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "json_schema_converter.h"
#include "matcher.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace toolken;

namespace {

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
        WorkerPool::get().run(matchers.size(), nt, [&](size_t i) { matchers[i]->fill_next_token_bitmask(rows[i]); });
      },
      py::arg("matchers"), py::arg("bitmask"), py::arg("num_threads"));
}
