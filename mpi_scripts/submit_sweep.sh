#!/usr/bin/env bash
# submit_sweep.sh — submit a cfsp-mpi sweep to Slurm with resources derived from the model.
#
# The normal case, one job: one calibration pass, every ratio (and every method of --method):
#   mpi_scripts/submit_sweep.sh --config configs/llama2-7b.json --ratios 0.1,0.2,0.3,0.4,0.5 --ranks 32
# The array variant, one statistics file reused across methods / metrics:
#   mpi_scripts/submit_sweep.sh --config configs/llama2-7b.json --ratios 0.2,0.4 --ranks 32 \
#       --sweep "cfsp:angular cfsp:mse cfsp:cosine wanda_sp flap mag_sp"
#   = job 1: cfsp.sbatch with RATIOS= (dense perplexity + stats.h5 -> OUTDIR/calibration)
#     job 2: cfsp-array.sbatch --array=0-5 --dependency=afterok:<job 1>, task i: prune --stats for item i
#   --stats FILE skips job 1 and reuses an existing stats.h5.
#
# Options:
#   --config FILE        cfsp-mpi run file (model, tokens, options); relative to the submit directory
#   --ratios LIST        pruning ratios, comma-separated
#   --method LIST        methods of the single job (default: the run file's)
#   --sweep "ITEMS"      array variant; items METHOD[:GLOBAL_METRIC[:LOCAL_METRIC]]
#   --stats FILE         array variant: existing statistics, no calibration job
#   --ranks P            MPI ranks = Slurm tasks (default: min(8, stage units); at most the model's
#                        stage units, an attention unit + ceil(m / ffn-slice) FFN slices per block)
#   --nodes N            nodes (default 1; more than one needs --scratch on a shared filesystem)
#   --mem-per-cpu MEM    memory per rank (default: mpi_scripts/cfsp_resources.py, i.e. the largest
#                        rank's request of `cfsp-mpi plan`: stored + max(stored / 4, largest FFN
#                        slice) + buffers + 1 GiB, rounded up to 100 MiB)
#   --time T             time limit of every job (default 04:00:00)
#   --outdir DIR         results directory (default results/sweep-YYYYmmdd-HHMMSS)
#   --scratch DIR        SCRATCH_DIR of the jobs
#   --launcher L         srun (default) or mpirun
#   --dry-run            print the sbatch commands, submit nothing
#   -- ARGS              further sbatch options for every job (e.g. -- --partition=cpu --account=abc)
# Other job parameters (NSAMPLES, SEQLEN, CHUNK, EVAL_WINDOWS, EXTRA_ARGS, MODULES, CFSP_BIN, ...)
# pass through the environment (sbatch exports it); NSAMPLES, SEQLEN and CHUNK also enter the
# memory plan. Prints the job ids, one "name id" line per job.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "submit_sweep: error: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

config='' ratios='' method='' sweep='' stats='' ranks='' nodes=1 mem='' time=04:00:00 outdir='' scratch='' launcher=srun dry=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --config) config=${2:?}; shift 2 ;;
    --ratios) ratios=${2?}; shift 2 ;;
    --method) method=${2:?}; shift 2 ;;
    --sweep) sweep=${2:?}; shift 2 ;;
    --stats) stats=${2:?}; shift 2 ;;
    --ranks) ranks=${2:?}; shift 2 ;;
    --nodes) nodes=${2:?}; shift 2 ;;
    --mem-per-cpu) mem=${2:?}; shift 2 ;;
    --time) time=${2:?}; shift 2 ;;
    --outdir) outdir=${2:?}; shift 2 ;;
    --scratch) scratch=${2:?}; shift 2 ;;
    --launcher) launcher=${2:?}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ -n $config || -n ${MODEL:-} ]] || die "--config RUN.json is required (or MODEL, CALIB_TOKENS, ... in the environment)"
