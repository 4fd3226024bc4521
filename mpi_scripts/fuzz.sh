#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer harnesses of tests/fuzz (clang, -fsanitize=fuzzer,address,undefined)
# and run each for FUZZ_SECONDS (default 60) from the committed seed corpus tests/fuzz/corpus/<h>/;
# with FUZZ_RUNS=N each harness stops after N executions or FUZZ_SECONDS, whichever comes first
# (the goal run: FUZZ_RUNS=1000000 FUZZ_SECONDS=21600). Harnesses run one after the other, under
# nice -n 10 (FUZZ_NICE).
# Only the parser sources are compiled (src/util/{err,util}.c, src/util/json_util.c, src/format/{model_config,
# safetensors,tokens}.c, the tokenizer src/tok/*.c); err.c needs libmpi for MPI_Initialized, which
# answers "no" — the parsers FAIL and return -1 without MPI running. The HDF5 harnesses (fuzz_stats:
# stats_h5_read; fuzz_h5ckpt: ckpt_open / ckpt_read_rows / model_h5_verify) also link src/format/h5util.c,
# src/prune/{stats,stats_h5}.c, src/ckpt/{reader,model_h5,layout,rawio}.c and the parallel HDF5
# library (include and library directories from h5pcc -show, as CMake's FindHDF5 finds them).
# Writes results/fuzz/fuzz.json and the measured table in results/fuzz/README.md (between the
# fuzz-table markers; hand-written notes around them are kept). FUZZ_HARNESSES selects harnesses:
# only their rows are replaced, the other harnesses' rows (from fuzz.json) are kept with their own
# run date. Exits 1 if any harness found a crash, leak or timeout; the reproducer is kept in
# $FUZZ_BUILD_DIR/artifacts/<harness>/.
#   FUZZ_SECONDS=60 FUZZ_HARNESSES="fuzz_spm fuzz_hf" FUZZ_BUILD_DIR=/tmp/fz mpi_scripts/fuzz.sh
# Each row records the commit it ran on (git rev-parse HEAD), whether the fuzzed sources (the .c files
# compiled into the harness, include/, the harness itself) differed from it (git status: modified or
# untracked files, listed), and the CPU model (/proc/cpuinfo).
# Needs: clang, libclang-rt-14-dev (Debian), libopenmpi-dev, libcjson-dev, libhdf5-openmpi-dev, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
RUNS="${FUZZ_RUNS:-}"
NICE="${FUZZ_NICE:-10}"
HARNESSES="${FUZZ_HARNESSES:-fuzz_safetensors fuzz_config fuzz_index fuzz_tokens fuzz_spm fuzz_hf fuzz_stats fuzz_h5ckpt}"
H5_HARNESSES="fuzz_stats fuzz_h5ckpt"
B="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
OUT="${FUZZ_RESULTS_DIR:-$ROOT/results/fuzz}"
CC_FUZZ="${CC_FUZZ:-clang}"

