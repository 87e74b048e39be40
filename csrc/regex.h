// JSON Schema `pattern` (and `format`) regexes compiled to byte automata over JSON-encoded
// string content.
//
// Supported subset (ECMA-262 / Python `re` common ground): literals (any Unicode), `.`,
// classes `[...]`/`[^...]` with ranges, `\d \w \s \D \W \S`, escapes `\n \r \t \f \v \0 \xHH
// \uHHHH` and escaped punctuation, groups `(...)`, `(?:...)`, `(?<name>...)`, `(?P<name>...)`,
// alternation, quantifiers `* + ? {n} {n,} {n,m}` (lazy forms accepted: same language), and
// anchors `^`/`$` (`\A`, `\Z`, `\z`) anywhere: at the start/end of top-level alternatives they
// are stripped; elsewhere (in groups, alternatives, repetitions) the alternative is built with
// anchor markers and a product that tracks whether a byte was read yet and whether a `$`
// passed. Everything else (backreferences, lookaround, `\b`, flags, possessive quantifiers,
// `\p{..}`, a quantified anchor) is a CompileError.
//
// Semantics are chosen so the accepted language is a subset of what Python's `re.search`
// accepts (never a superset): `\d \w \s` are ASCII, their negations are ASCII complements, `.`
// excludes `\n \r U+2028 U+2029`, and `$` does not match before a trailing newline.
// Unanchored patterns get `.*` on the open side (JSON Schema patterns are searches).
#pragma once

#include <string>

#include "json_encoding.h"

namespace toolken {

// Fragment matching the encoded content (no quotes) of every JSON string whose decoded text
// is matched by `pattern` under search semantics. Throws CompileError on unsupported syntax.
Frag compile_pattern(Nfa& nfa, const std::string& pattern);

// Same, anchored at both ends regardless of `^`/`$` (used for built-in formats).
Frag compile_anchored_pattern(Nfa& nfa, const std::string& pattern);

}  // namespace toolken
