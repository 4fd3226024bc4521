#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer harnesses of tests/fuzz (clang, -fsanitize=fuzzer,address,undefined)
# and run each for FUZZ_SECONDS (default 60) from the committed seed corpus tests/fuzz/corpus/<h>/.
# Only the parser sources are compiled (src/util/{err,util}.c, src/util/json_util.c, src/format/{model_config,
# safetensors,tokens}.c, the tokenizer src/tok/*.c); err.c needs libmpi for MPI_Initialized, which
# answers "no" — the parsers FAIL and return -1 without MPI running.
# Writes results/fuzz/fuzz.json and the measured table in results/fuzz/README.md (between the
# fuzz-table markers; hand-written notes around them are kept). FUZZ_HARNESSES selects harnesses:
# only their rows are replaced, the other harnesses' rows (from fuzz.json) are kept with their own
# run date. Exits 1 if any harness found a crash, leak or timeout; the reproducer is kept in
# $FUZZ_BUILD_DIR/artifacts/<harness>/.
#   FUZZ_SECONDS=60 FUZZ_HARNESSES="fuzz_spm fuzz_hf" FUZZ_BUILD_DIR=/tmp/fz mpi_scripts/fuzz.sh
# Needs: clang, libclang-rt-14-dev (Debian), libopenmpi-dev, libcjson-dev, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
HARNESSES="${FUZZ_HARNESSES:-fuzz_safetensors fuzz_config fuzz_index fuzz_tokens fuzz_spm fuzz_hf}"
B="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
OUT="${FUZZ_RESULTS_DIR:-$ROOT/results/fuzz}"
CC_FUZZ="${CC_FUZZ:-clang}"

missing=()
command -v "$CC_FUZZ" >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$B/obj" "$OUT"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $SAN -I$ROOT/include -I$ROOT/src/tok $(mpicc --showme:compile)"
LIBS="-lcjson -lm $(mpicc --showme:link)"
SRCS="src/util/err.c src/util/util.c src/util/json_util.c src/format/model_config.c src/format/safetensors.c src/format/tokens.c
      src/tok/tok_util.c src/tok/bpe.c src/tok/hf_regex.c src/tok/hf.c src/tok/spm.c src/tok/tokenizer.c"
OBJS=()
for s in $SRCS; do
  o="$B/obj/$(basename "${s%.c}").o"
  "$CC_FUZZ" $CFLAGS -fsanitize=fuzzer-no-link -c "$ROOT/$s" -o "$o"
  OBJS+=("$o")
done
for h in $HARNESSES; do
  "$CC_FUZZ" $CFLAGS -fsanitize=fuzzer "$ROOT/tests/fuzz/$h.c" "${OBJS[@]}" $LIBS -o "$B/$h"
done
echo "fuzz: built $HARNESSES in $B"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
declare -A MAXLEN=([fuzz_safetensors]=8192 [fuzz_config]=4096 [fuzz_index]=4096 [fuzz_tokens]=4096 [fuzz_spm]=8192 [fuzz_hf]=8192)
# libFuzzer dictionaries: JSON keys of the model files; tokenizer.json keys and type names; none for
# the binary ModelProto
declare -A DICT=([fuzz_safetensors]=cfsp.dict [fuzz_config]=cfsp.dict [fuzz_index]=cfsp.dict [fuzz_tokens]=cfsp.dict [fuzz_hf]=tok.dict)
# fuzz_tokens writes every input to a file: keep that file in memory when /dev/shm is available
FUZZ_TMP="$B"; [ -d /dev/shm ] && [ -w /dev/shm ] && FUZZ_TMP=/dev/shm
status=0
for h in $HARNESSES; do
  work="$B/corpus/$h"; art="$B/artifacts/$h/"
  rm -rf "$work" "$art"; mkdir -p "$work" "$art"
  seeds="$ROOT/tests/fuzz/corpus/$h"
  echo "fuzz: $h for ${SECONDS_EACH}s"
  rc=0
  # new units go to $work (first directory); the committed seeds are only read
  (cd "$B" && TMPDIR="$FUZZ_TMP" "./$h" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 \
      -rss_limit_mb=2048 -max_len="${MAXLEN[$h]:-4096}" ${DICT[$h]:+-dict="$ROOT/tests/fuzz/${DICT[$h]}"} \
      -artifact_prefix="$art" "$work" "$seeds") >"$B/$h.log" 2>&1 || rc=$?
  echo "$rc" >"$B/$h.rc"
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $h FAILED (exit $rc); reproducer(s): $(ls "$art")"
    grep -E "ERROR|SUMMARY|runtime error" "$B/$h.log" | head -5 || true
  fi
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec)" "$B/$h.log" | tr '\n' ' '; echo
done

/usr/bin/python3 - "$B" "$OUT" "$SECONDS_EACH" "$ROOT" $HARNESSES <<'PY'
import datetime, json, os, re, subprocess, sys
b, out, secs, root, hs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
date = datetime.datetime.now().isoformat(timespec="seconds")
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
    rows.append({
        "harness": h, "date": date, "seconds": secs,
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
       f"{clang}, `{doc['flags']}`; each row from its own run (date).", "",
       "| harness | run | seconds | executions | exec/s | crashes | seeds (files / bytes) | corpus after (files / bytes) | edges | peak RSS MB |",
       "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in merged:
    tab.append(f"| {r['harness']} | {r.get('date') or ''} | {r['seconds']} | {r['executions']:,} | {r['exec_per_s']:,} | {r['crashes']} | "
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
