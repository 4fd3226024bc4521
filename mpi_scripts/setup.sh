#!/usr/bin/env bash
# setup.sh — install what is missing (Debian packages) and build cfsp-mpi into build/.
# Idempotent; works from any directory. Sourced by run_example.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKGS=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libopenblas-dev libhdf5-openmpi-dev
      hdf5-tools libcjson-dev python3-numpy python3-h5py-mpi
      libdnnl-dev              # libdnnl-dev: oneDNN, the bf16 compute backend (--compute, issue 14)
      python3-sentencepiece    # python3-sentencepiece: the reference of the tokenizer test
      valgrind)                # valgrind: ctest valgrind_e2e (memcheck of the -n 1 job, issue 5)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
BUILD="${CFSP_BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE="${CFSP_BUILD_TYPE:-Release}" >/dev/null
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
# MPI as root (containers, CI) and more ranks than cores on small machines
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
echo "setup: built $BUILD/cfsp-mpi"
