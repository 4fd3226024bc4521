#!/usr/bin/env bash
# sanitize.sh — build cfsp-mpi with ASan+UBSan (CMAKE_BUILD_TYPE=Sanitize, gcc) into build-sanitize
# and run the whole ctest suite under it. Sanitizer reports go to build-sanitize/sanitizer-logs
# (tests/sanitize/env.sh); the script fails if ctest fails or if any report was written, and prints
# the reports. LeakSanitizer suppressions: tests/sanitize/lsan.supp (third-party libraries only).
#   mpi_scripts/sanitize.sh [extra ctest arguments, e.g. -R bad_]
#   CFSP_SANITIZE_BUILD_DIR=/tmp/build-sanitize CTEST_JOBS=2 mpi_scripts/sanitize.sh
# sanitize_subset and valgrind_e2e are not registered in a Sanitize build (they build / run their own
# binaries). About 10-15 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${CFSP_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
# install what is missing, configure + build $B (Sanitize), set the MPI environment
export CFSP_BUILD_DIR="$B" CFSP_BUILD_TYPE=Sanitize CC="${CC:-gcc}"
source "$ROOT/mpi_scripts/setup.sh"
export SAN_LOGS="$B/sanitizer-logs"
rm -rf "$SAN_LOGS"
source "$ROOT/tests/sanitize/env.sh"
cd "$B"
t0=$(date +%s)
rc=0
ctest --output-on-failure -j "${CTEST_JOBS:-2}" "$@" || rc=$?
echo "sanitize: ctest exit $rc after $(( $(date +%s) - t0 )) s"
san_check_logs || rc=1
exit $rc
