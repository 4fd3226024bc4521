"""quality_bf16_report.py QB_DIR OUT — the bf16-vs-fp32 table of quality_bf16.sh: reads the two
jobs per model (QB_DIR/<model>-fp32, QB_DIR/<model>-bf16: results.json and the pruned HDF5 files'
model/layers/N/mlp/kept_channels) and writes OUT/bf16.json and OUT/bf16.md."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np

MODELS = [("stories260K", "stories260K (shared, fp32 weights)"),
          ("tinystories656K", "tinystories656K (shared, fp32 weights)"),
          ("7b", "7B-shape slice (2 blocks, 4096/11008, random bf16 weights)")]


def kept_sets(path, L):
    with h5py.File(path, "r") as f:
        return [set(np.asarray(f["model/layers/%d/mlp/kept_channels" % l][()]).astype(int).tolist()) for l in range(L)]


def cpu():
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "Flags"):
                info[k.strip()] = v.strip()
    except OSError:
        pass
    flags = set(info.get("Flags", "").split())
    return {"model_name": info.get("Model name", "?"),
            "flags_of_interest": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "f16c"})}


def main():
    qb, out = sys.argv[1], sys.argv[2]
    rows = []
    for key, label in MODELS:
        r = {c: json.load(open(os.path.join(qb, "%s-%s" % (key, c), "results.json"))) for c in ("fp32", "bf16")}
        imp32 = np.asarray(r["fp32"]["importance"]["angular"], dtype=np.float64)
        imp16 = np.asarray(r["bf16"]["importance"]["angular"], dtype=np.float64)
        row = {"model": key, "label": label, "compute_bf16": r["bf16"]["compute"],
               "importance_max_rel_diff": float(np.max(np.abs(imp16 - imp32) / np.abs(imp32))),
               "dense_ppl_fp32": r["fp32"]["dense"]["ppl"], "dense_ppl_bf16": r["bf16"]["dense"]["ppl"],
               "options": r["bf16"]["options"], "ratios": []}
        L = r["fp32"]["model"]["num_layers"]
        for e32 in r["fp32"]["pruned"]:
            e16 = next(e for e in r["bf16"]["pruned"] if e["ratio"] == e32["ratio"] and e["method"] == e32["method"])
            k32 = kept_sets(os.path.join(qb, "%s-fp32" % key, os.path.basename(e32["file"])), L)
            k16 = kept_sets(os.path.join(qb, "%s-bf16" % key, os.path.basename(e16["file"])), L)
            inter = sum(len(a & b) for a, b in zip(k32, k16))
            n32 = sum(len(a) for a in k32)
            row["ratios"].append({
                "ratio": e32["ratio"], "keep_counts_fp32": e32["keep_counts"], "keep_counts_bf16": e16["keep_counts"],
                "kept_overlap": inter / n32 if n32 else 1.0,
                "kept_overlap_min_block": min((len(a & b) / len(a)) if a else 1.0 for a, b in zip(k32, k16)),
                "ppl_fp32": e32["ppl"], "ppl_bf16": e16["ppl"], "ppl_rel_diff": e16["ppl"] / e32["ppl"] - 1})
        rows.append(row)
    doc = {"tool": "mpi_scripts/quality_bf16.sh", "cpu": cpu(), "models": rows,
           "git_commit": subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "HEAD"],
                                        capture_output=True, text=True).stdout.strip()}
    with open(os.path.join(out, "bf16.json"), "w") as f:
        json.dump(doc, f, indent=1)
    md = ["# bf16 against fp32: what the arithmetic changes", "",
          "Written by `mpi_scripts/quality_bf16.sh` (report: `quality_bf16_report.py`) at commit %s on %s (flags: %s)." % (
              doc["git_commit"][:10], doc["cpu"]["model_name"], " ".join(doc["cpu"]["flags_of_interest"]) or "none of interest"),
          "The same CFSP job twice, `--compute fp32` and `--compute bf16` (mode of the bf16 run: %s)." % (
              rows[0]["compute_bf16"].get("reason", "?")),
          "Shared models: calibration 128 x 256 TinyStories tokens [100000:], evaluation up to 400 windows of the disjoint",
          "tokens [0:100000]. 7B slice: 4 x 512 random tokens, 4 evaluation windows (a random model on random tokens:",
          "its perplexity is a number to compare, not a quality). Kept overlap: |kept(fp32) & kept(bf16)| / |kept(fp32)|",
          "over all blocks (and the lowest block).", "",
          "| model | importance max rel diff | dense ppl fp32 / bf16 | ratio | keep counts equal | kept overlap (min block) | pruned ppl fp32 / bf16 (rel diff) |",
          "|---|---|---|---|---|---|---|"]
    for row in rows:
        for i, q in enumerate(row["ratios"]):
            head = ("%s | %.2e | %.4f / %.4f" % (row["label"], row["importance_max_rel_diff"], row["dense_ppl_fp32"],
                                                 row["dense_ppl_bf16"])) if i == 0 else " | | "
            md.append("| %s | %.1f | %s | %.4f (%.4f) | %.4f / %.4f (%+.2e) |" % (
                head, q["ratio"], "yes" if q["keep_counts_fp32"] == q["keep_counts_bf16"] else "no",
                q["kept_overlap"], q["kept_overlap_min_block"], q["ppl_fp32"], q["ppl_bf16"], q["ppl_rel_diff"]))
    with open(os.path.join(out, "bf16.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
