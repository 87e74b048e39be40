// The one exception type the compiler throws for user-caused problems (unsupported keyword,
// invalid schema or pattern, a size limit exceeded). The Python layer maps it to
// toolken.GrammarError; the message names the keyword and its JSON pointer where known.
#pragma once

#include <stdexcept>
#include <string>

namespace toolken {

struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace toolken
