#!/usr/bin/env bash
# run_subset.sh — the CI-sized sanitizer check (ctest: sanitize_subset). Configures and builds an
# ASan+UBSan (CMAKE_BUILD_TYPE=Sanitize) copy of the project into BUILD_DIR (targets cfsp-mpi,
# cfsp-mpi-mkmodel, test_units only), then runs under the sanitizers with tests/sanitize/lsan.supp:
#   test_units; the stories260K job at -n 1 and -n 2 (4 x 64 calibration tokens, ratio 0.3,
#   methods cfsp and flap, 4 evaluation windows, pruned checkpoints written and verified).
# Fails on a non-zero exit or on any sanitizer report. About 1 minute on 2 cores (most of it the build).
#   usage: run_subset.sh SOURCE_DIR BUILD_DIR SHARED_DIR [C_COMPILER]
set -euo pipefail
SRC="$1"; B="$2"; SHARED="$3"; CCOMP="${4:-gcc}"
t0=$(date +%s)
cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_C_COMPILER="$CCOMP" -DSHARED_DIR="$SHARED" >"$B.configure.log" 2>&1 \
  || { cat "$B.configure.log"; exit 1; }
cmake --build "$B" -j "$(nproc)" --target cfsp-mpi cfsp-mpi-mkmodel test_units >"$B.build.log" 2>&1 \
  || { tail -50 "$B.build.log"; exit 1; }
echo "sanitize_subset: built in $(( $(date +%s) - t0 )) s"

export SAN_LOGS="$B/sanitizer-logs"
rm -rf "$SAN_LOGS"
source "$SRC/tests/sanitize/env.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1
fail=0
run() {   # name, command...
  local name="$1"; shift
  local t=$(date +%s) rc=0
  "$@" >"$B/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then echo "sanitize_subset: $name FAILED (exit $rc)"; tail -30 "$B/$name.log"; fail=1
  else echo "sanitize_subset: $name ok ($(( $(date +%s) - t )) s)"; fi
}
run test_units "$B/tests/test_units"
M="$SHARED/models/stories260K"; T="$SHARED/data/tokens/stories260K"
for n in 1 2; do
  out="$B/e2e_n$n"
  rm -rf "$out"
  run "e2e_n$n" mpiexec -n "$n" "$B/cfsp-mpi" --model "$M" \
      --calib-tokens "$T/tinystories_val_head.u32.bin" --eval-tokens "$T/wikitext2_test.joined.u32.bin" \
      --nsamples 4 --seqlen 64 --ratios 0.3 --method cfsp,flap --eval-windows 4 --output-dir "$out" --force
  for f in "$out"/cfsp_r0.3.h5 "$out"/flap_r0.3.h5; do
    run "verify_n${n}_$(basename "$f" .h5)" "$B/cfsp-mpi" verify "$f"
  done
done
# an error path: a truncated safetensors file at -n 2 must fail cleanly (exit 1, one message), leak-free
bad="$B/bad_model"
rm -rf "$bad"; mkdir -p "$bad"
cp "$M/config.json" "$bad/"
head -c 600000 "$M/model.safetensors" >"$bad/model.safetensors"
rc=0
mpiexec -n 2 "$B/cfsp-mpi" --model "$bad" --calib-tokens "$T/tinystories_val_head.u32.bin" \
  --nsamples 4 --seqlen 64 --ratios 0.3 --output-dir "$B/bad_out" --force >"$B/bad_model.log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] || ! grep -q "truncated" "$B/bad_model.log"; then
  echo "sanitize_subset: truncated-model run: expected a clean failure naming the truncation (exit $rc)"
  tail -20 "$B/bad_model.log"; fail=1
else
  echo "sanitize_subset: truncated-model error path ok"
fi
san_check_logs "$B"/*.log || fail=1   # the captured logs too: GCC prints UBSan reports to stderr only
echo "sanitize_subset: $([ $fail -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 )) s"
exit $fail
