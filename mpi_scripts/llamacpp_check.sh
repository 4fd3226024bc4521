#!/usr/bin/env bash
# llamacpp_check.sh — the real-runtime check of `cfsp-mpi export --format gguf` (issue 9; README
# "Exporting"). Not part of ctest: it needs a llama.cpp build with the `deci` architecture.
#
#   mpi_scripts/llamacpp_check.sh LLAMA_BUILD_DIR [options]
#
# LLAMA_BUILD_DIR is a llama.cpp CMake build directory holding bin/llama-perplexity and
# bin/llama-tokenize. Nothing is built unless asked: cfsp-mpi is taken from $CFSP_BIN (default
# $CFSP_BUILD_DIR/cfsp-mpi, else build/cfsp-mpi).
#
# For each model (default: stories260K, sentencepiece tokenizer.model; tinystories656K, BPE
# tokenizer.json) it
#   1. prunes the shared model with cfsp-mpi (cfsp and flap, --ratio, 32 x 256 calibration tokens
#      from the first TinyStories tokens [0:80000), disjoint from the evaluation text),
#   2. exports the cfsp model and the unpruned one (ratio 0) as GGUF and as HF DeciLM, and the flap
#      model (down_proj bias: blk.N.ffn_down.bias) as GGUF,
#   3. runs llama.cpp on every GGUF: llama-tokenize --ids on the evaluation text and
#      llama-perplexity -c CTX (llama.cpp tokenizes the text itself, cuts n_tokens / CTX windows,
#      puts BOS first in each and scores only the second half of every window),
#   4. computes cfsp-mpi's perplexity on exactly those windows (tests/py/llama_ppl_compare.py:
#      llama.cpp's own token ids, cfsp-mpi's float32 logits via --dump-logits, the same positions
#      scored): the pruned model from its HF export, the unpruned one from the ORIGINAL shared
#      checkpoint (so ratio 0 also checks GGUF export against the dense HF model); flap (no HF form)
#      against the NumPy reference tests/ref/cfsp_ref.py on its HDF5 file, first 120 windows;
#      for stories260K also its F16 and BF16 variants with an untied lm_head and llama3 rope scaling
#      (tests/py/make_variant.py: 16-bit tensor types, output.weight, rope_freqs.weight), unpruned,
#      against cfsp-mpi on the variant's HF directory, first 120 windows,
#   5. (issue 16) for --qwen-of M (default tinystories656K) its Qwen2 and Qwen3 variants
#      (tests/py/make_variant.py qwen2|qwen3 --seed 0: the trained weights plus q/k/v biases or q/k
#      norms), pruned with cfsp like the others (--ratio, the same calibration tokens): `qwen2 deci`
#      (export --format gguf: arch deci, blk.N.attn_{q,k,v}.bias, per-block FFN sizes), `qwen2 padded`
#      and `qwen3 padded` (--format gguf-padded: arch qwen2 / qwen3, every FFN zero-padded to the
#      widest block), each against cfsp-mpi on the pruned model's `export --format hf-padded`
#      directory (Qwen2ForCausalLM / Qwen3ForCausalLM read back with --model); `qwen3 dense` (the
#      unpruned variant, --format gguf: uniform sizes, so arch qwen3) against the variant's own HF
#      directory; `qwen2 yarn` (the unpruned qwen2 variant with rope_scaling yarn, factor 4 over an
#      original context of 64: --format gguf, arch deci with llama.cpp's rope.scaling keys) against
#      that directory; all windows. Also: `export --format gguf` of the pruned qwen3 must be refused
#      (exit != 0, one line naming gguf-padded),
#   6. (issue 18, with --kl) for each model of --models: llama-perplexity --kl-divergence-base on the
#      dense GGUF (its log-probabilities of every scored position), then --kl-divergence on the cfsp
#      and flap GGUFs, against cfsp-mpi's own distribution metrics on exactly those windows (the same
#      calibration and pruning, --eval-tokens llama.cpp's windows, --eval-score-from CTX/2, --kl 1;
#      tests/py/llama_kl_compare.py: the pruned weights checked equal to the exported ones, the mean,
#      median, 99th percentile and maximum KL, the top-1 agreement and the perplexity ratio side by
#      side; fails when a KL figure or the ratio differs by more than --kl-tol relative or the top-1
#      agreement by more than --top1-tol),
# and writes OUT/llamacpp.json and OUT/README.md (commands, llama.cpp commit, the perplexities side
# by side, relative differences, the architecture llama.cpp loaded, the cfsp-mpi commit; fails when
# one exceeds --tol, default 1%, or llama.cpp loaded another architecture than expected; the verdict
# also says whether every Qwen row is within 1e-4 relative, issue 16's bound).
#
# Evaluation text: TinyStories validation lines EVAL_FROM.. of ../shared/data/tinystories_val_head.txt
# (written to the work directory), unless --text FILE is given.
#
# Options:
#   --out DIR            results (default results/export)
#   --work DIR           scratch (default /tmp/cfsp-llamacpp-check)
#   --models "A B"       shared model names (default "stories260K tinystories656K")
#   --ratio R            pruning ratio (default 0.3)
#   --ctx N              llama-perplexity -c (default 256)
#   --chunks N           at most N windows (default: all)
#   --text FILE          evaluation text instead of the TinyStories tail
#   --kv-f32             also run llama-perplexity with an F32 KV cache (-ctk f32 -ctv f32); with
#                        --kl, the KL runs use it too
#   --kl                 also the distribution metrics (step 6)
#   --kl-tol X           largest accepted relative difference of a KL figure (default 0.01)
#   --top1-tol X         largest accepted difference of the top-1 agreement (default 0.005)
#   --threads N          llama.cpp threads (default 2)
#   --tol X              largest accepted relative difference (default 0.01)
#   --llama-commit SHA   recorded commit of the llama.cpp source (default: git rev-parse of the
#                        build's source directory, when it is a git checkout)
#   --llama-repo NAME    recorded origin of the llama.cpp source, e.g. unslothai/llama.cpp (default:
#                        git remote get-url origin of the build's source directory)
#   --build-llama SRC    first configure and build llama-perplexity and llama-tokenize from the
#                        llama.cpp source SRC into LLAMA_BUILD_DIR (-DGGML_NATIVE=ON -DLLAMA_CURL=OFF)
#   --build-cfsp         first build cfsp-mpi (mpi_scripts/setup.sh)
#   --variants-of M      the model whose F16 / BF16 variants are checked (default stories260K; "" = none)
#   --qwen-of M          the model whose Qwen2 / Qwen3 variants are checked (default tinystories656K;
#                        "" = none; M need not be in --models: then only its Qwen rows are made)
#   --cfsp-commit SHA    recorded cfsp-mpi commit (default: git rev-parse HEAD of this checkout)
# Environment: CFSP_BIN, CFSP_SHARED (default ../shared), NP (cfsp-mpi ranks, default 2), PYTHON.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0 ;; esac
LB="$1"; shift
OUT="$ROOT/results/export"; WORK=/tmp/cfsp-llamacpp-check; MODELS="stories260K tinystories656K"
RATIO=0.3; CTX=256; CHUNKS=-1; TEXT=""; KVF32=0; KL=0; KL_TOL=0.01; TOP1_TOL=0.005; THREADS=2; TOL=0.01; COMMIT=""; REPO=""; BUILD_LLAMA=""; BUILD_CFSP=0
EVAL_FROM=5001; CALIB=80000; EXTRA_CHUNKS=120; VARIANTS_OF=stories260K; QWEN_OF=tinystories656K; CFSP_COMMIT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --ratio) RATIO="$2"; shift 2 ;;
    --ctx) CTX="$2"; shift 2 ;;
    --chunks) CHUNKS="$2"; shift 2 ;;
    --text) TEXT="$2"; shift 2 ;;
    --kv-f32) KVF32=1; shift ;;
    --kl) KL=1; shift ;;
    --kl-tol) KL_TOL="$2"; shift 2 ;;
    --top1-tol) TOP1_TOL="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --tol) TOL="$2"; shift 2 ;;
    --llama-commit) COMMIT="$2"; shift 2 ;;
    --llama-repo) REPO="$2"; shift 2 ;;
    --build-llama) BUILD_LLAMA="$2"; shift 2 ;;
    --build-cfsp) BUILD_CFSP=1; shift ;;
    --variants-of) VARIANTS_OF="$2"; shift 2 ;;
    --qwen-of) QWEN_OF="$2"; shift 2 ;;
    --cfsp-commit) CFSP_COMMIT="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "llamacpp_check: unknown option '$1' (--help)" >&2; exit 2 ;;
  esac
