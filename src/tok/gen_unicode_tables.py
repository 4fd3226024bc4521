#!/usr/bin/python3
"""gen_unicode_tables.py — writes src/tok/unicode_tables.h: one sorted table of the code-point ranges
of the Unicode general categories L* (letters) and N* (numbers), each range tagged with its class,
from Debian's /usr/bin/python3 unicodedata. The two classes do not overlap, so one binary search
answers both \\p{L} and \\p{N}. Run at development time only (the generated header is committed):
    /usr/bin/python3 src/tok/gen_unicode_tables.py > src/tok/unicode_tables.h
White_Space is a fixed short list and lives in tok_util.c.

Then the tables of the NFC / NFD normalizers of tokenizer.json (tok_util.c, uni_normalize): the
canonical combining classes, the one-level canonical decompositions, the canonical composition pairs
and the ranges of code points that are not "quiet" (see below). Hugging Face tokenizers normalizes
with the crate unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0.0 (the tables.rs
of unicode-normalization 0.1.12 it is forked from: UNICODE_VERSION (9, 0, 0)), not the Unicode of
Python's unicodedata (14.0.0 here). Normalization data never changes for an assigned code point, so
the two differ only by the code points assigned after 9.0.0 that carry normalization data in
Python's version: POST_HF_NORM below (compared entry by entry with that tables.rs: these and nothing
else differ). They are left out — to tokenizers they are unassigned: class 0, no decomposition, no
composition — so the tables follow Unicode 9.0.0 exactly as tokenizers does; the counts are asserted
against the crate's (814 code points with a nonzero class, 2060 decompositions, 940 pairs). With
another Python Unicode version the counts stop matching and the script says so (extend POST_HF_NORM
with the new version's additions)."""
import sys
import unicodedata

HF_NORM_UNICODE = "9.0.0"
# code points assigned after Unicode 9.0.0 with a nonzero combining class or a canonical
# decomposition (or in a composition pair) in Python's unicodedata 14.0.0
POST_HF_NORM = [
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C), (0xD3B, 0xD3C),
    (0xEBA, 0xEBA), (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA), (0xA82C, 0xA82C),
    (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070),
    (0x1133B, 0x1133B), (0x1145E, 0x1145E), (0x11839, 0x1183A), (0x11930, 0x11930), (0x11935, 0x11935),
    (0x11938, 0x11938), (0x1193D, 0x1193E), (0x11943, 0x11943), (0x119E0, 0x119E0), (0x11A34, 0x11A34),
    (0x11A47, 0x11A47), (0x11A99, 0x11A99), (0x11D42, 0x11D42), (0x11D44, 0x11D45), (0x11D97, 0x11D97),
    (0x16FF0, 0x16FF1), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF),
]
CRATE_COUNTS = (814, 2060, 940)       # unicode-normalization 0.1.12 tables.rs: classes, decompositions, pairs

S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def post_hf(cp):
    return any(a <= cp <= b for a, b in POST_HF_NORM)


def ranges():
    """[(first, last, class)] over the code points whose category is L* ('L') or N* ('N')"""
    out, start, cur = [], None, None
    for cp in range(0x110000):
        c = unicodedata.category(chr(cp))[0]
        c = c if c in "LN" else None
        if c != cur:
            if cur is not None:
                out.append((start, cp - 1, cur))
            start, cur = cp, c
    if cur is not None:
        out.append((start, 0x10FFFF, cur))
    return out


def runs(value):
    """[(first, last, v)] over the maximal runs of code points with the same nonzero value(cp)"""
    out, start, cur = [], None, 0
    for cp in range(0x110001):
        v = value(cp) if cp <= 0x10FFFF else 0
        if v != cur:
            if cur:
                out.append((start, cp - 1, cur))
            start, cur = cp, v
    return out


def norm_data():
    """(ccc {cp: class}, decomp {cp: (d1, d2 or 0)} one level, comp {(a, b): c}) of Unicode 9.0.0
    as tokenizers has it: Python's data less POST_HF_NORM; Hangul syllables are algorithmic and in none"""
    ccc, decomp, comp = {}, {}, {}
    for cp in range(0x110000):
        if post_hf(cp) or 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        if unicodedata.combining(ch):
            ccc[cp] = unicodedata.combining(ch)
        d = unicodedata.decomposition(ch)
        if not d or d.startswith("<") or S_BASE <= cp < S_BASE + S_COUNT:
            continue
        parts = [int(x, 16) for x in d.split()]
        assert len(parts) in (1, 2) and not any(post_hf(x) for x in parts), hex(cp)
        decomp[cp] = (parts[0], parts[1] if len(parts) == 2 else 0)
        # composable: a two-code-point mapping not excluded (exclusions, singletons and non-starter
        # decompositions never come back out of NFC)
        if len(parts) == 2 and unicodedata.normalize("NFC", ch) == ch:
            comp[(parts[0], parts[1])] = cp
    counts = (len(ccc), len(decomp), len(comp))
    if counts != CRATE_COUNTS:
        sys.exit("gen_unicode_tables.py: Python's unicodedata %s less POST_HF_NORM gives %r classes / decompositions / "
                 "pairs, not Unicode %s's %r: add the code points this Unicode version added to POST_HF_NORM"
                 % (unicodedata.unidata_version, counts, HF_NORM_UNICODE, CRATE_COUNTS))
    return ccc, decomp, comp


def full_decomposition(cp, decomp):
    if S_BASE <= cp < S_BASE + S_COUNT:
        return [ord(x) for x in unicodedata.normalize("NFD", chr(cp))]
    if cp not in decomp:
        return [cp]
    a, b = decomp[cp]
    return full_decomposition(a, decomp) + (full_decomposition(b, decomp) if b else [])


