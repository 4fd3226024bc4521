#!/usr/bin/env python3
"""check_layers.py ROOT [--objects LIST --nm NM] — the dependency order of cfsp-mpi's modules, enforced.

Every source file under src/<module>/ and header under include/cfsp/<module>/ belongs to <module>.
A file may depend on its own module or on a lower layer only:

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

Modules of the same layer do not depend on each other. Two passes:

Includes (the sources). A quoted include with a '/' must be exactly "cfsp/<module>/<name>.h" of its
own module or a lower layer; a quoted include without '/' must name a file in the including file's
own directory; no include may contain '..', an angle-bracket include may not name a cfsp/ header,
and an #include of neither form (a macro) is refused. Every file starts with a comment naming the
file and saying what it owns ("/* name.c — ...").

Symbols (the build's objects, LIST: one object file per line, written by tests/CMakeLists.txt from
the targets cfsp, cfsp-mpi and the tools). `nm` gives each object's defined global symbols and its
undefined ones; an object belongs to the module of its source (…/src/<module>/x.c.o). Every
undefined symbol that one of our objects defines must be defined in the user's own module or in a
lower layer: this catches a dependency hidden behind a local `extern` declaration. Symbols none of
our objects define (libc, MPI, HDF5, OpenBLAS, cJSON) are not judged. Every src/**/*.c must have
an object in LIST, so no source escapes the pass.

Negative controls (probes that must be reported, checked in-process): an upward, a sideways and a
relative-path include, and synthetic symbol tables with an upward and a sideways reference.
Prints one line per violation and 'N passed, N failed'."""
import os, re, subprocess, sys

LAYER = {"util": 0, "format": 1, "tok": 1, "model": 2, "pipeline": 3, "ckpt": 3, "prune": 4,
         "train": 5, "export": 5, "report": 5, "cli": 6, "tools": 6}
INC = re.compile(r'^\s*#\s*include\b[ \t]*(.*)$', re.M)
CFSP = re.compile(r"cfsp/([a-z_]+)/[A-Za-z0-9_]+\.h$")
OBJ = re.compile(r"(?:^|/)(src/([a-z_]+)/[^/]+\.c)\.o(?:bj)?$")


def module_of(rel):
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) >= 3:
        return parts[1]
    if parts[:2] == ["include", "cfsp"] and len(parts) >= 4:
        return parts[2]
    return None


def may_use(mod, other):
    """mod may depend on other: its own module or a strictly lower layer"""
    return other == mod or LAYER[other] < LAYER[mod]


def check_text(rel, mod, text, root=None):
    """the include rule on one file of module mod (root: also check that plain names exist)"""
    bad = []
    for arg in INC.findall(text):
        arg = arg.strip()
        q = re.match(r'"([^"]+)"', arg)
        a = re.match(r"<([^>]+)>", arg)
        if not q and not a:
            bad.append("%s: #include %s: neither \"file\" nor <file>" % (rel, arg))
            continue
        inc = (q or a).group(1)
        if ".." in inc:
            bad.append("%s: includes %s: no '..' in an include, name the header as cfsp/<module>/x.h"
                       % (rel, inc))
            continue
        if a:
            if inc.startswith("cfsp/"):
                bad.append("%s: includes <%s>: cfsp headers are included with quotes" % (rel, inc))
            continue
        m = CFSP.match(inc)
        if m:
            other = m.group(1)
            if other not in LAYER:
                bad.append("%s: includes %s of an unknown module" % (rel, inc))
            elif not may_use(mod, other):
                bad.append("%s: %s (layer %d) includes %s of %s (layer %d): only lower layers" %
                           (rel, mod, LAYER[mod], inc, other, LAYER[other]))
        elif "/" in inc:
            bad.append("%s: includes \"%s\": a path must be cfsp/<module>/<name>.h" % (rel, inc))
        elif root and not os.path.exists(os.path.join(root, os.path.dirname(rel), inc)):
            bad.append("%s: includes \"%s\", not a file of its own directory" % (rel, inc))
    return bad


def check_files(root):
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
        bad += check_text(rel, mod, text, root)
    return files, bad


def read_symbols(nm, objects):
    """{source rel path: (module, defined globals, undefined)} from one nm call over all objects"""
    out = subprocess.run([nm, "-o"] + objects, check=True, capture_output=True, text=True).stdout
    table = {}
    for o in objects:
        m = OBJ.search(o)
        table[o] = (m.group(1), m.group(2), set(), set())
    for line in out.splitlines():
        m = re.match(r"^(.*?):\s*(?:[0-9a-fA-F]+)?\s+([A-Za-z?-])\s+(\S+)$", line)
        if not m or m.group(1) not in table:
            raise SystemExit("layers: cannot read nm's line %r" % line)
        _, _, defs, undefs = table[m.group(1)]
        kind, name = m.group(2), m.group(3)
        if kind in "Uwv":                        # undefined (w, v: weak undefined)
            undefs.add(name)
        elif kind.isupper() or kind == "u":      # global (u: unique global); lowercase = local
            defs.add(name)
    merged = {}                                  # one source compiled twice: the union
    for src, mod, defs, undefs in table.values():
        _, d, u = merged.setdefault(src, (mod, set(), set()))
        d |= defs
        u |= undefs
    return merged


