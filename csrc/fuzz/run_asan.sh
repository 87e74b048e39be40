#!/usr/bin/env bash
# Build toolken._grammar with AddressSanitizer + UBSan into a scratch copy of the package and
# run the fuzz corpus (fuzz_corpus.py) against it. Any memory error aborts with a report.
#
#   csrc/fuzz/run_asan.sh            # default corpus (~2-4 minutes on 2 cores, build included)
#   N_SCHEMAS=5509 csrc/fuzz/run_asan.sh   # every MaskBench schema
#
# Needs g++ with libasan, the project venv (PYTHON, default /work/venv/bin/python) and pybind11.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-/work/venv/bin/python}"
OUT="$(mktemp -d /tmp/toolken-asan.XXXXXX)"
mkdir -p "$OUT/toolken"
cp "$ROOT"/toolken/*.py "$OUT/toolken/"
EXT="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
INC="$("$PY" -c 'import pybind11, sysconfig; print(pybind11.get_include(), sysconfig.get_paths()["include"])')"
FLAGS="-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -fPIC -shared"
echo "building ASan extension in $OUT ..."
g++ $FLAGS $(for d in $INC; do echo -I"$d"; done) -I"$ROOT/csrc" "$ROOT"/csrc/*.cc -o "$OUT/toolken/_grammar$EXT"
ASAN_LIB="$(g++ -print-file-name=libasan.so)"
UBSAN_LIB="$(g++ -print-file-name=libubsan.so)"
echo "running fuzz corpus under ASan ..."
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
  PYTHONPATH="$OUT" TOOLKEN_ROOT="$ROOT" "$PY" "$ROOT/csrc/fuzz/fuzz_corpus.py"
echo "ASan fuzz run finished without errors"