missing=()
command -v "$CC_FUZZ" >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev)
command -v h5pcc >/dev/null || missing+=(libhdf5-openmpi-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$B/obj" "$OUT"
# the tree the harnesses are built from: its commit and what differs from it (fuzz.json, per row)
git -C "$ROOT" rev-parse HEAD >"$B/git-head" 2>/dev/null || : >"$B/git-head"
git -C "$ROOT" status --porcelain --untracked-files=all >"$B/git-status" 2>/dev/null || : >"$B/git-status"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $SAN -I$ROOT/include -I$ROOT/src/tok $(mpicc --showme:compile)"
LIBS="-lcjson -lm $(mpicc --showme:link)"
SRCS="src/util/err.c src/util/util.c src/util/json_util.c src/format/model_config.c src/format/safetensors.c src/format/tokens.c
      src/tok/tok_util.c src/tok/bpe.c src/tok/hf_regex.c src/tok/hf.c src/tok/spm.c src/tok/tokenizer.c"
# the HDF5 harnesses' extra sources (model_h5.c: tensor_checksum, model_h5_verify; rawio.c and
# layout.c: what model_h5.c calls)
declare -A H5_SRCS_OF=([fuzz_stats]="src/format/h5util.c src/prune/stats.c src/prune/stats_h5.c src/ckpt/model_h5.c src/ckpt/layout.c src/ckpt/rawio.c"
                       [fuzz_h5ckpt]="src/format/h5util.c src/ckpt/reader.c src/ckpt/model_h5.c src/ckpt/layout.c src/ckpt/rawio.c")
H5_SRCS="$(printf '%s\n' ${H5_SRCS_OF[@]} | sort -u | tr '\n' ' ')"
# parallel HDF5 as CMakeLists.txt finds it (FindHDF5 with HDF5_PREFER_PARALLEL asks h5pcc): its include
# directory, and its library directory for the shared libhdf5
H5SHOW="$(h5pcc -show)"
H5INC="$(printf '%s\n' $H5SHOW | sed -n 's/^-I//p' | head -1)"
H5LIB="$(printf '%s\n' $H5SHOW | sed -n 's/^-L//p' | head -1)"
[ -n "$H5INC" ] && [ -n "$H5LIB" ] || { echo "fuzz: cannot read the HDF5 flags from 'h5pcc -show': $H5SHOW" >&2; exit 2; }
H5LIBS="-L$H5LIB -Wl,-rpath,$H5LIB -lhdf5 -lpthread"
OBJS=()
for s in $SRCS; do
  o="$B/obj/$(basename "${s%.c}").o"
  "$CC_FUZZ" $CFLAGS -fsanitize=fuzzer-no-link -c "$ROOT/$s" -o "$o"
  OBJS+=("$o")
done
need_h5=0
for h in $HARNESSES; do case " $H5_HARNESSES " in *" $h "*) need_h5=1 ;; esac; done
if [ "$need_h5" = 1 ]; then
  for s in $H5_SRCS; do
    "$CC_FUZZ" $CFLAGS -I"$H5INC" -fsanitize=fuzzer-no-link -c "$ROOT/$s" -o "$B/obj/$(basename "${s%.c}").o"
  done
fi
for h in $HARNESSES; do
  case " $H5_HARNESSES " in
    *" $h "*)
      H5OBJS=()
      for s in ${H5_SRCS_OF[$h]}; do H5OBJS+=("$B/obj/$(basename "${s%.c}").o"); done
      "$CC_FUZZ" $CFLAGS -I"$H5INC" -fsanitize=fuzzer "$ROOT/tests/fuzz/$h.c" "${H5OBJS[@]}" "${OBJS[@]}" $H5LIBS $LIBS -o "$B/$h" ;;
    *) "$CC_FUZZ" $CFLAGS -fsanitize=fuzzer "$ROOT/tests/fuzz/$h.c" "${OBJS[@]}" $LIBS -o "$B/$h" ;;
  esac
done
echo "fuzz: built $HARNESSES in $B"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# the HDF5 harnesses' inputs are edit programs (a template byte, a reading byte, at most 24 edits)
declare -A MAXLEN=([fuzz_safetensors]=8192 [fuzz_config]=4096 [fuzz_index]=4096 [fuzz_tokens]=4096 [fuzz_spm]=8192 [fuzz_hf]=8192
                   [fuzz_stats]=512 [fuzz_h5ckpt]=512)
