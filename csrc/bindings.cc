// pybind11 bindings of the grammar engine (placeholder until the engine lands).
#include <pybind11/pybind11.h>
PYBIND11_MODULE(_grammar, m) { m.doc() = "toolken C++ grammar engine"; }
