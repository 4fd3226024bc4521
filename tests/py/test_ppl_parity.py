"""Dense perplexity parity on both shared models: results.json "dense" {ppl, nll_sum, ntokens,
windows} of cfsp-mpi against the NumPy reference (relative 1e-4 on ppl and nll_sum, exact counts),
on TinyStories and WikiText-2 test tokens, plus the calibration offsets it reports.

    /usr/bin/python3 tests/py/test_ppl_parity.py --bin build/cfsp-mpi --shared /work/shared \
        --workdir /tmp/ppl [--np 2]
"""

import os

from common import (Checker, fresh_dir, load_results, model_dir, parse_args, ref, run_cfsp,
                    token_file)

# model, eval text, seqlen, windows (0 = all; --full uses all windows everywhere)
CASES = [
    ("stories260K", "tinystories_val_head", 256, 40),
    ("stories260K", "wikitext2_test.joined", 512, 8),
    ("tinystories656K", "tinystories_val_head", 128, 40),
    ("tinystories656K", "wikitext2_test.joined", 256, 8),
]


def main():
    args = parse_args(__doc__)
    ck = Checker("ppl parity")
    models = {}
    for name, text, T, W in CASES:
        if args.full:
            W = 0
        if name not in models:
            models[name] = ref.load_model(model_dir(args, name))
        model = models[name]
        calib = token_file(args, name, "wikitext2_validation.joined")
        evalf = token_file(args, name, text)
        out = fresh_dir(os.path.join(args.workdir, "ppl_%s_%s_%d" % (name, text.split(".")[0], T)))
        opts = ["--model", model_dir(args, name), "--calib-tokens", calib, "--eval-tokens", evalf,
                "--nsamples", 4, "--seqlen", T, "--seed", 3, "--output-dir", out, "--force",
                "--save-models", 0]
        if W:
            opts += ["--eval-windows", W]
        rc, _ = run_cfsp(args, opts, np_ranks=min(args.np, model.L))
        label = "%s %s T=%d windows=%s" % (name, text, T, W or "all")
        if not ck.check(rc == 0, label + ": cfsp-mpi run"):
            continue
        res = load_results(out)
        ppl, nll, ntok = ref.perplexity(model, ref.read_tokens(evalf), T, windows=W)
        d = res.get("dense", {})
        cppl = float(d.get("ppl", "nan"))
        cnll = float(d.get("nll_sum", "nan"))
        nw = ntok // (T - 1)
        ck.check(abs(cppl - ppl) <= 1e-4 * ppl, label + ": ppl within 1e-4 relative",
                 "C %.6f ref %.6f rel %.2g" % (cppl, ppl, abs(cppl - ppl) / ppl))
        ck.check(abs(cnll - nll) <= 1e-4 * abs(nll), label + ": nll_sum within 1e-4 relative",
                 "C %.4f ref %.4f" % (cnll, nll))
        ck.check(int(d.get("ntokens", -1)) == ntok and int(d.get("windows", -1)) == nw,
                 label + ": ntokens and windows", "C %s/%s ref %d/%d" % (d.get("ntokens"), d.get("windows"), ntok, nw))
        offs = ref.calib_offsets(len(ref.read_tokens(calib)), 4, T, seed=3)
        coffs = [int(x) for x in res.get("calibration", {}).get("offsets", [])]
        ck.check(coffs == offs, label + ": calibration offsets (seed 3) = Python random",
                 "C %s ref %s" % (coffs, offs))
    ck.finish()


if __name__ == "__main__":
    main()