# libFuzzer dictionaries: JSON keys of the model files; tokenizer.json keys and type names; none for
# the binary ModelProto nor for the edit programs (their strings come from tables in the harnesses)
declare -A DICT=([fuzz_safetensors]=cfsp.dict [fuzz_config]=cfsp.dict [fuzz_index]=cfsp.dict [fuzz_tokens]=cfsp.dict [fuzz_hf]=tok.dict)
# fuzz_tokens and the HDF5 harnesses write every input to a file: keep it in memory when /dev/shm is available
FUZZ_TMP="$B"; [ -d /dev/shm ] && [ -w /dev/shm ] && FUZZ_TMP=/dev/shm
status=0
for h in $HARNESSES; do
  work="$B/corpus/$h"; art="$B/artifacts/$h/"
  rm -rf "$work" "$art"; mkdir -p "$work" "$art"
  seeds="$ROOT/tests/fuzz/corpus/$h"
  echo "fuzz: $h for ${RUNS:+$RUNS executions or }${SECONDS_EACH}s"
  rc=0
  t0=$(date +%s.%N)
  # new units go to $work (first directory); the committed seeds are only read
  (cd "$B" && TMPDIR="$FUZZ_TMP" nice -n "$NICE" "./$h" -max_total_time="$SECONDS_EACH" ${RUNS:+-runs="$RUNS"} -print_final_stats=1 -timeout=10 \
      -rss_limit_mb=2048 -max_len="${MAXLEN[$h]:-4096}" ${DICT[$h]:+-dict="$ROOT/tests/fuzz/${DICT[$h]}"} \
      -artifact_prefix="$art" "$work" "$seeds") >"$B/$h.log" 2>&1 || rc=$?
  echo "$rc" >"$B/$h.rc"
  echo "$t0 $(date +%s.%N)" >"$B/$h.time"
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $h FAILED (exit $rc); reproducer(s): $(ls "$art")"
    grep -E "ERROR|SUMMARY|runtime error" "$B/$h.log" | head -5 || true
  fi
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec)" "$B/$h.log" | tr '\n' ' '; echo
done

FUZZ_SRCS="$SRCS" FUZZ_H5_SRCS_STATS="${H5_SRCS_OF[fuzz_stats]}" FUZZ_H5_SRCS_H5CKPT="${H5_SRCS_OF[fuzz_h5ckpt]}" FUZZ_RUNS_LIMIT="$RUNS" \
/usr/bin/python3 - "$B" "$OUT" "$SECONDS_EACH" "$ROOT" $HARNESSES <<'PY'
import datetime, json, os, re, subprocess, sys
b, out, secs, root, hs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
date = datetime.datetime.now().isoformat(timespec="seconds")
runs_limit = int(os.environ["FUZZ_RUNS_LIMIT"]) if os.environ.get("FUZZ_RUNS_LIMIT") else None
# recorded when the harnesses were built (the state the binaries were compiled from)
commit = open(os.path.join(b, "git-head")).read().strip() or None
status = [l[3:].split(" -> ")[-1] for l in open(os.path.join(b, "git-status")).read().splitlines() if l.strip()] if commit else None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
def fuzzed_sources(h):
    srcs = os.environ["FUZZ_SRCS"].split()
    if h == "fuzz_stats": srcs = os.environ["FUZZ_H5_SRCS_STATS"].split() + srcs
    if h == "fuzz_h5ckpt": srcs = os.environ["FUZZ_H5_SRCS_H5CKPT"].split() + srcs
    srcs += ["include", "tests/fuzz/%s.c" % h] + (["tests/fuzz/tok_fuzz_check.h"] if h in ("fuzz_spm", "fuzz_hf") else []) \
        + (["tests/fuzz/h5_fuzz_edit.h"] if h in ("fuzz_stats", "fuzz_h5ckpt") else [])
    return srcs
def modified(srcs):
    # tracked files that differ from HEAD (as git diff --quiet HEAD -- SRCS would say) and untracked ones
    if status is None:
        return None
    return sorted(f for f in status if any(f == s or f.startswith(s.rstrip("/") + "/") for s in srcs))
