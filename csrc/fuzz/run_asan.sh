#!/usr/bin/env bash
# Build toolken._grammar with AddressSanitizer + UBSan into a scratch copy of the package and
# run the fuzz corpus (fuzz_corpus.py) against it. Any memory error aborts with a report.
#
#   csrc/fuzz/run_asan.sh                       # default corpus (~2-4 minutes on 2 cores, build included)
#   N_SCHEMAS=5509 csrc/fuzz/run_asan.sh        # every MaskBench schema
#   FUZZ_MODE=threads HAMMER_SECONDS=10 csrc/fuzz/run_asan.sh   # 8 threads hammering one matcher
#   FUZZ_MODE=all csrc/fuzz/run_asan.sh         # corpus, then the thread hammer
#
# Environment: PYTHON (default: `python` on PATH; use the project's venv, it needs numpy and
# pybind11), CXX (default g++, with libasan/libubsan), FUZZ_MODE (corpus | threads | all),
# N_SCHEMAS, HAMMER_SECONDS. The scratch copy holds the whole toolken/ tree (subpackages
# included, native builds left out) and kernels/ as toolken/kernels, so imports resolve as in an
# installed package; only _grammar is native there (the ASan build).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python}"
CXX="${CXX:-g++}"
OUT="$(mktemp -d /tmp/toolken-asan.XXXXXX)"
cp -r "$ROOT/toolken" "$OUT/toolken"
rm -rf "$OUT/toolken/kernels"
cp -r "$ROOT/kernels" "$OUT/toolken/kernels"
find "$OUT/toolken" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
EXT="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
INC="$("$PY" -c 'import pybind11, sysconfig; print(pybind11.get_include(), sysconfig.get_paths()["include"])')"
FLAGS="-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -fPIC -shared"
echo "building ASan extension in $OUT ..."
"$CXX" $FLAGS $(for d in $INC; do echo -I"$d"; done) -I"$ROOT/csrc" "$ROOT"/csrc/*.cc -o "$OUT/toolken/_grammar$EXT"
ASAN_LIB="$("$CXX" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CXX" -print-file-name=libubsan.so)"
echo "running fuzz (${FUZZ_MODE:-corpus}) under ASan ..."
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
  PYTHONPATH="$OUT" TOOLKEN_ROOT="$ROOT" "$PY" "$ROOT/csrc/fuzz/fuzz_corpus.py"
echo "ASan fuzz run finished without errors"