done
export ROOT
SHARED="$(cd "${CFSP_SHARED:-$ROOT/../shared}" && pwd)"
PY="${PYTHON:-/usr/bin/python3}"
NP="${NP:-2}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

if [ "$BUILD_CFSP" = 1 ]; then source "$ROOT/mpi_scripts/setup.sh"; CFSP_BIN="${CFSP_BIN:-$BUILD/cfsp-mpi}"; fi
CFSP_BIN="${CFSP_BIN:-${CFSP_BUILD_DIR:-$ROOT/build}/cfsp-mpi}"
[ -x "$CFSP_BIN" ] || { echo "llamacpp_check: $CFSP_BIN: no cfsp-mpi binary (set CFSP_BIN, or --build-cfsp)" >&2; exit 2; }
if [ -n "$BUILD_LLAMA" ]; then
  mkdir -p "$LB"
  cmake -S "$BUILD_LLAMA" -B "$LB" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
  cmake --build "$LB" --target llama-perplexity llama-tokenize -j "$(nproc)"
fi
[ -d "$LB" ] || { echo "llamacpp_check: $LB: no such directory (the llama.cpp build directory)" >&2; exit 2; }
LB="$(cd "$LB" && pwd)"
PPL_BIN="$LB/bin/llama-perplexity"; TOK_BIN="$LB/bin/llama-tokenize"
for b in "$PPL_BIN" "$TOK_BIN"; do
  [ -x "$b" ] || { echo "llamacpp_check: $b: missing (build the llama-perplexity and llama-tokenize targets, or --build-llama SRC)" >&2; exit 2; }
done
src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$LB/CMakeCache.txt" 2>/dev/null || true)"
[ -n "$COMMIT" ] || COMMIT="$(git -C "${src:-/nonexistent}" rev-parse HEAD 2>/dev/null || echo unknown)"
[ -n "$REPO" ] || REPO="$(git -C "${src:-/nonexistent}" remote get-url origin 2>/dev/null || echo unknown)"
LLAMA_VERSION="$("$PPL_BIN" --version 2>&1 | grep -m1 '^version' || true)"
[ -n "$CFSP_COMMIT" ] || CFSP_COMMIT="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
# tracked sources with uncommitted changes when the check ran (the binary may include them)
CFSP_DIRTY="$(git -C "$ROOT" status --porcelain -uno -- src include CMakeLists.txt 2>/dev/null | awk '{print $2}' | tr '\n' ' ' || true)"

mkdir -p "$WORK" "$OUT"; : > "$WORK/removed.txt"
if [ -z "$TEXT" ]; then
  TEXT="$WORK/tinystories_eval.txt"
  tail -n +"$EVAL_FROM" "$SHARED/data/tinystories_val_head.txt" > "$TEXT"
  TEXT_DESC="lines $EVAL_FROM.. of shared/data/tinystories_val_head.txt ($(wc -l < "$TEXT") lines, $(wc -c < "$TEXT") bytes)"
