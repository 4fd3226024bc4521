"""bench_recover_report.py RAW OUT "MODEL..." "N..." — the table of bench_recover.sh from its raw files
(RAW/machine.txt, RAW/recover-<m>-n<N>.json): writes OUT/recover.json and OUT/recover.md.

Per slice and rank count N (one job each, the same steps, batch and tokens):
  step seconds      = timings.train_seconds / steps_done
  tokens/s per rank = B x T x steps / train_seconds / N
  efficiency        = step seconds at -n 1 / (N x step seconds at -n N)  (the -n 1 job is the
                      data-parallel trainer, the same arithmetic as one pipeline stage)
  predicted         = (sum of stage costs / N) / largest stage cost x B / (B + S - 1): the stage
                      balance of recover.json's plan times the 1F1B fill/drain of B windows on S
                      stages, communication left out
  peak RSS          = the largest rank_vmhwm_bytes; the bound of the pipelined trainer is its own
                      weights (rank_weight_bytes) + adapters and AdamW state (16 bytes a parameter)
                      + activations: one block's (train_ops.h: T (6 D + 2 KV + 3 m) + H T^2 floats)
                      per block held + the block inputs of the windows in flight (S - s) x blocks x T D
                      floats + the head's logits T V floats on the last stage
"""
import json
import os
import sys

NAMES = {"7b": "7B-shape slice (2 blocks)", "70b": "70B-shape slice (4 blocks)"}


def main():
    raw, out, models, ns = sys.argv[1], sys.argv[2], sys.argv[3].split(), [int(x) for x in sys.argv[4].split()]
    machine = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(raw, "machine.txt")) if "=" in l)
    rows = []
    for m in models:
        jobs = {n: json.load(open(os.path.join(raw, "recover-%s-n%d.json" % (m, n)))) for n in ns}
        base = None
        for n in ns:
            r = jobs[n]
            h, tm, t = r["hparams"], r["timings"], r["trainer"]
            steps = r["steps_done"] - r["start_step"]
            step_s = tm["train_seconds"] / steps
            if n == 1:
                base = step_s
            pred = None
            if t["kind"] == "pipeline":
                c = t["stage_cost_flops_per_token"]
                S, B = t["stages"], h["batch"]
                pred = (sum(c) / len(c)) / max(c) * B / (B + S - 1) * (len(c) / n)
            row = {"model": m, "name": NAMES.get(m, m), "nranks": n, "trainer": t["kind"], "stages": t.get("stages", 1),
                   "first_block": t.get("first_block"), "batch": h["batch"], "seqlen": h["seqlen"], "steps": steps,
                   "lora_params": r["plan"]["lora_params"], "step_seconds": step_s,
                   "tokens_per_second_per_rank": h["batch"] * h["seqlen"] / step_s / n,
                   "efficiency": base / (n * step_s) if base else None, "predicted_efficiency": pred,
                   "rank_compute_seconds": tm.get("rank_compute_seconds"), "rank_wait_seconds": tm.get("rank_wait_seconds"),
                   "rank_vmhwm_bytes": tm.get("rank_vmhwm_bytes"), "rank_weight_bytes": tm.get("rank_weight_bytes"),
                   "loss_last": r["log"][-1]["loss"] if r["log"] else None,
                   "rank_activations_kept": tm.get("rank_activations_kept"), "rank_activation_bytes": tm.get("rank_activation_bytes"),
                   "oversubscribed": n > int(machine.get("nproc", "1"))}
            if row["rank_vmhwm_bytes"] and row["rank_weight_bytes"]:
                row["peak_rss_over_bound"] = max(v / (1.25 * w + 1e9) for v, w in zip(row["rank_vmhwm_bytes"], row["rank_weight_bytes"]))
            rows.append(row)
    doc = {"tool": "mpi_scripts/bench_recover.sh", "machine": machine, "rows": rows}
    json.dump(doc, open(os.path.join(out, "recover.json"), "w"), indent=1)
    L = ["# Recovery training step at scale (`cfsp-mpi recover`)", "",
         "`mpi_scripts/bench_recover.sh`, %s, %s cores, commit %s%s, %s; load %s at the start, %s at the end." % (
             machine.get("cpu_model", "?"), machine.get("nproc", "?"), machine.get("git_commit", "?")[:10],
             " + %s uncommitted files" % machine["git_dirty_files"] if machine.get("git_dirty_files", "0") != "0" else "",
             machine.get("date", "?"), machine.get("loadavg_start", "?"), machine.get("loadavg_end", "?")),
         "bf16 flags of the CPU: %s (training runs fp32 products; 16-bit weights converted a panel of rows at a time)." % (
             ", ".join(f for f in machine.get("cpu_flags", "").split() if "bf16" in f) or "none"), "",
         "| slice | -n | trainer | stages (first blocks) | B x T | step s | tokens/s/rank | efficiency | predicted | peak RSS/rank GB | weights/rank GB | wait s/rank |",
         "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        L.append("| %s | %d | %s | %s | %dx%d | %.2f | %.1f | %s | %s | %s | %s | %s |" % (
            r["name"], r["nranks"], r["trainer"], "%d (%s)" % (r["stages"], ",".join(map(str, r["first_block"]))) if r["first_block"] else "1",
            r["batch"], r["seqlen"], r["step_seconds"], r["tokens_per_second_per_rank"],
            ("%.3f" % r["efficiency"] + (" (oversubscribed)" if r["nranks"] > int(machine.get("nproc", "1")) else "")) if r["efficiency"] else "-",
            "%.3f" % r["predicted_efficiency"] if r["predicted_efficiency"] else "-",
            ", ".join("%.2f" % (v / 1e9) for v in r["rank_vmhwm_bytes"] or []),
            ", ".join("%.2f" % (v / 1e9) for v in r["rank_weight_bytes"] or []),
            ", ".join("%.1f" % v for v in r["rank_wait_seconds"] or [])))
    for r in rows:
        if r.get("peak_rss_over_bound") is not None and r["trainer"] == "pipeline":
            L.append("- %s -n %d: peak RSS / (1.25 x own weights + 1 GB) = %.2f at most over the ranks (goal <= 1); activations %s." % (
                r["name"], r["nranks"], r["peak_rss_over_bound"],
                "kept for the windows in flight" if all(k for k, w in zip(r["rank_activations_kept"] or [0], r["rank_weight_bytes"]) if w > 0)
                else "recomputed on some ranks"))
    L += ["", "Efficiency = step time at -n 1 / (N x step time at -n N); predicted = stage balance x B / (B + S - 1) "
          "(no communication). A row with more ranks than cores is oversubscribed and no efficiency figure. Peak RSS against the weights the rank holds: the pipelined trainer holds only its stage's "
          "blocks (stored dtype, used through a 16 MB fp32 panel); the rest is activations, the adapters and their AdamW state."]
    open(os.path.join(out, "recover.md"), "w").write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
