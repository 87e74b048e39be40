// The exception types the engine throws for user-caused problems. The Python layer
// (toolken/grammar.py) maps both to toolken.GrammarError.
//   CompileError:  a schema cannot be compiled (unsupported keyword, invalid schema or pattern, a
//                  size limit exceeded); the message names the keyword and its JSON pointer.
//   ArgumentError: a call got an invalid argument (a bitmask of the wrong shape or dtype, a
//                  rollback past the start, an invalid vocabulary); the message names it.
#pragma once

#include <stdexcept>
#include <string>

namespace toolken {

struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace toolken