else
  TEXT="$(cd "$(dirname "$TEXT")" && pwd)/$(basename "$TEXT")"
  TEXT_DESC="$TEXT ($(wc -c < "$TEXT") bytes)"
fi
CMDS="$WORK/commands.txt"; : > "$CMDS"
case "$TEXT_DESC" in lines*) echo "tail -n +$EVAL_FROM \$SHARED/data/tinystories_val_head.txt > \$WORK/tinystories_eval.txt" >> "$CMDS" ;; esac
run() {   # run and record a command (stdout+stderr to $LOG)
  printf '%s\n' "$*" | sed "s#$WORK#\$WORK#g; s#$SHARED#\$SHARED#g; s#$LB#\$LLAMA_BUILD#g; s#$CFSP_BIN#cfsp-mpi#g; s#$ROOT/##g" >> "$CMDS"
  "$@" > "$LOG" 2>&1 || { echo "llamacpp_check: FAILED: $*" >&2; tail -20 "$LOG" >&2; exit 1; }
}
llama_run() {   # MARKER ARGS...: llama-perplexity ARGS. Its log is written by a logging thread whose last lines
  # are sometimes lost at exit: rerun once when MARKER is missing
  local marker="$1"; shift
  run "$PPL_BIN" "$@"
  grep -q "$marker" "$LOG" || { sed -i '$d' "$CMDS"; run "$PPL_BIN" "$@"; }
}
perplexity() {   # then llama_ppl_compare.py takes the running PPL after the last window (the same figure)
  llama_run "Final estimate: PPL" "$@"
}
CASES=()
: > "$WORK/qwen_checks.txt"; : > "$WORK/kl_cases.txt"
ALL="$MODELS"
case " $MODELS " in *" $QWEN_OF "*) ;; *) [ -z "$QWEN_OF" ] || ALL="$MODELS $QWEN_OF" ;; esac
for m in $ALL; do
  src="$SHARED/models/$m"; w="$WORK/$m"; mkdir -p "$w"
  kinds=""
  case " $MODELS " in *" $m "*) ;; *) kinds=none ;; esac
  if [ "$kinds" != none ]; then
  echo "llamacpp_check: $m: prune (cfsp, ratio $RATIO), export"
  LOG="$w/prune.log"
  run mpirun -n "$NP" "$CFSP_BIN" --model "$src" --calib-tokens "$SHARED/data/tokens/$m/tinystories_val_head.u32.bin@0:$CALIB" \
      --nsamples 32 --seqlen 256 --ratios "$RATIO" --method cfsp,flap --save-stats 0 --output-dir "$w/prune" --force
  h5="$w/prune/cfsp_r$RATIO.h5"
  [ -f "$h5" ] || h5="$(ls "$w"/prune/cfsp_r*.h5 | head -1)"
  h5f="$(ls "$w"/prune/flap_r*.h5 | head -1)"
  LOG="$w/export.log"
  run "$CFSP_BIN" export --format gguf --force "$h5" "$w/pruned.gguf"
  run "$CFSP_BIN" export --format hf --force "$h5" "$w/pruned_hf"
  run "$CFSP_BIN" export --format gguf --force "$h5f" "$w/flap.gguf"
  run "$CFSP_BIN" export --format gguf --force --model "$src" "$w/dense.gguf"
  kinds="dense pruned flap"
  if [ "$m" = "$VARIANTS_OF" ]; then   # the same weights as F16 / BF16, untied lm_head, llama3 rope scaling
    for dt in f16 bf16; do
      LOG="$w/variant_$dt.log"
      run "$PY" "$ROOT/tests/py/make_variant.py" "$src" "$w/variant_$dt" "$dt"
      LOG="$w/export_$dt.log"
      run "$CFSP_BIN" export --format gguf --force --model "$w/variant_$dt" "$w/$dt.gguf"
      kinds="$kinds $dt"
    done
  fi
  else kinds=""; fi
  if [ "$m" = "$QWEN_OF" ]; then   # issue 16: Qwen2 (q/k/v biases) and Qwen3 (q/k norms) forms of the trained model
    for q in qwen2 qwen3; do
      echo "llamacpp_check: $m: $q variant, prune (cfsp, ratio $RATIO), export"
      LOG="$w/variant_$q.log"
      run "$PY" "$ROOT/tests/py/make_variant.py" "$src" "$w/variant_$q" "$q" --seed 0
      LOG="$w/prune_$q.log"
      run mpirun -n "$NP" "$CFSP_BIN" --model "$w/variant_$q" --calib-tokens "$SHARED/data/tokens/$m/tinystories_val_head.u32.bin@0:$CALIB" \
          --nsamples 32 --seqlen 256 --ratios "$RATIO" --method cfsp --save-stats 0 --output-dir "$w/prune_$q" --force
      qh5="$w/prune_$q/cfsp_r$RATIO.h5"
      [ -f "$qh5" ] || qh5="$(ls "$w"/prune_$q/cfsp_r*.h5 | head -1)"
      LOG="$w/export_$q.log"
      run "$CFSP_BIN" export --format hf-padded --force "$qh5" "$w/${q}_hf"
      run "$CFSP_BIN" export --format gguf-padded --force "$qh5" "$w/${q}_padded.gguf"
      if [ "$q" = qwen2 ]; then
        run "$CFSP_BIN" export --format gguf --force "$qh5" "$w/qwen2_deci.gguf"
        kinds="$kinds qwen2_deci qwen2_padded"
      else
        # the per-block GGUF form of a pruned qwen3 has no llama.cpp architecture (deci has no q/k norms): refused
        rm -f "$w/qwen3_deci.gguf"
        echo "$CFSP_BIN export --format gguf --force $qh5 $w/qwen3_deci.gguf   # must be refused" | \
          sed "s#$WORK#\$WORK#g; s#$CFSP_BIN#cfsp-mpi#g" >> "$CMDS"
        rc=0; "$CFSP_BIN" export --format gguf --force "$qh5" "$w/qwen3_deci.gguf" > "$w/qwen3_refusal.log" 2>&1 || rc=$?
        nl="$(grep -c . "$w/qwen3_refusal.log" || true)"
        ok=0; { [ "$rc" != 0 ] && [ "$nl" = 1 ] && grep -q 'gguf-padded' "$w/qwen3_refusal.log" && [ ! -e "$w/qwen3_deci.gguf" ]; } && ok=1
        printf 'qwen3_gguf_refused\t%s\t%s\t%s\t%s\n' "$ok" "$rc" "$nl" "$(sed -n 1p "$w/qwen3_refusal.log" | sed "s#$WORK#\$WORK#g")" >> "$WORK/qwen_checks.txt"
        echo "llamacpp_check: $m: export --format gguf of the pruned qwen3: exit $rc, $nl line(s): $(head -1 "$w/qwen3_refusal.log")"
        run "$CFSP_BIN" export --format gguf --force --model "$w/variant_qwen3" "$w/qwen3_dense.gguf"
        kinds="$kinds qwen3_padded qwen3_dense"
      fi
    done
    # yarn rope scaling (Qwen's long-context setting) on the unpruned qwen2 variant: factor 4 over an
    # original context of 64 positions, so that the 256-token windows reach beyond it
    echo "llamacpp_check: $m: qwen2 variant with yarn rope scaling, export"
    rm -rf "$w/variant_qwen2_yarn"; cp -r "$w/variant_qwen2" "$w/variant_qwen2_yarn"
    "$PY" - "$w/variant_qwen2_yarn/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
