#!/usr/bin/env bash
# run_example.sh — set up, build, and run the main job on the bundled small model:
#   mpirun -n 2 cfsp-mpi --config configs/stories260K.json
# Outputs go to results/example/ (results.json, results.md, ppl_vs_ratio.svg, pruned HDF5 files).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/mpi_scripts/setup.sh"
cd "$ROOT"
mpirun -n 2 --oversubscribe "$BUILD/cfsp-mpi" --config configs/stories260K.json --output-dir results/example --force "$@"
cat results/example/results.md
