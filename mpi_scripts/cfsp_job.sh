# shellcheck shell=bash
# cfsp_job.sh — the body shared by cfsp.sbatch, cfsp-array.sbatch and cfsp.pbs. Sourced, not run.
#
# The batch script (scheduler specific) sets these, then calls cfsp_job_run:
#   JOB_SCHED      slurm | pbs
#   JOB_ID         the scheduler's job id (one per array task)
#   JOB_SUBMIT_DIR directory the job was submitted from (relative paths are taken from there)
#   JOB_NNODES     nodes in the allocation
#   JOB_NTASKS     MPI ranks of the allocation
#   JOB_MEM_MB     memory per rank granted by the scheduler in MiB (empty if unknown)
#   JOB_LOG        the batch log file (copied to OUTDIR at the end; empty if unknown)
#   JOB_HOSTFILE   (pbs) the node file for mpirun
#   CFSP_LOCAL_TMP the default scratch base on one node; CFSP_TMP_OWNED=1 if the job may remove it
#
# User parameters (environment, or sbatch --export / qsub -v); every one is optional except
# that the run needs a model and tokens, from CONFIG or MODEL/CALIB_TOKENS:
#   CONFIG         cfsp-mpi run file (JSON), e.g. configs/llama3-70b.json
#   MODEL CALIB_TOKENS EVAL_TOKENS NSAMPLES SEQLEN CHUNK EVAL_WINDOWS RATIOS METHOD
#   GLOBAL_METRIC LOCAL_METRIC ALIGN SEED EVAL_DENSE
#                  the cfsp-mpi options of the same name; override CONFIG. RATIOS and METHOD
#                  take commas or spaces ("0.1,0.2" or "0.1 0.2"); RATIOS set but empty: no
#                  pruning (dense perplexity and stats.h5 only). A prune --stats run must use the
#                  SEQLEN (and EVAL_*) of the run that wrote the statistics, or its perplexities
#                  are over different windows.
#   STATS          a stats.h5 of an earlier run: run `cfsp-mpi prune --stats STATS` (no forward pass)
#   EXTRA_ARGS     more cfsp-mpi options, whitespace-separated (no quoting)
#   OUTDIR         results directory (default SUBMIT_DIR/results/cfsp-JOBID); must not exist or be
#                  empty unless FORCE=1
#   FORCE          1: write into a non-empty OUTDIR (files of the same name are replaced)
#   SCRATCH_DIR    where cfsp-mpi writes while it runs (default: $SLURM_TMPDIR, $TMPDIR on PBS, or
#                  /tmp/JOBID). With more than one node it must be a filesystem shared by all nodes
#                  (every rank writes its blocks of each HDF5 file there), so it is then required.
#   KEEP_SCRATCH   1: do not delete the scratch directory after a successful copy
#   LAUNCHER       srun (default under Slurm) | mpirun (default under PBS)
#   SRUN_MPI       srun --mpi= plugin (default pmix)
#   MPIRUN_ARGS    extra mpirun options, whitespace-separated
#   NRANKS         ranks to start (default: the allocation's tasks)
#   CFSP_BIN       the cfsp-mpi executable (default: cfsp-mpi on PATH, else CFSP_ROOT/build/cfsp-mpi)
#   MODULES        environment modules to load first, e.g. "openmpi hdf5/openmpi openblas"
#   PYTHON         interpreter for report.py (default /usr/bin/python3; needs matplotlib)
#   REPORT         0: skip the PNG report
#   OPENBLAS_NUM_THREADS  default 1 (one core per rank; cpus-per-task=1)
#
# Exit status of the job: 0 success; cfsp-mpi's own status (1 for a reported error) if it failed;
# 2 bad job parameters (nothing was started); 3 the results could not be copied to OUTDIR;
# 124 stopped by a signal (time limit, scancel/qdel). Every line this file prints starts with
# "cfsp-job:"; cfsp-mpi's lines start with "cfsp-mpi:".

cfsp_log() { printf 'cfsp-job: %s %s\n' "$(date '+%F %T')" "$*"; }

# cfsp_fail STATUS MESSAGE: a parameter or set-up error before anything ran
cfsp_fail() {
  local status=$1
  shift
  cfsp_log "error: $*"
  cfsp_log "status $status: nothing was started"
  exit "$status"
}

# cfsp_abspath PATH: PATH made absolute against JOB_SUBMIT_DIR (no filesystem access)
cfsp_abspath() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$JOB_SUBMIT_DIR" "$1" ;;
  esac
}