json.dump(c, open(sys.argv[1], "w"), indent=1)
PY
    echo "# \$WORK/$m/variant_qwen2_yarn = variant_qwen2 with rope_scaling {type: yarn, factor: 4, original_max_position_embeddings: 64}" >> "$CMDS"
    LOG="$w/export_qwen2_yarn.log"
    run "$CFSP_BIN" export --format gguf --force --model "$w/variant_qwen2_yarn" "$w/qwen2_yarn.gguf"
    kinds="$kinds qwen2_yarn"
  fi
  kinds="${kinds# }"; first="${kinds%% *}"
  # llama.cpp's sentencepiece-style tokenizer spells a character that is not a token as <0xXX> byte
  # tokens and aborts when the vocabulary has none (tinystories656K: 78 single characters, no byte
  # tokens; Hugging Face gives <unk>). For such a vocabulary the model's text is the evaluation text
  # without the characters that are not tokens (counted in the results).
  mtext="$("$PY" - "$w/$first.gguf" "$TEXT" "$w/text.txt" <<'PY'
import os, re, sys; sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests", "py"))
from gguf_reader import GGUF
kv = GGUF(sys.argv[1]).kv
toks = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in kv["tokenizer.ggml.tokens"]]
if kv["tokenizer.ggml.model"] != "llama" or any(re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t) for t in toks):
    print(sys.argv[2] + " 0"); sys.exit(0)
ok = {t for t in toks if len(t) == 1}
if "\u2581" in ok: ok.add(" ")
text = open(sys.argv[2], encoding="utf-8").read()
kept = "".join(c for c in text if c in ok)
open(sys.argv[3], "w", encoding="utf-8").write(kept)
print(sys.argv[3], len(text) - len(kept))
PY
)"
  mremoved="${mtext##* }"; mtext="${mtext% *}"
  [ "$mremoved" = 0 ] || { echo "llamacpp_check: $m: no byte tokens: $mremoved characters that are not tokens removed from the text"
    echo "# $m: the vocabulary has no <0xXX> byte tokens: \$WORK/$m/text.txt = the text without the characters that are not single-character tokens" >> "$CMDS"; }
  echo "$m $mremoved" >> "$WORK/removed.txt"
  LOG="$w/tokenize.log"
  run "$CFSP_BIN" tokenize --model "$src" --force "$mtext" "$w/text.cfsp.u32.bin"
  for kind in $kinds; do
    g="$w/$kind.gguf"
    # cfsp-mpi evaluates the original checkpoint (dense) or the HF export (pruned); flap's down_proj bias
    # has no HF form, so its GGUF (blk.N.ffn_down.bias) is compared with the NumPy reference
    # (tests/ref/cfsp_ref.py, float64) on the HDF5 file, over at most EXTRA_CHUNKS windows
    chn="$CHUNKS"
    case "$kind" in
      dense) ref=(--model "$src") ;;
      pruned) ref=(--model "$w/pruned_hf") ;;
      flap) ref=(--h5 "$h5f") ;;
      qwen2_deci|qwen2_padded) ref=(--model "$w/qwen2_hf") ;;
      qwen3_padded) ref=(--model "$w/qwen3_hf") ;;
      qwen3_dense) ref=(--model "$w/variant_qwen3") ;;
      qwen2_yarn) ref=(--model "$w/variant_qwen2_yarn") ;;
      *) ref=(--model "$w/variant_$kind") ;;
    esac
    case "$kind" in dense|pruned|qwen*) ;; *) { [ "$chn" -ge 0 ] && [ "$chn" -lt "$EXTRA_CHUNKS" ]; } || chn="$EXTRA_CHUNKS" ;; esac
    kch=(); [ "$chn" -ge 0 ] && kch=(--chunks "$chn")
    bos="$("$PY" - "$g" <<'PY'
