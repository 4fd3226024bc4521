#!/usr/bin/env bash
# test.sh — set up, build, and run the whole test suite with ctest (what CI runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
cd "$BUILD"
ctest --output-on-failure -j "${CTEST_JOBS:-2}" "$@"
