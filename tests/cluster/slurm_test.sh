#!/usr/bin/env bash
# slurm_test.sh — the batch scripts against a real Slurm: a single-node cluster on this machine.
#
#   sudo tests/cluster/slurm_test.sh          (root: it installs packages and starts daemons)
#
# Not part of ctest (it needs root, package installation and daemons). It
#   1. installs Debian's slurm-wlm, munge, shellcheck, python3-matplotlib (apt-get update first)
#      and builds cfsp-mpi (mpi_scripts/setup.sh, into CFSP_BUILD_DIR, default /tmp/build-slurm);
#   2. writes a one-node slurm.conf (slurmctld + slurmd on localhost over loopback, NodeName=localhost
#      CPUs=2, OverSubscribe=FORCE:4, select/cons_tres, proctrack/linuxproc, no cgroups, MpiDefault
#      pmix if the plugin exists), starts munged (private key and socket), slurmctld and slurmd
#      directly (no systemd) and waits for the node to be idle;
#   3. submits on stories260K (2 tasks, nsamples 8, seqlen 128, ratios 0.2,0.4, 2000 eval windows):
#        A  cfsp.sbatch, LAUNCHER=srun (srun --mpi=pmix), all four methods, default scratch /tmp/JOBID
#        S  submit_sweep.sh --sweep "cfsp:mse wanda_sp flap" --launcher mpirun: a calibration job,
#           then cfsp-array.sbatch (--array=0-2, --dependency=afterok) running prune --stats
#        C  a failing job (missing model, LAUNCHER=mpirun): exit 1 and one error line
#        D  OUTDIR already full: exit 2, nothing started
#        E  a long job cancelled once its first progress line is in the log: the signal path
#      and waits (TIMEOUT seconds, default 1500);
#   4. checks job states and exit codes, the outputs (results.json/md, svg, stats.h5, every pruned
#      HDF5 file through `cfsp-mpi verify`, job.txt, job.log, report.png), that the array's
#      prune --stats perplexities equal job A's bit for bit (srun vs mpirun, full run vs saved
#      statistics), that the scratch directories are gone, and the progress lines in a batch log
#      (format, rank tag, no carriage return, at most one per stage per 10 s);
#   5. copies the job logs, the report of job A, slurm.conf and a summary to results/cluster/
#      (README.md, logs/), and tears the cluster down (daemons stopped by pid, state removed).
# Prints "N passed, N failed"; exit status 0 only if everything passed. KEEP=1 leaves the cluster
# and its state directory (/tmp/cfsp-slurm-test) for inspection.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T=${CFSP_SLURM_TEST_DIR:-/tmp/cfsp-slurm-test}
TIMEOUT=${TIMEOUT:-1500}
BUILD=${CFSP_BUILD_DIR:-/tmp/build-slurm}
RESULTS=$ROOT/results/cluster
PORT_CTLD=${SLURMCTLD_PORT:-16817}
PORT_D=${SLURMD_PORT:-16818}
T_START=$SECONDS

log() { printf 'slurm_test: %s\n' "$*"; }
die() { log "error: $*"; exit 1; }
npass=0
nfail=0
CHECKS=()
ok() {  # ok DESCRIPTION: records the status of the previous command
  local st=$?
  if [[ $st -eq 0 ]]; then npass=$((npass + 1)); CHECKS+=("PASS $1"); log "PASS $1"
  else nfail=$((nfail + 1)); CHECKS+=("FAIL $1"); log "FAIL $1"; fi
  return 0
}

[[ $(id -u) -eq 0 ]] || die "run as root (installs packages, starts munged, slurmctld and slurmd)"
[[ -d /work/shared/models/stories260K || -d $ROOT/../shared/models/stories260K ]] || die "the shared model stories260K is missing"