import os, sys; sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests", "py"))
from gguf_reader import GGUF
kv = GGUF(sys.argv[1]).kv
add = kv.get("tokenizer.ggml.add_bos_token", kv.get("tokenizer.ggml.model") == "llama")
print(int(kv["tokenizer.ggml.bos_token_id"]) if add and "tokenizer.ggml.bos_token_id" in kv else -1)
PY
)"
    echo "llamacpp_check: $m $kind: llama-tokenize, llama-perplexity -c $CTX"
    LOG="$w/$kind.ids.log"
    run "$TOK_BIN" -m "$g" -f "$mtext" --ids --log-disable
    grep '^\[' "$LOG" | tail -1 > "$w/$kind.ids.txt"
    LOG="$w/$kind.perplexity.log"
    perplexity -m "$g" -f "$mtext" -c "$CTX" -t "$THREADS" -lv 4 "${kch[@]}"
    if [ "$KVF32" = 1 ]; then
      LOG="$w/$kind.perplexity_kvf32.log"
      perplexity -m "$g" -f "$mtext" -c "$CTX" -t "$THREADS" -lv 4 -ctk f32 -ctv f32 "${kch[@]}"
    fi
    echo "llamacpp_check: $m $kind: cfsp-mpi on llama.cpp's windows"
    LOG="$w/$kind.compare.log"
    run "$PY" "$ROOT/tests/py/llama_ppl_compare.py" --bin "$CFSP_BIN" "${ref[@]}" --ids "$w/$kind.ids.txt" --ctx "$CTX" \
        --bos "$bos" --chunks "$chn" --np "$NP" --mpiexec mpirun --workdir "$w/cmp_$kind" --llama-log "$w/$kind.perplexity.log" \
        --ref-tokens "$w/text.cfsp.u32.bin" --json "$w/$kind.compare.json"
    cat "$LOG"
    if [ "$KVF32" = 1 ]; then
      "$PY" - "$w/$kind.compare.json" "$w/$kind.perplexity_kvf32.log" <<'PY'
import json, re, sys
j = json.load(open(sys.argv[1]))
text = open(sys.argv[2], errors="replace").read()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
run = re.findall(r"\[(\d+)\]([0-9.]+),", text)      # the running PPL after the last window if the final line was lost
if not m and not (run and int(run[-1][0]) == j["chunks"]):
    sys.exit("%s: no final PPL" % sys.argv[2])
j["llama_cpp_ppl_kv_f32"] = float(m.group(1)) if m else float(run[-1][1])
j["rel_diff_kv_f32"] = abs(j["llama_cpp_ppl_kv_f32"] - j["ppl"]) / j["ppl"]
json.dump(j, open(sys.argv[1], "w"), indent=1)
print("llama.cpp with an F32 KV cache: PPL = %.4f; relative difference %.3e" % (j["llama_cpp_ppl_kv_f32"], j["rel_diff_kv_f32"]))
PY
    fi
    CASES+=("$m:$kind:$w")
  done
  if [ "$KL" = 1 ] && [ -f "$w/dense.gguf" ]; then
    # issue 18: llama.cpp's --kl-divergence against cfsp-mpi's --kl on the same windows and positions
    kvf=(); [ "$KVF32" = 1 ] && kvf=(-ctk f32 -ctv f32)
    [ "$CHUNKS" -ge 0 ] && kvf+=(--chunks "$CHUNKS")      # the windows of cmp_dense/windows.u32.bin
    echo "llamacpp_check: $m: llama-perplexity --kl-divergence-base (dense), --kl-divergence (cfsp, flap)"
    LOG="$w/dense.kl_base.log"
    perplexity -m "$w/dense.gguf" -f "$mtext" -c "$CTX" -t "$THREADS" -lv 4 "${kvf[@]}" --kl-divergence-base "$w/dense.kld"
    for kind in pruned flap; do
      LOG="$w/$kind.kl.log"
      # the statistics end with "Same top p: " (the header of the per-window table names the column too)
      llama_run "Same top p: " -m "$w/$kind.gguf" -c "$CTX" -t "$THREADS" -lv 4 "${kvf[@]}" --kl-divergence-base "$w/dense.kld" --kl-divergence
    done
    echo "llamacpp_check: $m: cfsp-mpi --kl on llama.cpp's windows (--eval-score-from $((CTX / 2)))"
    LOG="$w/kl_run.log"
    run mpirun -n "$NP" "$CFSP_BIN" --model "$src" --calib-tokens "$SHARED/data/tokens/$m/tinystories_val_head.u32.bin@0:$CALIB" \
        --nsamples 32 --seqlen "$CTX" --ratios "$RATIO" --method cfsp,flap --save-stats 0 --output-dir "$w/kl" --force \
        --eval-tokens "$w/cmp_dense/windows.u32.bin" --eval-score-from "$((CTX / 2))" --kl 1
    LOG="$w/kl.compare.log"
    run "$PY" "$ROOT/tests/py/llama_kl_compare.py" --results "$w/kl/results.json" --exported "$w/prune" \
        --base-log "$w/dense.kl_base.log" --base-file "$w/dense.kld" --case "cfsp:$w/pruned.kl.log" --case "flap:$w/flap.kl.log" --json "$w/kl.compare.json"
    cat "$LOG"
    echo "$m $w/kl.compare.json" >> "$WORK/kl_cases.txt"
  fi
done

