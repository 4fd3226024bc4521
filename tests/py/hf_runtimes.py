"""`cfsp-mpi export --format hf` as the Nemotron-NAS / DeciLM runtimes read it (issue 17); run by
tests/py/test_export.py (ctest export), or alone: hf_runtimes.py --bin ... --mkmodel ... --shared ...

Each runtime's FFN size rule is re-implemented below from reading its source (see
src/export/export_hf.c for the files and functions); none is imported or run. For every block of
the exported config.json the size a runtime derives must equal the shapes of gate/up/down_proj in
the exported safetensors, or the runtime must be shown unable to read the config (the export then
says so in one line):
  (a) a generated model (hidden 256, FFN 1536) pruned with --align 256: every size a multiple of
      256, config.json has ffn_mult alone (no intermediate_size: mlx-lm's FFNConfig takes no such
      key), every runtime gets exactly the stored sizes; cfsp-mpi and the NumPy reference read it
      back (logits equal the pruned HDF5 model's);
  (b) the same model pruned without --align: no ffn_mult, intermediate_size alone; only vLLM's rule
      (its fallback) gives the shapes; the message names vLLM and `--align 256`;
  (c) --format hf-llama / hf-padded of (b): LlamaForCausalLM, one intermediate_size, logits equal
      the pruned model's (NumPy reference); hf-llama of a qwen2 model refused, naming hf-padded.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import common as C  # noqa: E402
import st_raw  # noqa: E402
from common import ref  # noqa: E402


class Unable(Exception):
    """the runtime cannot build the block from this config (its own exception, named)."""


def round_up_256(n):
    return n if n % 256 == 0 else n + 256 - n % 256


def from_mult(mult, hidden):
    # int(2 * ffn_mult * hidden / 3), Python float arithmetic left to right, then up to 256
    return round_up_256(int(2 * mult * hidden / 3))


def nvidia_ffn(ffn):
    """NVIDIA's block_config.py: fields outside the dataclass dropped (warning); an active FFN
    asserts ffn_mult is not None; ffn_mult rounded to 6 decimals."""
    fields = ("no_op", "replace_with_linear", "sparsify", "ffn_mult")
    f = {k: v for k, v in ffn.items() if k in fields}
    if f.get("ffn_mult") is None:
        raise Unable("AssertionError: ffn_mult is None (block_config.FFNConfig)")
    return round(f["ffn_mult"], 6)


def rule_nvidia(ffn, hidden):          # modeling_decilm.py with its block_config.py
    return from_mult(nvidia_ffn(ffn), hidden)


def rule_vllm(ffn, hidden):
    """nemotron_nas.py: ffn_mult when the ffn config has the attribute, else intermediate_size.
    With a config object that carries the JSON keys as attributes (no NVIDIA dataclass)."""
    if "ffn_mult" in ffn:
        return from_mult(ffn["ffn_mult"], hidden)
    if "intermediate_size" not in ffn:
        raise Unable("AttributeError: intermediate_size")
    return int(ffn["intermediate_size"])


def rule_sglang(ffn, hidden):          # nemotron_nas.py: ffn_mult unconditionally
    if ffn.get("ffn_mult") is None:
        raise Unable("TypeError/AttributeError: no ffn_mult")
    return from_mult(ffn["ffn_mult"], hidden)


def rule_trtllm(ffn, hidden):          # nemotron_nas/convert.py: ffn["ffn_mult"]; _torch: config object
    if "ffn_mult" not in ffn:
        raise Unable("KeyError: 'ffn_mult'")
    return from_mult(ffn["ffn_mult"], hidden)


def rule_mlx(ffn, hidden):
    """mlx_lm/models/nemotron-nas.py: FFNConfig(**ffn) with fields no_op, replace_with_linear,
    sparsify, ffn_mult; ffn_mult required (ValueError) and rounded to 6 decimals."""
    extra = set(ffn) - {"no_op", "replace_with_linear", "sparsify", "ffn_mult"}
    if extra:
        raise Unable("TypeError: unexpected keyword argument %s" % sorted(extra))
    if ffn.get("ffn_mult") is None:
        raise Unable("ValueError: ffn_mult must be specified")
    return from_mult(round(ffn["ffn_mult"], 6), hidden)


def rule_llamacpp(ffn, hidden):        # convert_hf_to_gguf.py DeciModel: ffn["ffn_mult"]
    if ffn.get("ffn_mult") is None:
        raise Unable("KeyError/TypeError: ffn_mult")
    return from_mult(ffn["ffn_mult"], hidden)


RULES = [("vLLM", rule_vllm), ("sglang", rule_sglang), ("TensorRT-LLM", rule_trtllm), ("mlx-lm", rule_mlx),
         ("NVIDIA modeling_decilm", rule_nvidia), ("llama.cpp convert", rule_llamacpp)]


def stored_sizes(d, L):
    table = st_raw.tensors(d)
    out = []
    for l in range(L):
        g = table["model.layers.%d.mlp.gate_proj.weight" % l][1]
        u = table["model.layers.%d.mlp.up_proj.weight" % l][1]
        dn = table["model.layers.%d.mlp.down_proj.weight" % l][1]
        out.append(g[0] if list(g) == list(u) and dn[1] == g[0] else -1)
    return out


def runtime_sizes(cfg, rule):
    try:
        return [rule(b["ffn"], cfg["hidden_size"]) for b in cfg["block_configs"]], None
    except Unable as e:
        return None, str(e)


def export(args, fmt, out, *rest):
    return C.run_cmd([args.bin, "export", "--format", fmt, "--force"] + [str(r) for r in rest] + [out], timeout=300)


def logits_equal(ck, label, a_model, b_model, tokens, tol=0.0):
    """tol 0: the same float64 products; the padded form's zero channels add exact zeros, but the
    longer dot products are summed in another order by BLAS (observed 6e-11)."""
    la, lb = ref.forward(a_model, tokens), ref.forward(b_model, tokens)
    r = C.rel(la, lb)
    return ck.check(la.shape == lb.shape and r <= tol, label, "rel %.2e (tolerance %g)" % (r, tol))


def run(ck, args, work):
    C.fresh_dir(work)
    src = os.path.join(work, "gen256")
    if not ck.check(C.mkmodel(args, src, 256, 1536, 3, 4, 2, 512, seed=11), "generated model: hidden 256, FFN 1536, 3 blocks"):
        return
    tok = C.token_file(args, "stories260K")
    tokens = ref.read_tokens(tok)[:48].astype(np.int64)
    opts = ["--model", src, "--calib-tokens", tok, "--nsamples", "4", "--seqlen", "64", "--eval-tokens", tok + "@100000:104000",
            "--eval-windows", "2", "--save-stats", "0"]
    h5 = {}
    for name, extra in (("aligned", ["--align", "256", "--ratios", "0.4"]), ("free", ["--ratios", "0.3"])):
        run = os.path.join(work, "run_" + name)
        C.fresh_dir(run)
        rc, text = C.run_cfsp(args, opts + ["--output-dir", run] + extra, np_ranks=1)
        if ck.check(rc == 0, "pruning run %s (%s)" % (name, " ".join(extra)), text.strip()[-300:] if rc else ""):
            e = C.find_pruned(C.load_results(run), "cfsp", float(extra[-1]))
            h5[name] = C.pruned_file(run, e)
    if len(h5) < 2:
        return

    # (a) every size a multiple of 256: ffn_mult alone, every runtime gets the stored sizes
    hf = os.path.join(work, "hf_aligned")
    rc, text = export(args, "hf", hf, h5["aligned"])
    if ck.check(rc == 0, "(a) export --format hf of the --align 256 model", text.strip()[-300:]):
        cfg = json.load(open(os.path.join(hf, "config.json")))
        L = cfg["num_hidden_layers"]
        have = stored_sizes(hf, L)
        ck.check(all(m > 0 and m % 256 == 0 for m in have) and all(m < 1536 for m in have), "(a) stored FFN sizes %s: multiples of 256, pruned" % have)
        ck.check(all("ffn_mult" in b["ffn"] and "intermediate_size" not in b["ffn"] for b in cfg["block_configs"]),
                 "(a) block_configs: ffn_mult alone %s" % [b["ffn"].get("ffn_mult") for b in cfg["block_configs"]])
        for rname, rule in RULES:
            got, why = runtime_sizes(cfg, rule)
            ck.check(got == have, "(a) %s's rule on config.json gives the stored sizes %s" % (rname, have), "got %s %s" % (got, why or ""))
        ck.check("no multiple of 256" not in text, "(a) no message about sizes other runtimes cannot load")
        # cfsp-mpi reads it back (ffn_mult-only block_configs) and the NumPy reference too
        hf2 = os.path.join(work, "hf_aligned_again")
        rc, t2 = export(args, "hf", hf2, "--model", hf)
        ck.check(rc == 0 and json.load(open(os.path.join(hf2, "config.json")))["block_configs"] == cfg["block_configs"] and
                 stored_sizes(hf2, L) == have, "(a) cfsp-mpi reads the export back (export --model) with the same sizes", t2.strip()[-300:])
        pruned = ref.model_from_tensors(*C.h5_model_tensors(h5["aligned"]))
        logits_equal(ck, "(a) NumPy logits of the HF export = the pruned HDF5 model's", ref.load_model(hf), pruned, tokens)

    # (b) arbitrary sizes: intermediate_size alone; vLLM's fallback gives the shapes, the others cannot
    hf = os.path.join(work, "hf_free")
    rc, text = export(args, "hf", hf, h5["free"])
    if ck.check(rc == 0, "(b) export --format hf of the unaligned model", text.strip()[-300:]):
        cfg = json.load(open(os.path.join(hf, "config.json")))
        L = cfg["num_hidden_layers"]
        have = stored_sizes(hf, L)
        ck.check(any(m % 256 for m in have), "(b) stored FFN sizes %s: not all multiples of 256" % have)
        ck.check(all("ffn_mult" not in b["ffn"] and b["ffn"].get("intermediate_size") == m for b, m in zip(cfg["block_configs"], have)),
                 "(b) block_configs: intermediate_size alone, = the stored sizes")
        for rname, rule in RULES:
            got, why = runtime_sizes(cfg, rule)
            if rname == "vLLM":
                ck.check(got == have, "(b) vLLM's rule (intermediate_size when no ffn_mult) gives the stored sizes %s" % have, str(got))
            else:
                ck.check(got is None, "(b) %s cannot read the config (%s)" % (rname, why), str(got))
        lines = [l for l in text.splitlines() if "no multiple of 256" in l]
        ck.check(len(lines) == 1 and "vLLM" in lines[0] and "--align 256" in lines[0], "(b) one line says only vLLM reads it and --align 256 avoids it",
                 lines[0] if lines else text.strip()[-300:])
        pruned = ref.model_from_tensors(*C.h5_model_tensors(h5["free"]))
        logits_equal(ck, "(b) NumPy logits of the HF export = the pruned HDF5 model's", ref.load_model(hf), pruned, tokens)
        # (c) the padded uniform form, by both names
        for fmt in ("hf-llama", "hf-padded"):
            out = os.path.join(work, "hf_" + fmt)
            rc, text = export(args, fmt, out, h5["free"])
            if ck.check(rc == 0, "(c) export --format %s" % fmt, text.strip()[-300:]):
                pc = json.load(open(os.path.join(out, "config.json")))
                ck.check(pc.get("architectures") == ["LlamaForCausalLM"] and pc.get("model_type") == "llama" and "block_configs" not in pc and
                         pc.get("intermediate_size") == max(have) and stored_sizes(out, L) == [max(have)] * L and
                         pc.get("cfsp", {}).get("kept_intermediate_sizes") == have,
                         "(c) %s: LlamaForCausalLM, intermediate_size %d = every block's shape, kept sizes recorded" % (fmt, max(have)))
                logits_equal(ck, "(c) %s: NumPy logits of the padded form = the pruned HDF5 model's" % fmt, ref.load_model(out), pruned, tokens, 1e-9)
    q = os.path.join(work, "qwen2")
    if ck.check(C.mkmodel(args, q, 64, 128, 2, 4, 2, 512, family="qwen2", seed=5), "generated qwen2 model"):
        out = os.path.join(work, "qwen2_hf_llama")
        rc, text = export(args, "hf-llama", out, "--model", q)
        err = [l for l in text.splitlines() if "error" in l]
        ck.check(rc != 0 and len(err) == 1 and "hf-padded" in err[0] and "Qwen2ForCausalLM" in err[0] and not os.path.exists(out),
                 "hf-llama of a qwen2 model refused in one line, pointing to hf-padded (Qwen2ForCausalLM)", err[0] if err else text.strip()[-300:])


def main():
    args = C.parse_args(__doc__)
    ck = C.Checker("hf_runtimes")
    run(ck, args, C.fresh_dir(args.workdir))
    ck.finish()


if __name__ == "__main__":
    main()
