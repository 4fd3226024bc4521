# env.sh — sanitizer settings shared by mpi_scripts/sanitize.sh and tests/sanitize/run_subset.sh.
# Source with SAN_LOGS set to an empty directory: every AddressSanitizer / LeakSanitizer / UBSan
# report goes to a file there (asan.<pid>, ubsan.<pid>) instead of stderr, so a report is seen even
# when it comes from a process whose exit status a test does not check (the bad-input tests expect
# exit 1 anyway). After the run, san_check_logs prints every report and returns 1 if there is one.
#  - halt_on_error: the first report ends the process (UBSan: -fno-sanitize-recover=undefined too)
#  - fast_unwind_on_malloc=0: full allocation stacks through libraries built without frame pointers,
#    so that the leaks of Open MPI components (dlclose'd at MPI_Finalize, "<unknown module>" with
#    the fast unwinder) are attributed to libmpi / libopen-rte and matched by lsan.supp
#  - intercept_tls_get_addr=0: works around a sanitizer-runtime bug (GCC <= 13, LLVM <= 16; google/
#    sanitizers#1322): a dynamic-TLS block of a dlopen'ed Open MPI component is mistaken for a glibc
#    2.19 block and LeakSanitizer's tracer dies with "Tracer caught signal 11" at exit (seen in
#    singleton runs such as `cfsp-mpi verify`). Only dynamic TLS of dlopen'ed libraries goes unscanned.
#  - lsan.supp: third-party libraries only (see the file)
#  - GCC: with -fsanitize=address,undefined, libubsan ignores log_path and prints UBSan reports to
#    stderr (GCC bug 94328; clang writes ubsan.<pid>). The process still exits 1 (no recover), but a
#    test that expects a failure would not notice. san_check_logs therefore also scans the files
#    given as arguments (captured stdout+stderr) for "runtime error:" and sanitizer ERROR lines, and
#    mpi_scripts/sanitize.sh builds with clang when it can.
_SAN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${SAN_LOGS:?SAN_LOGS must name a directory for sanitizer reports}"
mkdir -p "$SAN_LOGS"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=30:intercept_tls_get_addr=0:check_initialization_order=1:detect_stack_use_after_return=1:strict_init_order=1:log_path=$SAN_LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$SAN_LOGS/ubsan"
export LSAN_OPTIONS="suppressions=$_SAN_DIR/lsan.supp:print_suppressions=0"

san_check_logs() {   # [captured log files to scan as well]
  local n f rc=0
  n=$(find "$SAN_LOGS" -type f | wc -l)
  if [ "$n" -ne 0 ]; then
    echo "sanitizer: $n report file(s) in $SAN_LOGS:"
    for f in "$SAN_LOGS"/*; do echo "==> $f"; head -60 "$f"; done
    rc=1
  fi
  for f in "$@"; do
    [ -f "$f" ] || continue
    if grep -qE "runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)" "$f"; then
      echo "sanitizer: report in $f:"
      grep -E -A20 "runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)" "$f" | head -60
      rc=1
    fi
  done
  [ "$rc" -eq 0 ] && echo "sanitizer: no AddressSanitizer / LeakSanitizer / UBSan reports"
  return "$rc"
}