"$PY" - "$OUT" "$CMDS" "$REPO $COMMIT" "$LLAMA_VERSION" "$TEXT_DESC" "$CTX" "$RATIO" "$TOL" "$KVF32" "$EXTRA_CHUNKS" "$CFSP_COMMIT" "$CFSP_DIRTY" "$KL_TOL $TOP1_TOL" "${CASES[@]}" <<'PY'
import json, os, re, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests", "py"))
from gguf_reader import GGUF
out, cmds, commit, version, text, ctx, ratio, tol, kvf32, extra_chunks, cfsp_commit, cfsp_dirty, kl_tols = sys.argv[1:14]
cases = sys.argv[14:]
tol = float(tol)
kl_tol, top1_tol = map(float, kl_tols.split())
QWEN_TOL = 1e-4                                   # issue 16's bound for the Qwen rows
EXPECT = {"qwen2_padded": "qwen2", "qwen3_padded": "qwen3", "qwen3_dense": "qwen3"}   # the rest: deci
SOURCE = {"dense": "cfsp-mpi, original HF checkpoint", "pruned": "cfsp-mpi, HF DeciLM export",
          "flap": "NumPy reference (tests/ref/cfsp_ref.py, float64) on the HDF5 file",
          "qwen2_deci": "cfsp-mpi, HF Qwen2ForCausalLM export (hf-padded)", "qwen2_padded": "cfsp-mpi, HF Qwen2ForCausalLM export (hf-padded)",
          "qwen3_padded": "cfsp-mpi, HF Qwen3ForCausalLM export (hf-padded)", "qwen3_dense": "cfsp-mpi, the qwen3 variant's HF directory",
          "qwen2_yarn": "cfsp-mpi, the qwen2 variant's HF directory with yarn rope scaling"}
rows, fail, qwen_over = [], [], []
wd = os.path.dirname(cmds)
removed = dict(l.split() for l in open(os.path.join(wd, "removed.txt")) if l.strip())
checks = []
for l in open(os.path.join(wd, "qwen_checks.txt")):
    if l.strip():
        name, ok, rc, nl, msg = (l.rstrip("\n").split("\t") + [""] * 5)[:5]
        checks.append({"check": name, "ok": ok == "1", "exit_status": int(rc), "lines": int(nl), "message": msg})
        if ok != "1": fail.append(name)
for c in cases:
    m, kind, w = c.split(":", 2)
    j = json.load(open(os.path.join(w, kind + ".compare.json")))
    log = open(os.path.join(w, kind + ".perplexity.log"), errors="replace").read()
    arch = re.search(r"print_info: arch\s+= (\S+)", log)
    arch = arch.group(1) if arch else None
    garch = GGUF(os.path.join(w, kind + ".gguf")).kv.get("general.architecture")
    expect = EXPECT.get(kind, "deci")
    loaded = arch == expect and garch == expect
    nff = re.search(r"print_info: n_ff\s+= \[?([0-9, ]*)\]?\n", log)      # the FFN sizes llama.cpp read (one number if all equal)
    nl = re.search(r"print_info: n_layer\s+= (\d+)", log)
    nff = [int(x) for x in nff.group(1).split(",")] if nff else None
    if nff and len(nff) == 1 and nl: nff = nff * int(nl.group(1))
    r = {"model": m, "kind": kind.replace("_", " "), "source": SOURCE.get(kind, "cfsp-mpi, the variant's HF directory"),
         "gguf_architecture": garch, "llama_cpp_arch": arch, "expected_arch": expect, "llama_cpp_loaded_as_expected": loaded, "llama_cpp_n_ff": nff,
         "llama_cpp_ppl": j.get("llama_cpp_ppl"), "llama_cpp_ppl_stderr": j.get("llama_cpp_ppl_stderr"), "llama_cpp_ppl_from": j.get("llama_cpp_ppl_from"), "cfsp_mpi_ppl": j["ppl"],
         "rel_diff": j.get("rel_diff"), "running_ppl_max_rel_diff": j.get("running_ppl_max_rel_diff"),
         "chunks": j["chunks"], "scored_tokens": j["scored_tokens"], "llama_cpp_tokens": j["llama_cpp_tokens"],
         "cfsp_tokenizer_tokens": j.get("ref_tokens"), "tokens_equal": j.get("tokens_equal"),
         "first_token_difference": j.get("first_token_difference"),
         "characters_removed_from_text": int(removed.get(m, 0))}
    if "llama_cpp_ppl_kv_f32" in j:
        r["llama_cpp_ppl_kv_f32"] = j["llama_cpp_ppl_kv_f32"]
        r["rel_diff_kv_f32"] = j["rel_diff_kv_f32"]
    rows.append(r)
    if not loaded or r["rel_diff"] is None or r["rel_diff"] > tol:
        fail.append("%s %s" % (m, r["kind"]))
    if kind.startswith("qwen") and (r["rel_diff"] is None or r["rel_diff"] > QWEN_TOL):
        qwen_over.append("%s %s" % (m, r["kind"]))
kl_rows = []                                      # issue 18: --kl-divergence vs cfsp-mpi's --kl
for l in open(os.path.join(wd, "kl_cases.txt")):
    if not l.strip():
        continue
    m, path = l.split()
    j = json.load(open(path))
    for c in j["cases"]:
        c = dict(c, model=m, **{k: j[k] for k in ("n_ctx", "eval_score_from", "windows", "dense_ppl_llama_cpp", "dense_ppl_cfsp_mpi",
                                                  "ppl_base_from_base_file", "targets_at_the_floor", "scored_positions")})
        bad = [k for k, d in c["rel_diff"].items() if d > kl_tol] + (["top1_agreement"] if c["top1_abs_diff"] > top1_tol else [])
        if not c["same_weights_as_exported"]:
            bad.append("weights")
        if c["llama_cpp_windows"] is not None and c["llama_cpp_windows"] != c["windows"]:
            bad.append("windows")
        c["ok"] = not bad
        kl_rows.append(c)
        if bad:
            fail.append("%s %s KL (%s)" % (m, c["method"], ", ".join(bad)))