# ---------------------------------------------------------------- teardown (always)
PIDS=()
teardown() {
  local st=$?
  if [[ ${KEEP:-0} == 1 ]]; then
    log "KEEP=1: cluster left running (SLURM_CONF=$T/etc/slurm.conf; daemons ${PIDS[*]}); remove $T when done"
    return
  fi
  if [[ ${#PIDS[@]} -gt 0 ]]; then
    command -v scancel >/dev/null && SLURM_CONF=$T/etc/slurm.conf timeout 10 scancel --quiet --user=root 2>/dev/null
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 1 20); do
      local alive=0
      for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [[ $alive -eq 0 ]] && break
      sleep 0.5
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    log "teardown: daemons stopped (${PIDS[*]})"
  fi
  # slurmstepd processes of this cluster, if any survived (started by our slurmd)
  local s
  for s in $(pgrep -f "slurmstepd.*" 2>/dev/null); do
    grep -qs "$T" "/proc/$s/environ" && kill -KILL "$s" 2>/dev/null
  done
  rm -rf "$T"
  log "teardown: removed $T"
  return $st
}
trap teardown EXIT

# an earlier run that was interrupted: stop its daemons (recorded pids), remove its state
if [[ -d $T ]]; then
  for f in "$T"/pids/*; do
    [[ -r $f ]] && kill -TERM "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  rm -rf "$T"
fi
mkdir -p "$T"/{etc,state,spool/slurmd-localhost,log,logs,out,scratch,munge-key,munge-run,pids}
mkdir -p "$RESULTS/logs"
rm -f "$RESULTS"/logs/*.out "$RESULTS/logs/slurm_test.log"
exec > >(tee "$RESULTS/logs/slurm_test.log") 2>&1

# ---------------------------------------------------------------- 1. packages, build
log "apt-get update; installing slurm-wlm munge shellcheck python3-matplotlib"
apt-get update -qq || die "apt-get update failed"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  slurm-wlm munge shellcheck python3-matplotlib >/dev/null || die "apt-get install failed"
log "building cfsp-mpi in $BUILD"
CFSP_BUILD_DIR=$BUILD bash -c "source '$ROOT/mpi_scripts/setup.sh'" || die "build failed"
CFSP_BIN=$BUILD/cfsp-mpi
[[ -x $CFSP_BIN ]] || die "$CFSP_BIN was not built"

log "bash -n and shellcheck on the scripts"
SCRIPTS=("$ROOT"/mpi_scripts/{cfsp.sbatch,cfsp-array.sbatch,cfsp.pbs,cfsp_job.sh,submit_sweep.sh} "$ROOT/tests/cluster/slurm_test.sh")
for s in "${SCRIPTS[@]}"; do bash -n "$s"; ok "bash -n $(basename "$s")"; done
(cd "$ROOT/mpi_scripts" && shellcheck -x -s bash "${SCRIPTS[@]}"); ok "shellcheck clean: ${#SCRIPTS[@]} scripts"

# ---------------------------------------------------------------- 2. the cluster
PLUGDIR=/usr/lib/x86_64-linux-gnu/slurm-wlm
if [[ -e $PLUGDIR/mpi_pmix.so ]]; then MPIDEF=pmix; else MPIDEF=none; fi
REALMEM=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
REALMEM=${REALMEM:-2000}
cat >"$T/etc/slurm.conf" <<EOF
# one-node test cluster written by tests/cluster/slurm_test.sh
ClusterName=cfsptest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT_CTLD
SlurmdPort=$PORT_D
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge-run/munge.socket
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/slurmd-%n
SlurmctldPidFile=$T/pids/slurmctld.pid
SlurmdPidFile=$T/pids/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=$MPIDEF
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=$REALMEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
export SLURM_CONF=$T/etc/slurm.conf

log "starting munged (private key and socket in $T)"
dd if=/dev/urandom of="$T/munge-key/munge.key" bs=1024 count=1 status=none
chmod 700 "$T/munge-key"
chmod 400 "$T/munge-key/munge.key"
chmod 755 "$T/munge-run"
munged --force --key-file="$T/munge-key/munge.key" --socket="$T/munge-run/munge.socket" \
  --pid-file="$T/pids/munged.pid" --seed-file="$T/munge-key/seed" --log-file="$T/log/munged.log" || die "munged did not start"
for _ in $(seq 1 20); do [[ -s $T/pids/munged.pid ]] && break; sleep 0.2; done
PIDS+=("$(cat "$T/pids/munged.pid")")
munge -S "$T/munge-run/munge.socket" -n | unmunge -S "$T/munge-run/munge.socket" >/dev/null || die "munge credential round trip failed"

log "starting slurmctld and slurmd (MpiDefault=$MPIDEF, RealMemory=$REALMEM)"
slurmctld -D -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
PIDS+=($!)
sleep 1
slurmd -D -f "$SLURM_CONF" -N localhost >"$T/log/slurmd.out" 2>&1 &
PIDS+=($!)
state=
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -n localhost -o %T 2>/dev/null | head -n 1)
  [[ $state == idle ]] && break
  sleep 1
done
[[ $state == idle ]] || { tail -n 20 "$T"/log/*.log; die "node localhost is '$state', not idle, after 60 s"; }
ok "single-node cluster up: node localhost idle"
srun -n 2 --mem-per-cpu=100M true; ok "srun -n 2 true"

# ---------------------------------------------------------------- 3. jobs
cd "$ROOT" || die "cannot enter $ROOT"
export CFSP_BIN
MEM=$(/usr/bin/python3 mpi_scripts/cfsp_resources.py --config configs/stories260K.json --ranks 2 --mem-mb)M
ok "cfsp_resources.py: $MEM per rank for stories260K on 2 ranks"
COMMON=(--ntasks=2 --cpus-per-task=1 --mem-per-cpu="$MEM" --time=00:20:00 --parsable)
SMALL=(CONFIG=configs/stories260K.json NSAMPLES=8 SEQLEN=128 EVAL_WINDOWS=2000 "RATIOS=0.2 0.4")
SRUN_MPI=$MPIDEF
[[ $MPIDEF == none ]] && SRUN_MPI=pmi2

JA=$(env "${SMALL[@]}" LAUNCHER=srun SRUN_MPI="$SRUN_MPI" OUTDIR="$T/out/single" \
  sbatch "${COMMON[@]}" --job-name=cfsp-single --output="$T/logs/cfsp-single-%j.out" mpi_scripts/cfsp.sbatch) || die "sbatch A failed"
SW=$(env "${SMALL[@]}" mpi_scripts/submit_sweep.sh --config configs/stories260K.json --ratios 0.2,0.4 --ranks 2 \
  --sweep "cfsp:mse wanda_sp flap" --launcher mpirun --time 00:20:00 --outdir "$T/out/sweep" --scratch "$T/scratch" \
  -- --output="$T/logs/%x-%j.out") || die "submit_sweep.sh failed"
JS=$(sed -n 's/^calibration //p' <<<"$SW")
JR=$(sed -n 's/^array //p' <<<"$SW")
JC=$(env CONFIG=configs/stories260K.json MODEL=/nonexistent/model LAUNCHER=mpirun OUTDIR="$T/out/fail" SCRATCH_DIR="$T/scratch" \
  sbatch "${COMMON[@]}" --job-name=cfsp-fail --output="$T/logs/cfsp-fail-%j.out" mpi_scripts/cfsp.sbatch) || die "sbatch C failed"
mkdir -p "$T/out/full" && echo x >"$T/out/full/existing"
JD=$(env CONFIG=configs/stories260K.json OUTDIR="$T/out/full" \
  sbatch "${COMMON[@]}" --job-name=cfsp-exists --output="$T/logs/cfsp-exists-%j.out" mpi_scripts/cfsp.sbatch) || die "sbatch D failed"
JE=$(env CONFIG=configs/stories260K.json EVAL_WINDOWS=0 OUTDIR="$T/out/cancel" SCRATCH_DIR="$T/scratch" \
  sbatch "${COMMON[@]}" --job-name=cfsp-cancel --output="$T/logs/cfsp-cancel-%j.out" mpi_scripts/cfsp.sbatch) || die "sbatch E failed"
log "submitted: A=$JA (cfsp.sbatch, srun) calibration=$JS array=$JR (submit_sweep.sh, mpirun) C=$JC (fails) D=$JD (OUTDIR full) E=$JE (cancelled)"

# E: cancel once its first progress line is in the log (shows the lines are not buffered)
for _ in $(seq 1 300); do
  grep -qs '^cfsp-mpi: rank [0-9]*: eval dense' "$T/logs/cfsp-cancel-$JE.out" && break
  sleep 1
done
grep -qs '^cfsp-mpi: rank [0-9]*: eval dense' "$T/logs/cfsp-cancel-$JE.out"; ok "job E: a progress line reached the batch log while running"
scancel "$JE"

deadline=$((SECONDS + TIMEOUT))
while [[ -n $(squeue -h -j "$JA,$JS,$JR,$JC,$JD,$JE" 2>/dev/null) ]]; do
  if [[ $SECONDS -gt $deadline ]]; then squeue; log "jobs still queued after ${TIMEOUT} s"; break; fi
  sleep 5
done
log "jobs finished after $((SECONDS - T_START)) s"
! squeue -h -j "$JA,$JS,$JR,$JC,$JD,$JE" 2>/dev/null | grep -q .; ok "all jobs left the queue within ${TIMEOUT} s"

# ---------------------------------------------------------------- 4. checks
jobfield() { scontrol show job -o "$1" 2>/dev/null | sed -n "s/.* $2=\([^ ]*\).*/\1/p" | head -n 1; }
JOBTABLE=()
for j in "$JA" "$JS" "$JC" "$JD" "$JE"; do
  JOBTABLE+=("| $j | $(jobfield "$j" JobName) | $(jobfield "$j" JobState) | $(jobfield "$j" ExitCode) | $(jobfield "$j" RunTime) |")
done
while read -r line; do
  id=$(sed -n 's/^JobId=\([0-9]*\) .*/\1/p' <<<"$line")
  task=$(sed -n 's/.* ArrayTaskId=\([0-9]*\) .*/\1/p' <<<"$line")
  JOBTABLE+=("| $id (${JR}_$task) | $(jobfield "$id" JobName) | $(jobfield "$id" JobState) | $(jobfield "$id" ExitCode) | $(jobfield "$id" RunTime) |")
done < <(scontrol show job -o "$JR" 2>/dev/null | sort -t= -k2 -n)

[[ $(jobfield "$JA" JobState) == COMPLETED && $(jobfield "$JA" ExitCode) == 0:0 ]]; ok "job A (cfsp.sbatch, srun --mpi=$SRUN_MPI) COMPLETED 0:0"
[[ $(jobfield "$JS" JobState) == COMPLETED && $(jobfield "$JS" ExitCode) == 0:0 ]]; ok "calibration job (mpirun) COMPLETED 0:0"
n=$(scontrol show job -o "$JR" 2>/dev/null | grep -c 'JobState=COMPLETED .*ExitCode=0:0')
[[ $n -eq 3 ]]; ok "array job: 3 of 3 tasks COMPLETED 0:0 (prune --stats, mpirun, afterok dependency)"
[[ $(jobfield "$JC" JobState) == FAILED && $(jobfield "$JC" ExitCode) == 1:0 ]]; ok "job C (missing model) FAILED with exit code 1"
[[ $(jobfield "$JD" JobState) == FAILED && $(jobfield "$JD" ExitCode) == 2:0 ]]; ok "job D (OUTDIR not empty) FAILED with exit code 2"
[[ $(jobfield "$JE" JobState) == CANCELLED ]]; ok "job E CANCELLED"

A=$T/out/single
for f in results.json results.md ppl_vs_ratio.svg stats.h5 job.txt job.log report.png; do
  [[ -s $A/$f ]]; ok "job A: $f"
done
[[ $(head -c 8 "$A/report.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; ok "job A: report.png is a PNG"
nh5=0
for f in "$A"/*_r*.h5 "$T"/out/sweep/*/*_r*.h5; do
  [[ -e $f ]] || continue
  "$CFSP_BIN" verify "$f" >/dev/null 2>&1 || { log "verify failed: $f"; nh5=-1000; }
  nh5=$((nh5 + 1))
done
[[ $nh5 -eq 14 ]]; ok "cfsp-mpi verify: 14 pruned HDF5 files (8 from A, 6 from the array) all valid"
grep -q '^exit_status=0$' "$A/job.txt"; ok "job A: job.txt exit_status=0"
[[ ! -e /tmp/$JA ]]; ok "job A: default scratch /tmp/$JA removed after the copy"
[[ -z $(find "$T/scratch" -mindepth 1 -maxdepth 1 ! -name "cfsp-$JC" ! -name "cfsp-$JE") ]]; ok "successful jobs left nothing in SCRATCH_DIR"
for d in calibration cfsp-mse wanda_sp flap; do
  [[ -s $T/out/sweep/$d/results.json && -s $T/out/sweep/$d/report.png && -s $T/out/sweep/$d/job.log ]]; ok "sweep: $d has results.json, report.png, job.log"
done
[[ -s $T/out/sweep/calibration/stats.h5 ]]; ok "sweep: calibration wrote stats.h5"

/usr/bin/python3 - "$T" "$JA" <<'EOF'; ok "results.json checks (see the lines above)"
import json, re, sys
T, ja = sys.argv[1], sys.argv[2]
bad = 0
def check(cond, what):
    global bad
    print("slurm_test:   %s %s" % ("ok  " if cond else "BAD ", what))
    bad += not cond
a = json.load(open(T + "/out/single/results.json"))
check(a["nranks"] == 2 and len(a["stages"]) == 2, "A: 2 ranks, 2 stages")
check(all(s["calib_compute_seconds"] > 0 for s in a["stages"]), "A: calib_compute_seconds > 0 on every rank")
check(sorted((p["method"], p["ratio"]) for p in a["pruned"]) ==
      sorted((m, r) for m in ("cfsp", "wanda_sp", "flap", "mag_sp") for r in (0.2, 0.4)), "A: 4 methods x 2 ratios")
check(a["calibration"]["nsamples"] == 8 and a["calibration"]["seqlen"] == 128, "A: calibration 8 x 128")
cal = json.load(open(T + "/out/sweep/calibration/results.json"))
check(cal["dense"]["ppl"] == a["dense"]["ppl"], "dense perplexity: srun job == mpirun job (%r)" % a["dense"]["ppl"])
check(cal.get("pruned") == [], "calibration job: no pruned models (RATIOS empty)")
for item, method in (("wanda_sp", "wanda_sp"), ("flap", "flap")):
    s = json.load(open("%s/out/sweep/%s/results.json" % (T, item)))
    check("stats_file" in s["calibration"] and "dense" not in s, "%s: prune --stats run, no dense evaluation" % item)
    for r in (0.2, 0.4):
        x = [p for p in s["pruned"] if p["ratio"] == r]
        y = [p for p in a["pruned"] if p["ratio"] == r and p["method"] == method]
        check(len(x) == 1 and len(y) == 1 and x[0]["ppl"] == y[0]["ppl"] and x[0]["keep_counts"] == y[0]["keep_counts"],
              "%s r=%g: array task (prune --stats) == job A bit for bit (%r)" % (item, r, x[0]["ppl"] if x else None))
m = json.load(open(T + "/out/sweep/cfsp-mse/results.json"))
check(m["options"]["global_metric"] == "mse" and [p["method"] for p in m["pruned"]] == ["cfsp", "cfsp"], "cfsp-mse: global metric mse, 2 models")
# progress lines of job A: format, no carriage return, at most one per stage per 10 s
log = open("%s/logs/cfsp-single-%s.out" % (T, ja), "rb").read()
check(b"\r" not in log, "A log: no carriage return")
pat = re.compile(r"^cfsp-mpi: rank (\d+): (calibration|eval [^:]+): blocks \d+-\d+, micro-batch \d+/\d+, \d+ tokens, \d+ tokens/s$")
lines = [l for l in log.decode().splitlines() if l.startswith("cfsp-mpi: rank ")]
check(lines and all(pat.match(l) for l in lines), "A log: %d progress lines, all 'cfsp-mpi: rank R: STAGE: blocks a-b, micro-batch i/n, N tokens, X tokens/s'" % len(lines))
secs = {"eval dense": a["dense"]["seconds"], "calibration": a["calibration"]["seconds"]}
for p in a["pruned"]:
    secs["eval %s r=%g" % (p["method"], p["ratio"])] = p["eval_seconds"]
count = {}
for l in lines:
    r, stage = pat.match(l).groups()
    count[(r, stage)] = count.get((r, stage), 0) + 1
over = [(k, v, secs.get(k[1])) for k, v in count.items() if secs.get(k[1]) is not None and v > int(secs[k[1]] / 10) + 2]
check(not over, "A log: at most one progress line per rank per stage per 10 s %s" % (over or ""))
long = [k for k, s in secs.items() if s >= 12]
missing = [(r, k) for k in long for r in ("0", "1") if (r, k) not in count]
check(not missing, "A log: every stage of >= 12 s (%d) has a line from each rank %s" % (len(long), missing or ""))
sys.exit(1 if bad else 0)
EOF

LA=$T/logs/cfsp-single-$JA.out
grep -q '^cfsp-job: .* done in [0-9]* s: ' "$LA"; ok "job A log: cfsp-job lines and 'done'"
grep -q '^report.py: .*report.png' "$LA"; ok "job A log: report.py ran at the end of the job"
LC=$T/logs/cfsp-fail-$JC.out
[[ $(grep -c '^cfsp-mpi: error: ' "$LC") -eq 1 ]]; ok "job C log: exactly one 'cfsp-mpi: error:' line: $(grep -m1 '^cfsp-mpi: error: ' "$LC")"
grep -q '^cfsp-job: .* FAILED: cfsp-mpi exited with status 1' "$LC"; ok "job C log: FAILED line with the status"
grep -q '^exit_status=1$' "$T/out/fail/job.txt" && [[ ! -e $T/out/fail/results.json ]]; ok "job C: job.txt exit_status=1, no results.json"
grep -q 'status 2: nothing was started' "$T/logs/cfsp-exists-$JD.out" && [[ $(ls "$T/out/full") == existing ]]; ok "job D: refused, existing OUTDIR untouched"
LE=$T/logs/cfsp-cancel-$JE.out
grep -q '^cfsp-job: .* FAILED: stopped by a signal' "$LE" && grep -q '^exit_status=124$' "$T/out/cancel/job.txt"; ok "job E: signal trapped, status 124 recorded"
[[ -z $(find "$T/scratch" -name '*.tmp') ]]; ok "no *.tmp file left in any scratch directory"

# ---------------------------------------------------------------- 5. results/cluster
cp "$T"/logs/*.out "$RESULTS/logs/"
cp "$SLURM_CONF" "$RESULTS/slurm.conf"
cp "$A/report.png" "$RESULTS/report-single.png"
cp "$A/results.md" "$RESULTS/results-single.md"
cp "$T/out/sweep/cfsp-mse/report.png" "$RESULTS/report-sweep-cfsp-mse.png"
ELAPSED=$((SECONDS - T_START))
{
  echo "# Slurm integration test (tests/cluster/slurm_test.sh)"
  echo
  echo "Run $(date '+%F %T %Z') on $(hostname) ($(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo)) as root, in ${ELAPSED} s."
  echo "Slurm $(sinfo -V | awk '{print $2}'), $(mpirun --version 2>/dev/null | head -n 1), munge $(munged -V 2>&1 | awk '{print $1}' | sed 's/munge-//'),"
  echo "one node over loopback (slurm.conf here; MpiDefault=$MPIDEF, select/cons_tres, OverSubscribe=FORCE:4, proctrack/linuxproc, no cgroups)."
  echo
  echo "Command: \`sudo tests/cluster/slurm_test.sh\` (not in ctest). Result: **$npass passed, $nfail failed**."
  echo
  echo "Model stories260K (5 blocks), 2 tasks, nsamples 8, seqlen 128, ratios 0.2,0.4, 2000 evaluation windows of 128 tokens."
  echo
  echo "| job | name | state | exit | run time |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${JOBTABLE[@]}"
  echo
  echo "- A \`cfsp-single\`: mpi_scripts/cfsp.sbatch, LAUNCHER=srun (\`srun --mpi=$SRUN_MPI\`), all four methods, default scratch /tmp/JOBID."
  echo "- \`cfsp-calib\` + \`cfsp-sweep\` array: mpi_scripts/submit_sweep.sh --sweep \"cfsp:mse wanda_sp flap\" --launcher mpirun (calibration job, then cfsp-array.sbatch with --dependency=afterok, each task \`prune --stats\`)."
  echo "- \`cfsp-fail\`: missing model under mpirun (exit 1, one error line); \`cfsp-exists\`: OUTDIR not empty (exit 2, nothing started); \`cfsp-cancel\`: scancel while running (trap, status 124)."
  echo
  echo "## Checks"
  echo
  printf -- '- %s\n' "${CHECKS[@]}"
  echo
  echo "## Files"
  echo
  echo "- \`logs/\`: the batch logs of every job; \`logs/slurm_test.log\`: this test's own log."
  echo "- \`report-single.png\`, \`results-single.md\`: report.py output and results.md of job A; \`report-sweep-cfsp-mse.png\`: one array task (prune --stats: time per pruned model instead of calibration stages)."
  echo "- \`slurm.conf\`: the test cluster's configuration (paths under the removed /tmp/cfsp-slurm-test)."
} >"$RESULTS/README.md"
log "summary: $RESULTS/README.md"
log "$npass passed, $nfail failed"
[[ $nfail -eq 0 ]]
