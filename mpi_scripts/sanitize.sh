#!/usr/bin/env bash
# sanitize.sh — build cfsp-mpi with ASan+UBSan (CMAKE_BUILD_TYPE=Sanitize) into build-sanitize and
# run the whole ctest suite under it, LeakSanitizer on. Sanitizer reports go to
# build-sanitize/sanitizer-logs (tests/sanitize/env.sh); the script fails if ctest fails or if any
# report was written, and prints the reports. LeakSanitizer suppressions: tests/sanitize/lsan.supp
# (third-party libraries only).
#   mpi_scripts/sanitize.sh [extra ctest arguments, e.g. -R bad_]
#   CFSP_SANITIZE_BUILD_DIR=/tmp/build-sanitize CTEST_JOBS=2 CC=gcc mpi_scripts/sanitize.sh
# Compiler: clang by default (installs clang and libclang-rt-14-dev if missing). With GCC, libubsan
# ignores log_path and prints UBSan reports only to stderr (GCC bug 94328), so a UBSan report in a
# test that expects the command to fail would go unnoticed; CC=gcc is allowed and warned about.
# sanitize_subset and valgrind_e2e are not registered in a Sanitize build (they build / run their own
# binaries). 8-15 minutes on 2 cores with clang (35 with gcc on a heavily loaded machine).
# Results: the run is appended to $SANITIZE_RESULTS_DIR/sanitize.json ("whole_suite": commit,
# compiler, ctest arguments, tests / passed / failed with status and seconds, per-test seconds from
# ctest's JUnit file, sanitizer report files, wall time, load average), and the table between the
# sanitize-table markers of $SANITIZE_RESULTS_DIR/README.md is rewritten from every recorded run;
# the text around the markers is hand-written and kept. SANITIZE_RESULTS_DIR defaults to
# results/sanitize for a whole-suite run; a run with extra ctest arguments (a subset) is recorded
# only when SANITIZE_RESULTS_DIR is set.
#   mpi_scripts/sanitize.sh --table-only    rewrite the README table from sanitize.json, run nothing
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${CFSP_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
CC="${CC:-clang}"

# record RESULTS_DIR JUNIT|- CTEST_LOG COMMIT COMPILER CTEST_EXIT WALL REPORTS LOAD0 LOAD1 JOBS [CTEST ARGS...]
# JUNIT "-": no new run, only the README table is rewritten. Per-test times and outcomes come from
# ctest's JUnit file; timeouts from ctest's own output (the JUnit file does not mark them)
record() {
  /usr/bin/python3 - "$@" <<'PY'
import datetime, json, os, re, sys
import xml.etree.ElementTree as ET
res, junit, ctest_log, commit, compiler, ctest_rc, wall, nrep, load0, load1, jobs = sys.argv[1:12]
args = sys.argv[12:]
os.makedirs(res, exist_ok=True)
jpath, rpath = os.path.join(res, "sanitize.json"), os.path.join(res, "README.md")
doc = json.load(open(jpath)) if os.path.exists(jpath) else {}
doc.setdefault("whole_suite", [])
if junit != "-":
    tests, failed = {}, {}
    log = open(ctest_log, errors="replace").read() if os.path.exists(ctest_log) else ""
    timeouts = set(re.findall(r"Test\s+#\d+: (\S+) \.*\s*\*\*\*Timeout", log))
    for tc in (ET.parse(junit).getroot().iter("testcase") if os.path.exists(junit) else []):
        name, st, secs = tc.get("name"), tc.get("status"), round(float(tc.get("time") or 0), 2)
        if st in ("disabled", "notrun"):
            continue
        tests[name] = secs
        if st != "run":
            failed[name] = {"status": "timeout" if name in timeouts else "failed", "seconds": secs}
    doc["whole_suite"].append({
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit, "compiler": compiler,
        "ctest_args": args, "ctest_jobs": int(jobs), "tests": len(tests), "passed": len(tests) - len(failed),
        "failed": failed, "ctest_exit": int(ctest_rc), "sanitizer_report_files": int(nrep), "wall_seconds": int(wall),
        "load_average": {"start": [float(x) for x in load0.split()], "end": [float(x) for x in load1.split()]},
        "recorded_by": "mpi_scripts/sanitize.sh", "per_test_seconds": dict(sorted(tests.items()))})
    with open(jpath + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(jpath + ".tmp", jpath)


def load(r):
    la = r.get("load_average")
    return "%.1f / %.1f" % (la["start"][0], la["end"][0]) if la else r.get("load", "")


tab = ["<!-- sanitize-table:begin (written by mpi_scripts/sanitize.sh from sanitize.json) -->",
       "| run | date | commit | compiler | ctest arguments | tests | passed | failed | sanitizer report files | wall | load | recorded by |",
       "|---|---|---|---|---|---:|---:|---|---:|---:|---|---|"]
for i, r in enumerate(doc["whole_suite"], 1):
    fl = ", ".join("%s (%s)" % (k, v["status"]) for k, v in sorted(r.get("failed", {}).items())) or "none"
    ok = r["tests"] > 0 and r["passed"] == r["tests"]
    nr = r.get("sanitizer_report_files")
    cargs = "`%s`" % " ".join(r["ctest_args"]).replace("|", "\\|") if r.get("ctest_args") else "whole suite"
    tab.append("| %d | %s | %s%s | %s | %s | %d | %s | %s | %s | %d s | %s | %s |" % (
        i, r.get("date", doc.get("date", ""))[:10], r["commit"][:7], "-dirty" if r["commit"].endswith("-dirty") else "",
        r["compiler"], cargs, r["tests"],
        "**%d**" % r["passed"] if ok else r["passed"], fl, "" if nr is None else nr, r["wall_seconds"], load(r),
        r.get("recorded_by", "")))
tab.append("<!-- sanitize-table:end -->")
text = open(rpath).read() if os.path.exists(rpath) else "# Sanitizers and leaks\n\n"
if "<!-- sanitize-table:begin" not in text:
    text += "\n<!-- sanitize-table:begin -->\n<!-- sanitize-table:end -->\n"
text = re.sub(r"<!-- sanitize-table:begin.*?<!-- sanitize-table:end -->", lambda m: "\n".join(tab), text, flags=re.S)
with open(rpath + ".tmp", "w") as f:
    f.write(text)
os.replace(rpath + ".tmp", rpath)
r = doc["whole_suite"][-1] if doc["whole_suite"] else None
print("sanitize: %s: %d runs; last: %s" % (res, len(doc["whole_suite"]),
      "%d tests, %d passed" % (r["tests"], r["passed"]) if r else "none"))
PY
}

if [ "${1:-}" = --table-only ]; then
  record "${SANITIZE_RESULTS_DIR:-$ROOT/results/sanitize}" - - - - 0 0 0 "" "" 0
  exit
fi
if [ "$CC" = clang ] && { ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.asan-x86_64.a >/dev/null 2>&1; }; then
  echo "sanitize: installing clang libclang-rt-14-dev"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
fi
case "$CC" in *gcc*) echo "sanitize: warning: $CC prints UBSan reports to stderr only (GCC bug 94328); use clang to collect them";; esac
# a build directory configured with another compiler is reconfigured from scratch
if [ -f "$B/CMakeCache.txt" ] && ! grep -q "^CMAKE_C_COMPILER:.*=$(command -v "$CC")\$" "$B/CMakeCache.txt"; then
  rm -rf "$B/CMakeCache.txt" "$B/CMakeFiles"
fi
# install what is missing, configure + build $B (Sanitize), set the MPI environment
export CFSP_BUILD_DIR="$B" CFSP_BUILD_TYPE=Sanitize CC
source "$ROOT/mpi_scripts/setup.sh"
export SAN_LOGS="$B/sanitizer-logs"
rm -rf "$SAN_LOGS"
source "$ROOT/tests/sanitize/env.sh"
RES="${SANITIZE_RESULTS_DIR:-}"
if [ -z "$RES" ] && [ $# -eq 0 ]; then RES="$ROOT/results/sanitize"; fi
cd "$B"
JUNIT="$B/sanitize-junit.xml" CTEST_LOG="$B/sanitize-ctest.log"
rm -f "$JUNIT" "$CTEST_LOG"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
rc=0
ctest --output-on-failure -j "${CTEST_JOBS:-2}" --output-junit "$JUNIT" "$@" 2>&1 | tee "$CTEST_LOG" || rc=$?
wall=$(( $(date +%s) - t0 ))
ctest_rc=$rc
echo "sanitize: $("$CC" --version | head -1); ctest exit $rc after $wall s"
nreports=$(find "$SAN_LOGS" -type f | wc -l)
san_check_logs || rc=1
if [ -n "$RES" ]; then
  commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$commit" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit-dirty"
  fi
  record "$RES" "$JUNIT" "$CTEST_LOG" "$commit" "$("$CC" --version | head -1)" "$ctest_rc" "$wall" "$nreports" \
         "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)" "${CTEST_JOBS:-2}" "$@" || { echo "sanitize: could not record the run in $RES"; rc=1; }
fi
exit $rc