commands = [l.rstrip("\n") for l in open(cmds)]
repo, commit = commit.split(" ", 1)
qrows = [r for r in rows if r["kind"].startswith("qwen")]
cpu, flags = "unknown", []
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            have = set(line.split(":", 1)[1].split())
            flags = [f for f in ("avx2", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in have]
except OSError:
    pass
res = {"cpu": cpu, "cpu_flags": flags, "llama_cpp_repository": repo, "llama_cpp_commit": commit, "llama_cpp_version": version,
       "cfsp_mpi_commit": cfsp_commit, "cfsp_mpi_uncommitted_sources": cfsp_dirty.split(),
       "text": text, "n_ctx": int(ctx), "ratio": float(ratio),
       "tolerance": tol, "ok": not fail, "qwen_tolerance": QWEN_TOL, "qwen_rows_within_qwen_tolerance": (not qwen_over) if qrows else None,
       "qwen_max_rel_diff": max((r["rel_diff"] or 0) for r in qrows) if qrows else None,
       "qwen_checks": checks, "cases": rows, "kl_tolerance": kl_tol if kl_rows else None, "top1_tolerance": top1_tol if kl_rows else None,
       "kl_cases": kl_rows, "commands": commands}
tmp = os.path.join(out, "llamacpp.json.tmp")
json.dump(res, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(out, "llamacpp.json"))
L = ["# llama.cpp loads the GGUF export and agrees with cfsp-mpi", "",
     "Written by `mpi_scripts/llamacpp_check.sh` (README \"Exporting\"). llama.cpp: %s, commit `%s`, built with CMake (%s)." % (repo, commit, version or "no version line"),
     "CPU: %s (%s); llama.cpp's own figures depend on its CPU kernels (F16 matrix products and KV cache), so they move with the machine by up to a few 1e-4 on stories260K's 16-bit rows, cfsp-mpi's do not." % (cpu, " ".join(flags)),
     "cfsp-mpi: commit `%s`%s." % (cfsp_commit, " (with uncommitted changes to %s in the work tree it was built from)" % ", ".join(cfsp_dirty.split()) if cfsp_dirty.split() else ""),
     "Text: %s. llama-perplexity `-c %s`: llama.cpp tokenizes the text, cuts n_tokens / %s windows, puts BOS first in each and" % (text, ctx, ctx),
     "scores the second half of every window; cfsp-mpi's figure is computed on exactly those token ids and positions",
     "(tests/py/llama_ppl_compare.py with cfsp-mpi's own logits). `dense`: the unpruned GGUF export (ratio 0) in llama.cpp vs",
     "the original shared HF checkpoint in cfsp-mpi; `pruned`: cfsp at ratio %s, GGUF in llama.cpp vs its HF DeciLM export in cfsp-mpi;" % ratio,
     "`flap`: flap at ratio %s (down_proj bias as blk.N.ffn_down.bias; no HF form), GGUF in llama.cpp vs the NumPy reference" % ratio,
     "(tests/ref/cfsp_ref.py, float64) on the HDF5 file, first %s windows; `f16` / `bf16`: the unpruned model stored as F16 / BF16" % extra_chunks,
     "with an untied lm_head and llama3 rope scaling (tests/py/make_variant.py; 16-bit GGUF tensors, output.weight, rope_freqs.weight),",
     "GGUF in llama.cpp vs cfsp-mpi on that HF directory, first %s windows (the untrained rope scaling raises the perplexity)." % extra_chunks,
     "`qwen2 ...` / `qwen3 ...` (issue 16): the model as Qwen2 (q/k/v biases) / Qwen3 (q/k norms) (tests/py/make_variant.py --seed 0;",
     "the added tensors are untrained), pruned with cfsp at ratio %s with the same calibration: `qwen2 deci` is `export --format gguf`" % ratio,
     "(arch deci, blk.N.attn_{q,k,v}.bias, per-block FFN sizes), `qwen2 padded` / `qwen3 padded` `--format gguf-padded` (arch qwen2 / qwen3,",
     "every FFN zero-padded to the widest block; llama.cpp's n_ff is the padded width), each vs cfsp-mpi on the pruned model's",
     "`--format hf-padded` directory; `qwen3 dense`: the unpruned qwen3 variant, `--format gguf` (uniform sizes: arch qwen3), vs that;",
     "`qwen2 yarn`: the unpruned qwen2 variant with rope_scaling yarn (factor 4, original context 64), `--format gguf` (deci with llama.cpp's yarn keys), vs that",
     "variant's HF directory; all windows.", "",
     "| model | kind | FFN sizes (llama.cpp's n_ff) | arch llama.cpp loaded (expected) | windows | scored tokens | llama.cpp PPL | cfsp-mpi PPL (flap: NumPy reference) | relative difference | max rel. diff. of running PPL |%s" %
     (" llama.cpp PPL, F32 KV cache | rel. diff. |" if kvf32 == "1" else ""),
     "|---|---|---|---|---|---|---|---|---|---|%s" % ("---|---|" if kvf32 == "1" else "")]
for r in rows:
    L.append("| %s | %s | %s | %s | %d | %d | %s | %.4f | %.2e | %.2e |%s" % (
        r["model"], r["kind"], " ".join(map(str, r["llama_cpp_n_ff"] or [])),
        r["llama_cpp_arch"] if r["llama_cpp_loaded_as_expected"] else "%s, GGUF %s: NOT %s" % (r["llama_cpp_arch"], r["gguf_architecture"], r["expected_arch"]), r["chunks"],
        r["scored_tokens"], "%.4f +/- %.4f" % (r["llama_cpp_ppl"], r["llama_cpp_ppl_stderr"]) if r["llama_cpp_ppl_stderr"] is not None
        else "%.4f (after the last window)" % r["llama_cpp_ppl"], r["cfsp_mpi_ppl"], r["rel_diff"], r["running_ppl_max_rel_diff"] or 0,
        (" %.4f | %.2e |" % (r["llama_cpp_ppl_kv_f32"], r["rel_diff_kv_f32"])) if "llama_cpp_ppl_kv_f32" in r else ""))
L += ["", "Tokenization: llama.cpp's ids vs cfsp-mpi's own tokenizer (`cfsp-mpi tokenize`) on the",
      "same text (the comparison above uses llama.cpp's ids for both, so it does not depend on this):", ""]
seen = {r["model"] for r in rows if r["kind"] == "dense"}
for r in rows:
    if r["kind"] == "dense" or (r["model"] not in seen and not seen.add(r["model"])):   # a model without LLaMA rows: its first row
        L.append("- %s: %d vs %d ids, %s%s" % (r["model"], r["llama_cpp_tokens"], r["cfsp_tokenizer_tokens"] or 0,
                 "identical" if r["tokens_equal"] else "first difference at id %s" % r["first_token_difference"],
                 "; the vocabulary has no <0xXX> byte tokens, so llama.cpp aborts on a character that is not a token: the %d such"
                 " characters were removed from this model's copy of the text" % r["characters_removed_from_text"] if r["characters_removed_from_text"] else ""))
for c in checks:
    if c["check"] == "qwen3_gguf_refused":
        L += ["", "`export --format gguf` of the pruned qwen3 (no per-block llama.cpp form: deci has no q/k norms): %s (exit %d, %d line: `%s`)." % (
              "refused as required" if c["ok"] else "NOT REFUSED AS REQUIRED", c["exit_status"], c["lines"], c["message"])]
if kl_rows:
    k0 = kl_rows[0]
    L += ["", "## Distribution metrics: llama.cpp's `--kl-divergence` against cfsp-mpi's `--kl` (issue 18)", "",
          "llama-perplexity `-c %d --kl-divergence-base` on the dense GGUF (it stores the dense log-probabilities of every scored" % k0["n_ctx"],
          "position, 16 bits per word), then `--kl-divergence` on the cfsp and flap GGUFs%s; cfsp-mpi on exactly those windows" % (
              " (F32 KV cache)" if kvf32 == "1" else ""),
          "(llama.cpp's ids, BOS first) from the original checkpoint, the same calibration and pruning, `--eval-score-from %d --kl 1`" % k0["eval_score_from"],
          "(the logits at positions %d..%d of each window, as llama.cpp scores); the pruned weights it evaluated are checked equal," % (
              k0["eval_score_from"], k0["n_ctx"] - 2),
          "dataset by dataset, to the exported ones (tests/py/llama_kl_compare.py). Each cell: llama.cpp / cfsp-mpi (relative difference);",
          "top-1: the fraction of positions whose top token is the dense model's; PPL: the pruned model's (llama.cpp's PPL(Q)); PPL ratio:",
          "llama.cpp's PPL(Q) over its dense perplexity from the ordinary run that wrote the base file, against cfsp-mpi's `ppl_ratio`.",
          "Tolerance %.0e relative, top-1 %.3f absolute." % (kl_tol, top1_tol), "",
          "| model | method | windows | positions | KL mean | KL median | KL p99 | KL max | top-1 | PPL | PPL ratio | weights as exported |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in kl_rows:
        f = lambda k, fmt="%.5f": (fmt + " / " + fmt + " (%.1e)") % (c["llama_cpp"][k], c["cfsp_mpi"][k], c["rel_diff"][k])
        L.append("| %s | %s r=%g | %d | %d | %s | %s | %s | %s | %.4f / %.4f | %s | %s | %s |%s" % (
            c["model"], c["method"], c["ratio"], c["windows"], c["positions"], f("kl_mean"), f("kl_median"), f("kl_p99"), f("kl_max", "%.3f"),
            c["llama_cpp"]["top1_agreement"], c["cfsp_mpi"]["top1_agreement"], f("ppl", "%.4f"), f("ppl_ratio", "%.4f"),
            "yes" if c["same_weights_as_exported"] else "NO", "" if c["ok"] else " **outside**"))
    L += ["", "llama.cpp's own `Mean PPL(Q)/PPL(base)` is not compared: its base file stores each position's log-probabilities only",
          "from max_logit - 16 up (a lower logit is stored as that floor), so its PPL(base) counts a target the dense model puts more",
          "than 16 nats below its top word with a smaller NLL. PPL(base) recomputed from the base file by tests/py/llama_kl_compare.py",
          "equals llama.cpp's to the printed digits:", ""]
    for c in kl_rows:
        if c["method"] == kl_rows[0]["method"]:
            L.append("- %s: dense PPL %.4f (llama.cpp's ordinary run) / %.4f (cfsp-mpi); llama.cpp's PPL(base) %.6f, from the base file %.6f;"
                     " %d of %d scored targets at the floor; llama.cpp's own ratio for %s %.6f" % (
                         c["model"], c["dense_ppl_llama_cpp"], c["dense_ppl_cfsp_mpi"], c["llama_cpp_ppl_base"], c["ppl_base_from_base_file"],
                         c["targets_at_the_floor"], c["scored_positions"], c["method"], c["llama_cpp_ppl_ratio_own_base"]))
verdict = "Verdict: %s (tolerance %.0e relative)." % ("all agree" if not fail else "DISAGREE: " + ", ".join(fail), tol)
if qrows:
    verdict += " Qwen rows (issue 16, bound %.0e relative): %s (largest relative difference %.2e)." % (
        QWEN_TOL, "every one within it" if not qwen_over else "NOT all within it: " + ", ".join(qwen_over), res["qwen_max_rel_diff"])
L += ["", verdict, "",
      "## Commands", "", "`$WORK` is the scratch directory, `$SHARED` ../shared, `$LLAMA_BUILD` the llama.cpp build directory.", "", "```sh"]
L += commands + ["```", ""]
tmp = os.path.join(out, "README.md.tmp")
open(tmp, "w").write("\n".join(L))
os.replace(tmp, os.path.join(out, "README.md"))
print("\n".join(L[:L.index("## Commands")]))
sys.exit(1 if fail else 0)
PY
