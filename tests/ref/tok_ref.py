"""tok_ref.py — an independent, pure-Python BPE tokenizer and a tiny BPE trainer, to check the C
tokenizer (src/tok) on generated Hugging Face tokenizer.json files.

Independent of the C code on purpose:
  - the GPT-2 / LLaMA-3 split patterns run on Python's own regex engine (`re`), with \\p{L} and
    \\p{N} spelled out as character classes built from unicodedata, and \\s as the explicit
    White_Space set that Oniguruma (used by Hugging Face tokenizers) matches; the C code matches
    the same patterns by hand;
  - merges follow the classic GPT-2 loop (lowest-rank pair, all its occurrences left to right),
    not the C heap (equivalent when every token has one merge, which the trainer below ensures);
  - added tokens, ignore_merges, ByteLevel add_prefix_space, Metaspace (prepend scheme, split),
    byte fallback and unk follow the tokenizers library's documented behaviour;
  - the NFC / NFD normalizers are Python's unicodedata.normalize (the C code has its own tables and
    algorithm), restricted to Unicode 9.0.0 as tokenizers has it (see hf_normalize).
Only the standard library (Debian's /usr/bin/python3 has no `regex` module).
"""

import collections
import importlib.util
import json
import os
import re
import unicodedata

WHITE_SPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + \
    [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]


def _ranges(pred):
    out, start = [], None
    for cp in range(0x110000):
        ok = pred(cp)
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def _class_body(ranges):
    def esc(cp):
        return "\\U%08x" % cp
    return "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in ranges)


_L = _class_body(_ranges(lambda cp: unicodedata.category(chr(cp)).startswith("L")))
_N = _class_body(_ranges(lambda cp: unicodedata.category(chr(cp)).startswith("N")))
_S = _class_body([(c, c) for c in WHITE_SPACE])

# the patterns as written in tokenizer.json files, and their `re` translations
LLAMA3_PATTERN = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
QWEN2_PATTERN = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                 "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def translate(pattern):
    """\\p{L} -> [letters], \\p{N} -> [numbers], \\s / \\S -> White_Space classes (also inside [...])."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("\\p{L}", i):
            out.append(_L if in_class else "[" + _L + "]")
            i += 5
            continue
        if pattern.startswith("\\p{N}", i):
            out.append(_N if in_class else "[" + _N + "]")
            i += 5
            continue
        if pattern.startswith("\\s", i):
            out.append(_S if in_class else "[" + _S + "]")
            i += 2
            continue
        if pattern.startswith("\\S", i):
            assert not in_class
            out.append("[^" + _S + "]")
            i += 2
            continue
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        out.append(c)
        i += 1
    return re.compile("".join(out))


def regex_split(rx, text):
    """Split Isolated: matches and the gaps between them."""
    pieces, prev = [], 0
    for m in rx.finditer(text):
        if m.start() > prev:
            pieces.append(text[prev:m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        prev = m.end()
    if prev < len(text):
        pieces.append(text[prev:])
    return pieces


# ------------------------------------------------------------------------------------------------
# byte-level alphabet

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def to_bytelevel(b):
    return "".join(B2U[x] for x in b)


# ------------------------------------------------------------------------------------------------
# training (deterministic; a merge whose result is already a token is skipped, so every token
# has exactly one merge)

def train_bpe(words, n_merges, initial):
    """words: Counter of tuples of initial symbols (strings); initial: sorted list of the initial
    symbols. Returns (vocab list in id order, merges list of (a, b))."""
    vocab = list(initial)
    have = set(vocab)
    merges = []
    words = {w: c for w, c in words.items() if len(w) > 0}
    banned = set()
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            for i in range(len(w) - 1):
                pairs[(w[i], w[i + 1])] += c
        best = None
        for p, c in pairs.items():
            if p in banned or p[0] + p[1] in have:
                continue
            if best is None or c > best[1] or (c == best[1] and p < best[0]):
                best = (p, c)
        if best is None or best[1] < 2:
            break
        (a, b), _ = best
        merges.append((a, b))
        vocab.append(a + b)
        have.add(a + b)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            t = tuple(out)
            new[t] = new.get(t, 0) + c
        words = new
    return vocab, merges


def train_bytelevel(corpus, n_merges, pattern=LLAMA3_PATTERN):
    rx = translate(pattern)
    words = collections.Counter()
    for piece in regex_split(rx, corpus):
        words[tuple(B2U[x] for x in piece.encode("utf-8"))] += 1
    initial = [B2U[b] for b in range(256)]
    return train_bpe(words, n_merges, initial)


def train_metaspace(corpus, n_merges):
    """Character-level BPE over text with ' ' -> U+2581 and a leading U+2581 per line; the
    alphabet is the characters seen (others fall back to <0xXX> bytes)."""
    words = collections.Counter()
    for line in corpus.split("\n"):
        t = "\u2581" + line.replace(" ", "\u2581")
        for w in re.split("(?=\u2581)", t):
            if w:
                words[tuple(w)] += 1
    chars = sorted({c for w in words for c in w})
    return train_bpe(words, n_merges, chars)


# ------------------------------------------------------------------------------------------------
# NFC / NFD as Hugging Face tokenizers does them

def _gen_tables():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "tok", "gen_unicode_tables.py")
    spec = importlib.util.spec_from_file_location("gen_unicode_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# tokenizers' normalizers use Unicode 9.0.0 (the crate unicode-normalization-alignments 0.1.12);
# the code points assigned later that carry normalization data in Python's unicodedata (the list
# src/tok/gen_unicode_tables.py keeps out of the C tables) are unassigned to it
POST_HF_NORM = frozenset(cp for a, b in _gen_tables().POST_HF_NORM for cp in range(a, b + 1))


def hf_normalize(form, s):
    """tokenizers' NFC / NFD of s: Python's unicodedata.normalize, with each POST_HF_NORM code point
    as tokenizers sees it — class 0, no decomposition, in no composition — so it cuts the text into
    pieces normalized apart (nothing reorders or composes across such a code point)"""
    out, start = [], 0
    for i, ch in enumerate(s):
        if ord(ch) in POST_HF_NORM:
            out += [unicodedata.normalize(form, s[start:i]), ch]
            start = i + 1
    out.append(unicodedata.normalize(form, s[start:]))
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# tokenizer.json writers

def added_token(i, content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {"id": i, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def bytelevel_json(vocab, merges, style="llama3", specials=("<|begin_of_text|>", "<|end_of_text|>"),
                   ignore_merges=True, merges_as_arrays=False, add_prefix_space=False, template=True):
    """template=False: the post-processor is ByteLevel alone (Qwen2/Qwen3: nothing put before the
    text); else ByteLevel then a TemplateProcessing with specials[0] first (LLaMA-3)."""
    v = {t: i for i, t in enumerate(vocab)}
    added = [added_token(len(vocab) + k, s) for k, s in enumerate(specials)]
    if style in ("llama3", "qwen2"):
        pat = LLAMA3_PATTERN if style == "llama3" else QWEN2_PATTERN
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    else:
        pre = {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": True}
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": specials[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {specials[0]: {"id": specials[0], "ids": [len(vocab)], "tokens": [specials[0]]}}}
    if template:
        post = {"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": True,
                                                    "trim_offsets": False, "use_regex": True}, post]}
    else:
        post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": v, "merges": [[a, b] if merges_as_arrays else a + " " + b for a, b in merges]},
    }


def qwen2_json(vocab, merges, nfc=False):
    """Qwen2/Qwen3-style tokenizer.json: the Qwen2 split regex then ByteLevel, a ByteLevel
    post-processor (no BOS), added tokens <|endoftext|> (the first id after the BPE vocabulary),
    <|im_start|>, <|im_end|> (special, not normalized), merges not ignored; nfc: the normalizer
    {"type": "NFC"} that Qwen's own files declare (else none)."""
    tj = bytelevel_json(vocab, merges, "qwen2", specials=QWEN2_SPECIALS, ignore_merges=False, template=False)
    if nfc:
        tj["normalizer"] = {"type": "NFC"}
    return tj


