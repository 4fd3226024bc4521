# bench_common.sh — sourced by bench_phases.sh and bench_recover.sh: build a tree (the worktree, or a
# commit unpacked with git archive) and describe the machine. Needs ROOT, T0 and BENCH_NAME (the
# prefix of its progress lines) from the caller; sets the MPI/BLAS environment, say and die.
#   bench_build SOURCE BUILD DIR  -> sets SRC, BUILD, COMMIT; builds cfsp-mpi and cfsp-mpi-mkmodel
#   bench_machine SOURCE          -> prints key=value lines: CPU model, flags, hypervisor, cores,
#                                    commit, source, uncommitted files under src/ include/, date, load
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
say() { printf '%s [%4ds]: %s\n' "$BENCH_NAME" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { say "error: $*"; exit 1; }

bench_build() {
  local source="$1" dir="$3"
  BUILD="$2"
  if [ "$source" = worktree ]; then SRC="$ROOT"; COMMIT=$(git -C "$ROOT" rev-parse HEAD)
  else
    COMMIT=$(git -C "$ROOT" rev-parse "$source") || die "$source is not a commit"
    SRC="$dir/src-${COMMIT:0:12}"; BUILD="$BUILD-${COMMIT:0:12}"
    [ -f "$SRC/CMakeLists.txt" ] || { rm -rf "$SRC"; mkdir -p "$SRC"; git -C "$ROOT" archive "$COMMIT" | tar -x -C "$SRC"; }
  fi
  say "building $SRC into $BUILD"
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$(getconf _NPROCESSORS_ONLN)" --target cfsp-mpi cfsp-mpi-mkmodel >/dev/null || die "build failed"
}

bench_machine() {
  local source="$1"
  echo "cpu_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p')"
  echo "cpu_flags=$(lscpu | sed -n 's/^Flags:[[:space:]]*//p')"
  echo "hypervisor=$(lscpu | sed -n 's/^Hypervisor vendor:[[:space:]]*//p')"
  echo "nproc=$(getconf _NPROCESSORS_ONLN)"
  echo "mem_total_kb=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo)"
  echo "git_commit=$COMMIT"
  echo "source=$source"
  echo "git_dirty_files=$( [ "$source" = worktree ] && git -C "$ROOT" status --porcelain -- src include | wc -l || echo 0)"
  echo "date=$(date -Is)"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
}

# the 7B-shape and 70B-shape slices of bench.sh (the real projection shapes, 2 and 4 blocks, bf16)
bench_model_args() {
  case "$1" in
    7b)  echo "--hidden 4096 --ffn 11008 --layers 2 --heads 32 --kv-heads 32 --vocab 512 --dtype bf16 --shard-bytes 2000000000" ;;
    70b) echo "--hidden 8192 --ffn 28672 --layers 4 --heads 64 --kv-heads 8 --head-dim 128 --vocab 512 --dtype bf16 --shard-bytes 2000000000" ;;
    *) die "unknown slice $1" ;;
  esac
}

#   bench_slices DIR "MODELS" RAW -> DIR/llama<m>-slice made with $BUILD's generator (kept while its
#   arguments match), read once into the page cache; DIR/tokens-v512.u32.bin, 262144 random ids
bench_slices() {
  local dir="$1" models="$2" raw="$3" m d args
  TOK="$dir/tokens-v512.u32.bin"
  [ -f "$TOK" ] || /usr/bin/python3 -c "import numpy as np; np.random.default_rng(0).integers(0, 512, 262144).astype('<u4').tofile('$TOK')"
  for m in $models; do
    d="$dir/llama$m-slice"; args=$(bench_model_args "$m")
    if [ "$(cat "$d/.slice-args" 2>/dev/null || cat "$d/.phases-args" 2>/dev/null || true)" != "$args" ]; then
      say "making the $m slice"
      "$BUILD/cfsp-mpi-mkmodel" --out "$d" $args --force > "$raw/mkmodel-$m.log" 2>&1 || die "mkmodel $m"
      echo "$args" > "$d/.slice-args"
    fi
    cat "$d"/*.safetensors > /dev/null      # in the page cache, as after any earlier job
  done
}