# cfsp_find_root: CFSP_ROOT (the repository, for report.py, cfsp_resources.py and build/)
cfsp_find_root() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  CFSP_ROOT=${CFSP_ROOT:-$here}
}

# cfsp_load_modules: `module load $MODULES` when MODULES is set
cfsp_load_modules() {
  [[ -n ${MODULES:-} ]] || return 0
  if ! type module >/dev/null 2>&1; then
    local f
    for f in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh /usr/share/lmod/lmod/init/bash; do
      # shellcheck disable=SC1090
      if [[ -r $f ]]; then source "$f"; break; fi
    done
  fi
  type module >/dev/null 2>&1 || cfsp_fail 2 "MODULES=\"$MODULES\" but there is no 'module' command on $(hostname)"
  # shellcheck disable=SC2086
  module load $MODULES || cfsp_fail 2 "module load $MODULES failed"
  cfsp_log "modules loaded: $MODULES"
}

# cfsp_sweep_item INDEX: set METHOD / GLOBAL_METRIC / LOCAL_METRIC and SWEEP_NAME from item INDEX
# of SWEEP (whitespace-separated items METHOD[:GLOBAL_METRIC[:LOCAL_METRIC]], counted from 0)
cfsp_sweep_item() {
  local index=$1 items m g l
  read -r -a items <<<"${SWEEP:-}"
  [[ ${#items[@]} -gt 0 ]] || cfsp_fail 2 "SWEEP is empty: give items METHOD[:GLOBAL_METRIC[:LOCAL_METRIC]], e.g. SWEEP=\"cfsp:angular cfsp:mse wanda_sp flap\""
  [[ $index =~ ^[0-9]+$ && $index -lt ${#items[@]} ]] || cfsp_fail 2 "array index $index but SWEEP has ${#items[@]} items (${items[*]}): submit with --array=0-$((${#items[@]} - 1))"
  IFS=: read -r m g l <<<"${items[$index]}"
  [[ -n $m ]] && METHOD=$m
  [[ -n $g ]] && GLOBAL_METRIC=$g
  [[ -n $l ]] && LOCAL_METRIC=$l
  # shellcheck disable=SC2034  # read by the batch script
  SWEEP_NAME=${items[$index]//:/-}
  cfsp_log "sweep item $index of ${#items[@]}: ${items[$index]} (method ${METHOD:-default}, global metric ${GLOBAL_METRIC:-default}, local metric ${LOCAL_METRIC:-default})"
}

# cfsp_copy_back: every final output in the scratch directory to OUTDIR (not *.tmp: a *.tmp file is
# an output that was being written when the run stopped; it is never complete)
cfsp_copy_back() {
  local f ok=0
  mkdir -p "$OUTDIR" || return 1
  shopt -s nullglob
  for f in "$CFSP_SCR"/*; do
    [[ $f == *.tmp ]] && continue
    cp -a "$f" "$OUTDIR/" || ok=1
  done
  shopt -u nullglob
  return $ok
}

# cfsp_write_jobinfo STATUS: OUTDIR/job.txt — what ran where, and how it ended
cfsp_write_jobinfo() {
  {
    echo "job_id=$JOB_ID"
    echo "scheduler=$JOB_SCHED"
    echo "nodes=$JOB_NNODES"
    echo "hosts=${JOB_HOSTS:-$(hostname)}"
    echo "ranks=$CFSP_NRANKS"
    echo "launcher=$LAUNCHER"
    echo "mem_per_rank_mb=${JOB_MEM_MB:-unknown}"
    echo "scratch=$CFSP_SCR"
    echo "started=$CFSP_T0"
    echo "ended=$(date '+%F %T')"
    echo "seconds=$((SECONDS - CFSP_S0))"
    echo "exit_status=$1"
    printf 'command='
    printf '%q ' "${CFSP_LAUNCH[@]}"
    echo
  } >"$OUTDIR/job.txt" 2>/dev/null || cfsp_log "warning: cannot write $OUTDIR/job.txt"
}

# cfsp_on_signal: time limit or scancel/qdel: stop cfsp-mpi (its SIGTERM handler removes its
# temporary files), keep what exists, say so
cfsp_on_signal() {
  CFSP_SIGNALLED=1
  cfsp_log "received a termination signal (time limit, scancel or qdel): stopping cfsp-mpi"
  [[ -n ${CFSP_PID:-} ]] && kill -TERM "$CFSP_PID" 2>/dev/null
}

cfsp_job_run() {
  CFSP_T0=$(date '+%F %T')
  CFSP_S0=$SECONDS
  CFSP_SIGNALLED=0
  CFSP_LAUNCH=()
  cfsp_find_root
  cd "$JOB_SUBMIT_DIR" || cfsp_fail 2 "cannot enter the submit directory $JOB_SUBMIT_DIR"
  cfsp_load_modules
  export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  if [[ $(id -u) -eq 0 ]]; then   # containers and test clusters: Open MPI refuses root otherwise
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi

  # --- the executable and the launcher
  if [[ -z ${CFSP_BIN:-} ]]; then
    CFSP_BIN=$(command -v cfsp-mpi || true)
    [[ -n $CFSP_BIN ]] || CFSP_BIN=$CFSP_ROOT/build/cfsp-mpi
  fi
  [[ -x $CFSP_BIN ]] || cfsp_fail 2 "cfsp-mpi not found or not executable: $CFSP_BIN (set CFSP_BIN, put cfsp-mpi on PATH or build it in $CFSP_ROOT/build)"
  case ${LAUNCHER:-} in
    srun) command -v srun >/dev/null || cfsp_fail 2 "LAUNCHER=srun but there is no srun here" ;;
    mpirun) command -v mpirun >/dev/null || cfsp_fail 2 "LAUNCHER=mpirun but there is no mpirun here (MODULES?)" ;;
    *) cfsp_fail 2 "LAUNCHER must be srun or mpirun, not '${LAUNCHER:-}'" ;;
  esac
  CFSP_NRANKS=${NRANKS:-$JOB_NTASKS}
  [[ $CFSP_NRANKS =~ ^[1-9][0-9]*$ ]] || cfsp_fail 2 "NRANKS must be a positive integer, not '$CFSP_NRANKS'"

  # --- results and scratch directories
  OUTDIR=$(cfsp_abspath "${OUTDIR:-results/cfsp-$JOB_ID}")
  if [[ -d $OUTDIR && -n $(ls -A "$OUTDIR" 2>/dev/null) && ${FORCE:-0} != 1 ]]; then
    cfsp_fail 2 "OUTDIR $OUTDIR exists and is not empty: choose another OUTDIR or set FORCE=1"
  fi
  mkdir -p "$OUTDIR" || cfsp_fail 2 "cannot create OUTDIR $OUTDIR"
  local base=${SCRATCH_DIR:-}
  if [[ -z $base ]]; then
    [[ $JOB_NNODES -le 1 ]] || cfsp_fail 2 "$JOB_NNODES nodes: set SCRATCH_DIR to a directory shared by all nodes (node-local /tmp cannot hold one HDF5 file written by every rank)"
    base=$CFSP_LOCAL_TMP
  fi
  CFSP_SCR=$(cfsp_abspath "$base")/cfsp-$JOB_ID
  mkdir -p "$CFSP_SCR" || cfsp_fail 2 "cannot create the scratch directory $CFSP_SCR"
  [[ -z $(ls -A "$CFSP_SCR") ]] || cfsp_fail 2 "scratch directory $CFSP_SCR is not empty (an earlier run of job $JOB_ID?): remove it"

  # --- the cfsp-mpi command line
  local args=() extra=()
  if [[ -n ${STATS:-} ]]; then
    STATS=$(cfsp_abspath "$STATS")
    [[ -r $STATS ]] || cfsp_fail 2 "STATS=$STATS: no such file (did the calibration job succeed?)"
    args+=(prune --stats "$STATS")
  fi
  [[ -n ${CONFIG:-} ]] && { [[ -r $CONFIG ]] || cfsp_fail 2 "CONFIG=$CONFIG: no such file (relative to $JOB_SUBMIT_DIR)"; args+=(--config "$CONFIG"); }
  [[ -n ${MODEL:-} ]] && args+=(--model "$MODEL")
  [[ -n ${CALIB_TOKENS:-} ]] && args+=(--calib-tokens "$CALIB_TOKENS")
  [[ -n ${EVAL_TOKENS:-} ]] && args+=(--eval-tokens "$EVAL_TOKENS")
  [[ -n ${NSAMPLES:-} ]] && args+=(--nsamples "$NSAMPLES")
  [[ -n ${SEQLEN:-} ]] && args+=(--seqlen "$SEQLEN")
  [[ -n ${CHUNK:-} ]] && args+=(--chunk "$CHUNK")
  [[ -n ${EVAL_WINDOWS:-} ]] && args+=(--eval-windows "$EVAL_WINDOWS")
  if [[ -n ${RATIOS+set} ]]; then   # RATIOS="" means: no pruning (dense evaluation and stats.h5 only)
    local r=${RATIOS//[[:space:]]/,}
    args+=(--ratios "$r")
  fi
  [[ -n ${METHOD:-} ]] && args+=(--method "${METHOD//[[:space:]]/,}")
  [[ -n ${GLOBAL_METRIC:-} ]] && args+=(--global-metric "$GLOBAL_METRIC")
  [[ -n ${LOCAL_METRIC:-} ]] && args+=(--local-metric "$LOCAL_METRIC")
  [[ -n ${ALIGN:-} ]] && args+=(--align "$ALIGN")
  [[ -n ${SEED:-} ]] && args+=(--seed "$SEED")
  [[ -n ${EVAL_DENSE:-} ]] && args+=(--eval-dense "$EVAL_DENSE")
  args+=(--output-dir "$CFSP_SCR")
  if [[ -n ${JOB_MEM_MB:-} && $JOB_MEM_MB =~ ^[0-9]+$ ]]; then
    # refuse to start (one clear line) rather than be killed by the memory limit mid-run
    args+=(--max-rank-memory "$(awk -v m="$JOB_MEM_MB" 'BEGIN { printf "%.3f", m * 1048576 / 1e9 }')")
  fi
  read -r -a extra <<<"${EXTRA_ARGS:-}"
  args+=("${extra[@]}")

  if [[ $LAUNCHER == srun ]]; then
    CFSP_LAUNCH=(srun --mpi="${SRUN_MPI:-pmix}" --ntasks="$CFSP_NRANKS" --cpus-per-task=1 --kill-on-bad-exit=1 "$CFSP_BIN" "${args[@]}")
  else
    local margs=()
    read -r -a margs <<<"${MPIRUN_ARGS:-}"
    [[ -n ${JOB_HOSTFILE:-} ]] && margs=(--hostfile "$JOB_HOSTFILE" "${margs[@]}")
    CFSP_LAUNCH=(mpirun -n "$CFSP_NRANKS" --bind-to core "${margs[@]}" "$CFSP_BIN" "${args[@]}")
  fi

  # --- what is about to run, and whether the memory request fits the model
  cfsp_log "job $JOB_ID ($JOB_SCHED) on ${JOB_HOSTS:-$(hostname)}: $JOB_NNODES node(s), $CFSP_NRANKS ranks, memory per rank ${JOB_MEM_MB:+$JOB_MEM_MB MiB}${JOB_MEM_MB:-unknown}"
  cfsp_log "executable: $CFSP_BIN"
  cfsp_log "scratch: $CFSP_SCR"
  cfsp_log "results: $OUTDIR"
  cfsp_log "command: $(printf '%q ' "${CFSP_LAUNCH[@]}")"
  PYTHON=${PYTHON:-/usr/bin/python3}
  [[ -x $PYTHON ]] || PYTHON=$(command -v python3 || true)
  if [[ -n $PYTHON && -r $CFSP_ROOT/mpi_scripts/cfsp_resources.py ]]; then
    local ra=(--ranks "$CFSP_NRANKS") need
    if [[ -n ${MODEL:-} ]]; then ra+=(--model "$MODEL"); elif [[ -n ${CONFIG:-} ]]; then ra+=(--config "$CONFIG"); fi
    if [[ ${#ra[@]} -gt 2 ]]; then
      [[ -n ${NSAMPLES:-} ]] && ra+=(--nsamples "$NSAMPLES")
      [[ -n ${SEQLEN:-} ]] && ra+=(--seqlen "$SEQLEN")
      [[ -n ${CHUNK:-} ]] && ra+=(--chunk "$CHUNK")
    fi
    # cfsp_resources.py asks `cfsp-mpi plan` (this job's executable) for the largest rank's request;
    # if that fails, its one error line is logged and the job runs without the check
    if [[ ${#ra[@]} -gt 2 ]]; then
      local perr
      perr=$(mktemp "${TMPDIR:-/tmp}/cfsp-plan-err.XXXXXX") || perr=/dev/null
      if need=$(CFSP_BIN=$CFSP_BIN "$PYTHON" "$CFSP_ROOT/mpi_scripts/cfsp_resources.py" "${ra[@]}" --mem-mb 2>"$perr"); then
        cfsp_log "memory rule (cfsp-mpi plan: stored + max(stored / 4, largest FFN slice) + buffers + 1 GiB, largest rank): $need MiB per rank"
        if [[ -n ${JOB_MEM_MB:-} && $JOB_MEM_MB =~ ^[0-9]+$ && $JOB_MEM_MB -lt $need ]]; then
          cfsp_log "warning: the job has $JOB_MEM_MB MiB per rank, less than the $need MiB of the rule (mpi_scripts/cfsp_resources.py)"
        fi
      else
        cfsp_log "warning: memory check skipped: $(tail -n 1 "$perr")"
      fi
      [[ $perr == /dev/null ]] || rm -f "$perr"
    fi
  fi

  # --- run
  trap cfsp_on_signal TERM INT USR1 USR2
  "${CFSP_LAUNCH[@]}" &
  CFSP_PID=$!
  local rc=0
  wait "$CFSP_PID" || rc=$?
  while kill -0 "$CFSP_PID" 2>/dev/null; do   # a trapped signal interrupts wait: wait again
    rc=0
    wait "$CFSP_PID" || rc=$?
  done
  CFSP_PID=
  trap - TERM INT USR1 USR2
  [[ $CFSP_SIGNALLED -eq 1 ]] && rc=124

  # --- results back to OUTDIR, report, clean up
  local status=$rc tmps=()
  shopt -s nullglob
  tmps=("$CFSP_SCR"/*.tmp)
  shopt -u nullglob
  if ! cfsp_copy_back; then
    cfsp_log "error: copying $CFSP_SCR to $OUTDIR failed (disk full? quota?); the scratch directory is kept"
    [[ $status -eq 0 ]] && status=3
  fi
  cfsp_write_jobinfo "$status"
  if [[ $status -eq 0 ]]; then
    if [[ ${REPORT:-1} != 0 ]]; then
      if [[ -n $PYTHON ]] && "$PYTHON" "$CFSP_ROOT/mpi_scripts/report.py" "$OUTDIR"; then
        cfsp_log "report: $OUTDIR/report.png"
      else
        cfsp_log "warning: the report could not be made (needs python3-matplotlib; run mpi_scripts/report.py $OUTDIR later); the results are complete"
      fi
    fi
    if [[ ${KEEP_SCRATCH:-0} != 1 ]]; then
      rm -rf "$CFSP_SCR"
      [[ -z ${SCRATCH_DIR:-} && ${CFSP_TMP_OWNED:-0} == 1 ]] && rmdir "$(dirname "$CFSP_SCR")" 2>/dev/null
    else cfsp_log "scratch kept (KEEP_SCRATCH=1): $CFSP_SCR"; fi
    cfsp_log "done in $((SECONDS - CFSP_S0)) s: $OUTDIR"
  else
    if [[ $rc -eq 124 ]]; then
      cfsp_log "FAILED: stopped by a signal after $((SECONDS - CFSP_S0)) s (time limit? see the scheduler's job state)"
    else
      cfsp_log "FAILED: cfsp-mpi exited with status $rc after $((SECONDS - CFSP_S0)) s; its reason is the 'cfsp-mpi: error:' or 'cfsp-mpi: fatal:' line above"
    fi
    if rmdir "$CFSP_SCR" 2>/dev/null; then   # nothing was written (or all of it was copied)
      [[ -z ${SCRATCH_DIR:-} && ${CFSP_TMP_OWNED:-0} == 1 ]] && rmdir "$(dirname "$CFSP_SCR")" 2>/dev/null
      cfsp_log "what exists was copied to $OUTDIR (job.txt records the command; job.log is this log)"
    else
      cfsp_log "what exists was copied to $OUTDIR (job.txt records the command); the scratch directory is kept for inspection: $(hostname):$CFSP_SCR"
    fi
    [[ ${#tmps[@]} -gt 0 ]] && cfsp_log "incomplete outputs left in scratch (never valid; delete them): ${tmps[*]}"
    cfsp_log "no output is final unless results.json exists; rerun the same job (FORCE=1 or a new OUTDIR), or, if a stats.h5 exists, STATS=.../stats.h5 to skip calibration"
  fi
  if [[ -n ${JOB_LOG:-} && -r $JOB_LOG ]]; then cp "$JOB_LOG" "$OUTDIR/job.log" 2>/dev/null || true; fi
  return "$status"
}