def qwen2_config_files(vocab_size):
    """(tokenizer_config.json, config.json fields) as Qwen2.5 ships them: bos_token null, no
    add_bos_token; config.json's bos_token_id is <|endoftext|> all the same."""
    ids = {s: vocab_size + k for k, s in enumerate(QWEN2_SPECIALS)}
    tc = {"add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
          "unk_token": None, "errors": "replace", "model_max_length": 131072, "split_special_tokens": False,
          "tokenizer_class": "Qwen2Tokenizer", "clean_up_tokenization_spaces": False,
          "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                            "single_word": False, "special": True} for s, i in ids.items()}}
    return tc, {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}


def metaspace_json(chars_vocab, merges, split=False, prepend_scheme="first", legacy=False):
    """LLaMA-2-style (sentencepiece conversion, newer tokenizers): <unk> <s> </s>, 256 byte tokens,
    then the trained vocabulary; Metaspace pre-tokenizer; byte fallback."""
    vocab = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + chars_vocab
    v = {t: i for i, t in enumerate(vocab)}
    if legacy:
        pre = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    else:
        pre = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": prepend_scheme, "split": split}
    return {
        "version": "1.0", "added_tokens": [added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>")],
        "normalizer": None, "pre_tokenizer": pre,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": v, "merges": [a + " " + b for a, b in merges]},
    }


# ------------------------------------------------------------------------------------------------
# encoding

class RefTokenizer:
    """Encodes with a tokenizer.json dict of the shapes written above (and the shared models')."""

    def __init__(self, tj):
        self.tj = tj
        m = tj["model"]
        self.vocab = m["vocab"]
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            a, b = mg if isinstance(mg, list) else mg.split(" ")
            self.ranks.setdefault((a, b), r)
        self.ignore_merges = m.get("ignore_merges", False)
        self.byte_fallback = m.get("byte_fallback", False)
        self.fuse_unk = m.get("fuse_unk", False)
        self.unk = m.get("unk_token")
        self.added = {a["content"]: self.vocab.get(a["content"], a["id"]) for a in tj.get("added_tokens") or []}
        self.added_norm = {a["content"] for a in tj.get("added_tokens") or [] if a.get("normalized", not a.get("special"))}
        self.pre = []
        self._flatten_pre(tj.get("pre_tokenizer"))
        self.norm = []
        self._flatten_norm(tj.get("normalizer"))
        self.bytelevel = any(p["type"] == "ByteLevel" for p in self.pre)
        self.cache = {}

    def _flatten_pre(self, p):
        if not p:
            return
        if p["type"] == "Sequence":
            for q in p["pretokenizers"]:
                self._flatten_pre(q)
        else:
            self.pre.append(p)

    def _flatten_norm(self, n):
        if not n:
            return
        if n["type"] == "Sequence":
            for q in n["normalizers"]:
                self._flatten_norm(q)
        else:
            self.norm.append(n)

    def split_added(self, text, which):
        """Leftmost-longest added-token matches; returns [(is_token, str)]."""
        toks = sorted(which, key=len, reverse=True)
        out, i, prev = [], 0, 0
        while i < len(text):
            hit = next((t for t in toks if text.startswith(t, i)), None)
            if hit is None:
                i += 1
                continue
            if prev < i:
                out.append((False, text[prev:i]))
            out.append((True, hit))
            i += len(hit)
            prev = i
        if prev < len(text):
            out.append((False, text[prev:]))
        return out

    def normalize(self, s):
        for n in self.norm:
            if n["type"] == "Prepend":
                if s:
                    s = n["prepend"] + s
            elif n["type"] == "Replace":
                s = s.replace(n["pattern"]["String"], n["content"])
            elif n["type"] in ("NFC", "NFD"):
                s = hf_normalize(n["type"], s)
            else:
                raise ValueError(n["type"])
        return s

    def pretokenize(self, s, first):
        words = [(s, first)]
        for p in self.pre:
            new = []
            for w, f in words:
                if p["type"] == "ByteLevel":
                    if p.get("add_prefix_space", True) and not w.startswith(" "):
                        w = " " + w
                    if p.get("use_regex", True):
                        new += [(x, False) for x in regex_split(translate(GPT2_PATTERN), w)]
                    else:
                        new.append((w, f))
                elif p["type"] == "Split":
                    new += [(x, False) for x in regex_split(translate(p["pattern"]["Regex"]), w)]
                elif p["type"] == "Metaspace":
                    rep = p["replacement"]
                    w = w.replace(" ", rep)
                    scheme = p.get("prepend_scheme", "always" if p.get("add_prefix_space", True) else "never")
                    if (scheme == "always" or (scheme == "first" and f)) and not w.startswith(rep):
                        w = rep + w
                    if p.get("split", True):
                        parts = [x for x in re.split("(?=" + re.escape(rep) + ")", w) if x]
                        new += [(x, f and k == 0) for k, x in enumerate(parts)]
                    else:
                        new.append((w, f))
                else:
                    raise ValueError(p["type"])
            words = new
        return [w for w, _ in words if w]

    def bpe(self, word):
        """word: a string in the vocabulary's alphabet; returns ids."""
        if word in self.cache:
            return self.cache[word]
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        syms = []          # tokens as strings, or ("unk", n) / ("byte", s)
        for ch in word:
            if ch in self.vocab:
                syms.append(ch)
            elif self.byte_fallback and all("<0x%02X>" % b in self.vocab for b in ch.encode("utf-8")):
                syms += ["<0x%02X>" % b for b in ch.encode("utf-8")]
            elif self.unk is not None:
                if self.fuse_unk and syms and syms[-1] == ("unk",):
                    continue
                syms.append(("unk",))
        while True:
            best = None
            for i in range(len(syms) - 1):
                a, b = syms[i], syms[i + 1]
                if isinstance(a, tuple) or isinstance(b, tuple):
                    continue
                r = self.ranks.get((a, b))
                if r is not None and (best is None or r < best):
                    best = r
            if best is None:
                break
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and not isinstance(syms[i], tuple) and not isinstance(syms[i + 1], tuple) \
                        and self.ranks.get((syms[i], syms[i + 1])) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        ids = [self.vocab[self.unk] if isinstance(s, tuple) else self.vocab[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        raw_tokens = set(self.added) - self.added_norm
        first_seg = True
        offset = 0
        for is_tok, seg in self.split_added(text, raw_tokens):
            if is_tok:
                ids.append(self.added[seg])
                offset += len(seg)
                first_seg = False
                continue
            norm = self.normalize(seg)
            first_piece = True
            for is_tok2, piece in self.split_added(norm, self.added_norm):
                if is_tok2:
                    ids.append(self.added[piece])
                else:
                    first = offset == 0 and first_piece
                    for w in self.pretokenize(piece, first):
                        if self.bytelevel:
                            w = to_bytelevel(w.encode("utf-8"))
                        ids += self.bpe(w)
                first_piece = False
            offset += len(seg)
            first_seg = False
        return ids


def dump(tj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