def check_symbols(table):
    """the layer rule on symbol references; table {src: (module, defined, undefined)}.
    Returns (violations, number of cross-module references judged)."""
    owners = {}
    for src, (mod, defs, _) in table.items():
        for s in defs:
            owners.setdefault(s, set()).add(mod)
    bad, crossed = [], 0
    for src in sorted(table):
        mod, _, undefs = table[src]
        for s in sorted(undefs):
            if s not in owners:
                continue                                     # libc, MPI, HDF5, BLAS, cJSON
            if mod not in owners[s]:
                crossed += 1
            if not any(may_use(mod, o) for o in owners[s]):
                o = sorted(owners[s], key=lambda x: LAYER[x])[0]
                bad.append("%s: %s (layer %d) uses %s, defined in %s (layer %d): only lower layers" %
                           (src, mod, LAYER[mod], s, o, LAYER[o]))
    return bad, crossed


def controls():
    """probes that the two rules must judge right; returns the list of misjudged probes"""
    wrong = []
    inc = [("src/model/x.c", "model", '#include "cfsp/prune/stats.h"\n', 1),      # upward
           ("src/train/x.c", "train", '#include "cfsp/export/export.h"\n', 1),    # sideways
           ("src/model/x.c", "model", '#include "../prune/x.h"\n', 1),            # relative path
           ("src/model/x.c", "model", '#include "../../include/cfsp/util/err.h"\n', 1),
           ("src/model/x.c", "model", '#include "prune/stats.h"\n', 1),
           ("src/model/x.c", "model", '#include <cfsp/prune/stats.h>\n', 1),
           ("src/model/x.c", "model", '#include STATS_H\n', 1),
           ("src/prune/x.c", "prune", '#include "cfsp/model/forward.h"\n#include <mpi.h>\n', 0)]
    for rel, mod, text, n in inc:
        if len(check_text(rel, mod, text)) != n:
            wrong.append("include probe %r in %s" % (text.strip(), rel))
    syms = {"src/util/u.c": ("util", {"xmalloc"}, {"malloc"}),
            "src/model/f.c": ("model", {"forward"}, {"xmalloc", "prune_hook", "sgemm_"}),
            "src/prune/s.c": ("prune", {"prune_hook"}, {"forward", "xmalloc"}),
            "src/train/t.c": ("train", {"train_step"}, {"export_write", "forward"}),
            "src/export/e.c": ("export", {"export_write"}, {"prune_hook"})}
    bad, crossed = check_symbols(syms)
    want = ["src/model/f.c: model (layer 2) uses prune_hook, defined in prune (layer 4): only lower layers",
            "src/train/t.c: train (layer 5) uses export_write, defined in export (layer 5): only lower layers"]
    if bad != want or crossed != 7:
        wrong.append("symbol probe: got %r, %d cross-module references" % (bad, crossed))
    return wrong


def main():
    args = sys.argv[1:]
    opt = {}
    while len(args) >= 2 and args[-2] in ("--objects", "--nm"):
        opt[args[-2]] = args[-1]
        args = args[:-2]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "..")
    files, bad = check_files(root)
    nchecks, nbad = len(files), len({b.split(":")[0] for b in bad})
    if "--objects" in opt:
        objects = [l.strip() for l in open(opt["--objects"]) if l.strip()]
        missing = [o for o in objects if not os.path.exists(o)]
        if missing:
            raise SystemExit("layers: %d object files missing (build first), e.g. %s" %
                             (len(missing), missing[0]))
        unmapped = [o for o in objects if not OBJ.search(o)]
        if unmapped:
            raise SystemExit("layers: not an object of src/<module>/: %s" % unmapped[0])
        table = read_symbols(opt.get("--nm", "nm"), objects)
        sbad, crossed = check_symbols(table)
        built = {src for src in table}
        unbuilt = [f for f in sorted(files) if f.startswith("src/") and f.endswith(".c") and f not in built]
        for rel in unbuilt:
            sbad.append("%s: no object among the build's objects, its symbols were not checked" % rel)
        if crossed == 0:
            sbad.append("symbols: no reference between modules found: nm's output was not read")
        print("%d objects, %d cross-module symbol references checked" % (len(table), crossed))
        bad += sbad
        nchecks += len(table) + len(unbuilt)
        nbad += len({b.split(":")[0] for b in sbad})
    else:
        print("symbols: not checked (no --objects; ctest passes the build's object list)")
    wrong = controls()
    for b in bad:
        print("layers: " + b)
    for w in wrong:
        print("layers: negative control misjudged: " + w)
    print("%d files checked" % len(files))
    print("%d passed, %d failed" % (nchecks - nbad + (0 if wrong else 1), nbad + (1 if wrong else 0)))
    sys.exit(1 if bad or wrong else 0)


if __name__ == "__main__":
    main()