def quiet_flags(ccc, decomp, comp):
    """per code point: UNI_NFC_BUSY (1) unless it is NFC-quiet, | UNI_NFD_BUSY (2) unless NFD-quiet.
    NFD-quiet: class 0 and no decomposition. NFC-quiet: class 0, NFC leaves it alone and it is the
    second of no pair (Hangul V and T jamo are). A quiet code point starts a new normalization unit:
    nothing before it reorders or composes with it or past it, so text is normalized piece by piece
    between them, and a run of quiet code points is copied as is (tok_util.c)."""
    seconds = {b for (_a, b) in comp} | set(range(V_BASE, V_BASE + V_COUNT)) | set(range(T_BASE + 1, T_BASE + T_COUNT))

    def flags(cp):
        if post_hf(cp) or 0xD800 <= cp <= 0xDFFF:
            return 0
        f = 0
        hangul = S_BASE <= cp < S_BASE + S_COUNT
        if cp in ccc or cp in seconds or (cp in decomp and unicodedata.normalize("NFC", chr(cp)) != chr(cp)):
            f |= 1
        if cp in ccc or cp in decomp or hangul:
            f |= 2
        if not f & 1:
            first = full_decomposition(cp, decomp)[0]     # the unit it starts cannot reach back
            assert first not in ccc and first not in seconds, hex(cp)
        return f
    return runs(flags), seconds


def emit_triples(name, rows, fmt):
    print("static const uint32_t %s[%d][3] = {" % (name, len(rows)))
    line = "   "
    for row in rows:
        item = " " + fmt % row + ","
        if len(line) + len(item) > 100:
            print(line)
            line = "   "
        line += item
    print(line)
    print("};")


def main():
    rs = ranges()
    print("/* unicode_tables.h — GENERATED by src/tok/gen_unicode_tables.py from Python's unicodedata")
    print(" * (Unicode %s); do not edit. Sorted inclusive code-point ranges of the general categories" % unicodedata.unidata_version)
    print(" * L* (\\p{L}, class UNI_L) and N* (\\p{N}, class UNI_N), in one table: the two do not overlap.")
    print(" * Used by tok_util.c. */")
    print("#ifndef CFSP_TOK_UNICODE_TABLES_H\n#define CFSP_TOK_UNICODE_TABLES_H\n#include <stdint.h>")
    print('#define CFSP_UNICODE_VERSION "%s"' % unicodedata.unidata_version)
    print("enum { UNI_L = 1, UNI_N = 2 };")
    print("static const uint32_t uni_ranges[%d][3] = {" % len(rs))
    line = "   "
    for a, b, c in rs:
        item = " {0x%X, 0x%X, UNI_%s}," % (a, b, c)
        if len(line) + len(item) > 100:
            print(line)
            line = "   "
        line += item
    print(line)
    print("};")

    ccc, decomp, comp = norm_data()
    qr, seconds = quiet_flags(ccc, decomp, comp)
    nfc_below = min(a for a, _b, f in qr if f & 1)
    nfd_below = min(a for a, _b, f in qr if f & 2)
    print()
    print("/* The canonical normalization data of tokenizer.json's NFC / NFD normalizers (tok_util.c), as Hugging")
    print(" * Face tokenizers has it: its crate unicode-normalization-alignments 0.1.12 is Unicode %s, so these" % HF_NORM_UNICODE)
    print(" * are Python's unicodedata (Unicode %s) less the %d code points assigned after %s that carry"
          % (unicodedata.unidata_version, sum(b - a + 1 for a, b in POST_HF_NORM), HF_NORM_UNICODE))
    print(" * normalization data in %s (gen_unicode_tables.py POST_HF_NORM: to tokenizers they are class 0," % unicodedata.unidata_version)
    print(" * no decomposition, no composition): %d code points with a nonzero class, %d decompositions, %d"
          % (len(ccc), len(decomp), len(comp)))
    print(" * composition pairs, as in the crate. Hangul syllables are algorithmic and in no table.")
    print(" *   uni_ccc       {first, last, class}: the canonical combining classes other than 0;")
    print(" *   uni_decomp    {cp, d1, d2}: the one-level canonical decomposition of cp (d2 = 0: a singleton);")
    print(" *   uni_comp      {a, b, c}: a b composes to c (two-code-point decompositions less the composition")
    print(" *                 exclusions, singletons and non-starter decompositions), sorted by a then b;")
    print(" *   uni_busy      {first, last, UNI_NFC_BUSY | UNI_NFD_BUSY}: the code points that are not quiet for")
    print(" *                 NFC (nonzero class, changed by NFC, or the second of a pair: %d are) / for NFD"
          % len(seconds))
    print(" *                 (nonzero class or a decomposition). Every code point below UNI_NFC_QUIET_BELOW /")
    print(" *                 UNI_NFD_QUIET_BELOW is quiet. */")
    print('#define CFSP_NORM_UNICODE_VERSION "%s"' % HF_NORM_UNICODE)
    print("#define UNI_NFC_QUIET_BELOW 0x%X\n#define UNI_NFD_QUIET_BELOW 0x%X" % (nfc_below, nfd_below))
    print("enum { UNI_NFC_BUSY = 1, UNI_NFD_BUSY = 2 };")
    emit_triples("uni_ccc", runs(lambda cp: ccc.get(cp, 0)), "{0x%X, 0x%X, %d}")
    emit_triples("uni_decomp", [(cp,) + decomp[cp] for cp in sorted(decomp)], "{0x%X, 0x%X, 0x%X}")
    emit_triples("uni_comp", [k + (comp[k],) for k in sorted(comp)], "{0x%X, 0x%X, 0x%X}")
    emit_triples("uni_busy", qr, "{0x%X, 0x%X, %d}")
    print("#endif")


if __name__ == "__main__":
    main()