rows = []
for h in hs:
    log = open(os.path.join(b, h + ".log"), errors="replace").read()
    stat = dict(re.findall(r"^stat::(\w+):\s*(\d+)", log, re.M))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    work = os.path.join(b, "corpus", h)
    seeds = os.path.join(root, "tests", "fuzz", "corpus", h)
    art = os.path.join(b, "artifacts", h)
    arts = sorted(os.listdir(art)) if os.path.isdir(art) else []
    files = [os.path.join(work, f) for f in os.listdir(work)]
    seedf = [os.path.join(seeds, f) for f in os.listdir(seeds)]
    t0, t1 = (float(x) for x in open(os.path.join(b, h + ".time")).read().split())
    mod = modified(fuzzed_sources(h))
    rows.append({
        "harness": h, "date": date, "seconds": round(t1 - t0),
        "max_seconds": secs, "max_runs": runs_limit,
        "commit": commit, "sources_modified": None if mod is None else bool(mod), "modified_files": mod, "cpu": cpu,
        "executions": int(stat.get("number_of_executed_units", 0)),
        "exec_per_s": int(stat.get("average_exec_per_sec", 0)),
        "crashes": len(arts), "artifacts": arts,
        "exit_code": int(open(os.path.join(b, h + ".rc")).read()),
        "seed_files": len(seedf), "seed_bytes": sum(os.path.getsize(f) for f in seedf),
        "corpus_files": len(seedf) + len(files),
        "corpus_bytes": sum(os.path.getsize(f) for f in seedf + files),
        "new_units": int(stat.get("new_units_added", 0)),
        "coverage_edges": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
        "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
    })
clang = subprocess.run(["clang", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
# keep the rows of the harnesses not run this time (each with its own run date)
jpath = os.path.join(out, "fuzz.json")
old = json.load(open(jpath)) if os.path.exists(jpath) else {"harnesses": []}
new = {r["harness"]: r for r in rows}
merged = []
for r in old.get("harnesses", []):
    if r["harness"] not in new:
        r.setdefault("date", old.get("date"))
        merged.append(r)
    else:
        merged.append(new.pop(r["harness"]))
merged += [r for r in rows if r["harness"] in new]
doc = {"date": date, "compiler": clang,
       "flags": "-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -O1",
       "harnesses": merged}
json.dump(doc, open(jpath, "w"), indent=2)
tab = ["<!-- fuzz-table:begin (written by mpi_scripts/fuzz.sh) -->",
       f"{clang}, `{doc['flags']}`; each row from its own run (date). \"commit\": `git rev-parse HEAD` when it ran; "
       "\"sources\": whether the fuzzed files (the .c files compiled in, include/, the harness) differed from that "
       "commit (fuzz.json lists them).", "",
       "| harness | run | commit | sources | CPU | seconds | executions | exec/s | crashes | seeds (files / bytes) | corpus after (files / bytes) | edges | peak RSS MB |",
       "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
def srcs_cell(r):
    m = r.get("sources_modified")
    return "" if m is None else ("modified" if m else "as committed")
for r in merged:
    tab.append(f"| {r['harness']} | {r.get('date') or ''} | {(r.get('commit') or '')[:10]} | {srcs_cell(r)} | {r.get('cpu') or ''} | "
               f"{r['seconds']} | {r['executions']:,} | {r['exec_per_s']:,} | {r['crashes']} | "
               f"{r['seed_files']} / {r['seed_bytes']:,} | {r['corpus_files']} / {r['corpus_bytes']:,} | "
               f"{r['coverage_edges']} | {r['peak_rss_mb']} |")
tab.append("<!-- fuzz-table:end -->")
readme = os.path.join(out, "README.md")
text = open(readme).read() if os.path.exists(readme) else (
    "# Fuzzing the input parsers\n\nHarnesses: `tests/fuzz/*.c` (libFuzzer). Reproduce with "
    "`FUZZ_SECONDS=60 mpi_scripts/fuzz.sh`.\n\n<!-- fuzz-table:begin -->\n<!-- fuzz-table:end -->\n")
text = re.sub(r"<!-- fuzz-table:begin.*?<!-- fuzz-table:end -->", lambda m: "\n".join(tab), text, flags=re.S)
open(readme, "w").write(text)
print("\n".join(tab[3:-1]))
PY
exit $status