[[ -z $config || -r $config ]] || die "$config: no such file"
[[ $launcher == srun || $launcher == mpirun ]] || die "--launcher must be srun or mpirun"
[[ -z $stats || -n $sweep ]] || die "--stats is for the array variant: give --sweep too (or use cfsp.sbatch with STATS=...)"
command -v sbatch >/dev/null || [[ $dry -eq 1 ]] || die "sbatch not found (not a Slurm login node?)"

# resources from the model (cfsp_resources.py asks `cfsp-mpi plan`): default ranks min(units, 8),
# memory per rank
py=/usr/bin/python3
[[ -x $py ]] || py=python3
src=(--config "$config")
[[ -n ${MODEL:-} ]] && src=(--model "$MODEL")
[[ -n ${NSAMPLES:-} ]] && src+=(--nsamples "$NSAMPLES")
[[ -n ${SEQLEN:-} ]] && src+=(--seqlen "$SEQLEN")
[[ -n ${CHUNK:-} ]] && src+=(--chunk "$CHUNK")
units=$("$py" "$here/cfsp_resources.py" "${src[@]}" --suggest-ranks) || die "cannot plan the model (see above)"
if [[ -z $ranks ]]; then ranks=$((units < 8 ? units : 8)); fi
[[ $ranks =~ ^[1-9][0-9]*$ ]] || die "--ranks $ranks: expected a positive integer"
[[ $ranks -le $units ]] || die "--ranks $ranks but the model has $units stage units (attention + FFN slices): use at most $units ranks or a smaller --ffn-slice"
if [[ -z $mem ]]; then
  mem=$("$py" "$here/cfsp_resources.py" "${src[@]}" --ranks "$ranks" --mem-mb)M || die "cannot estimate the memory per rank"
fi
outdir=${outdir:-results/sweep-$(date +%Y%m%d-%H%M%S)}

common=(--nodes="$nodes" --ntasks="$ranks" --cpus-per-task=1 --mem-per-cpu="$mem" --time="$time" --parsable "${extra[@]}")
envs=(LAUNCHER="$launcher")
[[ -n $config ]] && envs+=(CONFIG="$config")
[[ -n $scratch ]] && envs+=(SCRATCH_DIR="$scratch")

submit() {  # submit NAME ENV... -- SBATCH-ARGS... : prints the job id
  local name=$1 e=() id
  shift
  while [[ $1 != -- ]]; do e+=("$1"); shift; done
  shift
  if [[ $dry -eq 1 ]]; then
    printf '%q ' env -u STATS -u SWEEP "${e[@]}" sbatch "$@" >&2
    echo >&2
    echo "DRYRUN_$name"
    return
  fi
  id=$(env -u STATS -u SWEEP "${e[@]}" sbatch "$@") || die "sbatch failed for $name"
  echo "${id%%;*}"
}

echo "submit_sweep: $units stage units, $ranks ranks x $mem, time $time, results in $outdir" >&2
if [[ -z $sweep ]]; then
  e=("${envs[@]}" OUTDIR="$outdir" RATIOS="$ratios")
  [[ -n $method ]] && e+=(METHOD="$method")
  id=$(submit job "${e[@]}" -- "${common[@]}" --job-name=cfsp "$here/cfsp.sbatch")
  echo "job $id"
  exit 0
fi

read -r -a items <<<"$sweep"
[[ ${#items[@]} -gt 0 ]] || die "--sweep is empty"
dep=()
if [[ -z $stats ]]; then
  cid=$(submit calibration "${envs[@]}" OUTDIR="$outdir/calibration" RATIOS= -- "${common[@]}" --job-name=cfsp-calib "$here/cfsp.sbatch")
  echo "calibration $cid"
  stats=$outdir/calibration/stats.h5
  dep=(--dependency="afterok:$cid" --kill-on-invalid-dep=yes)
fi
aid=$(submit array "${envs[@]}" OUTDIR="$outdir" STATS="$stats" SWEEP="$sweep" RATIOS="$ratios" -- \
  "${common[@]}" "${dep[@]}" --array="0-$((${#items[@]} - 1))" --job-name=cfsp-sweep "$here/cfsp-array.sbatch")
echo "array $aid"
