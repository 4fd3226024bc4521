#!/usr/bin/env python3
"""check_layers.py ROOT — the dependency order of cfsp-mpi's modules, enforced.

Every source file under src/<module>/ and header under include/cfsp/<module>/ belongs to <module>.
A file may include "cfsp/<other>/x.h" only when <other> is its own module or a lower layer:

    0 util      errors, allocation, files, JSON access, BLAS set-up
    1 format    the files we read: config.json, safetensors, token files; HDF5 helpers
    1 tok       the model's own tokenizer (tokenizer.json, tokenizer.model)
    2 model     stage units, one rank's weights, the forward ops (+ the statistics hook's type)
    3 pipeline  stage map and pipelined schedule
    3 ckpt      the pruned-checkpoint format: layout, writer (+ raw writer), reader, verifier, merge
    4 prune     statistics, scores, allocation, selection, slicing, the distributed sweep
    5 train     LoRA recovery
    5 export    GGUF / HF exporters
    5 report    results.json / results.md / the SVG plot
    6 cli       options, subcommands, main
    6 tools     stand-alone programs (generator, GEMM benchmark)

Modules of the same layer do not include each other. Any other quoted include must name a file
in the including file's own directory. Every file starts with a comment naming the file and
saying what it owns ("/* name.c — ..."). Prints one line per violation and 'N passed, N failed'."""
import os, re, sys

LAYER = {"util": 0, "format": 1, "tok": 1, "model": 2, "pipeline": 3, "ckpt": 3, "prune": 4,
         "train": 5, "export": 5, "report": 5, "cli": 6, "tools": 6}
INC = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(rel):
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) >= 3:
        return parts[1]
    if parts[:2] == ["include", "cfsp"] and len(parts) >= 4:
        return parts[2]
    return None


def check_text(rel, mod, text):
    """the include rule on one file of module mod"""
    bad = []
    for inc in INC.findall(text):
        m = re.match(r"cfsp/([a-z_]+)/[A-Za-z0-9_]+\.h$", inc)
        if m:
            other = m.group(1)
            if other not in LAYER:
                bad.append("%s: includes %s of an unknown module" % (rel, inc))
            elif other != mod and LAYER[other] >= LAYER[mod]:
                bad.append("%s: %s (layer %d) includes %s of %s (layer %d): only lower layers" %
                           (rel, mod, LAYER[mod], inc, other, LAYER[other]))
            continue
        if inc.startswith("cfsp/"):
            bad.append("%s: includes %s: headers live in include/cfsp/<module>/" % (rel, inc))
        elif ROOT and not os.path.exists(os.path.join(ROOT, os.path.dirname(rel), inc)):
            bad.append("%s: includes \"%s\", not a file of its own directory" % (rel, inc))
    return bad


ROOT = None


def check(root):
    bad, files = [], []
    for top in ("src", "include"):
        for dp, _, fn in os.walk(os.path.join(root, top)):
            for f in fn:
                if f.endswith((".c", ".h")):
                    files.append(os.path.relpath(os.path.join(dp, f), root))
    for rel in sorted(files):
        mod = module_of(rel)
        if mod not in LAYER:
            bad.append("%s: module %r is not in the layer table" % (rel, mod))
            continue
        text = open(os.path.join(root, rel), encoding="utf-8", errors="replace").read()
        base = os.path.basename(rel)
        if not re.match(r"/\*\s*" + re.escape(base) + r"\s+[—-]", text):
            bad.append("%s: does not start with '/* %s — what it owns'" % (rel, base))
        bad += check_text(rel, mod, text)
    return files, bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    global ROOT
    ROOT = root
    files, bad = check(root)
    # negative controls: an upward and a sideways include must be reported, a downward one not
    ctl_ok = (len(check_text("src/model/x.c", "model", '#include "cfsp/prune/stats.h"\n')) == 1 and
              len(check_text("src/train/x.c", "train", '#include "cfsp/export/export.h"\n')) == 1 and
              not check_text("src/prune/x.c", "prune", '#include "cfsp/model/forward.h"\n'))
    for b in bad:
        print("layers: " + b)
    if not ctl_ok:
        print("layers: negative control: the include rule misjudged a probe")
    nfail = len(bad) + (0 if ctl_ok else 1)
    print("%d files checked" % len(files))
    nbadfiles = len({b.split(":")[0] for b in bad})
    print("%d passed, %d failed" % (len(files) - nbadfiles + (1 if ctl_ok else 0), nbadfiles + (0 if ctl_ok else 1)))
    sys.exit(1 if nfail else 0)


if __name__ == "__main__":
    main()
