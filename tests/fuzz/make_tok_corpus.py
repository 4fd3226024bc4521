#!/usr/bin/python3
"""make_tok_corpus.py — seed corpora of the tokenizer fuzz harnesses (tests/fuzz/corpus/):
  fuzz_spm: the sentencepiece test models (tests/data/tok: BPE and unigram, byte fallback,
            user-defined symbols, a precompiled charsmap, whitespace as suffix) and the shared
            stories260K tokenizer.model;
  fuzz_hf:  small tokenizer.json files (< 8 KB each, the harness's -max_len) in every supported
            shape: LLaMA-3 / Qwen2 (Split regex + ByteLevel, ignore_merges, specials,
            TemplateProcessing; Qwen's NFC normalizer, a Sequence with NFD and NFC), GPT-2
            (ByteLevel use_regex, add_prefix_space), LLaMA-2 Metaspace
            (prepend first / legacy, byte fallback, fuse_unk), the tinystories656K shape
            (Prepend + Replace normalizers, no pre-tokenizer, normalized specials, unk), added
            tokens with lstrip / rstrip / single_word / normalized, a String Split with every
            behavior, merges as arrays; regression inputs (regress_*).
BPEs trained by tests/ref/tok_ref.py on a slice of the shared text.
Run:  /usr/bin/python3 tests/fuzz/make_tok_corpus.py [SHARED]"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import tok_ref as R  # noqa: E402

SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared")
MAX_LEN = 8192


def write(d, name, data):
    if isinstance(data, dict):
        data = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert len(data) <= MAX_LEN, (name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    print("%s/%s: %d bytes" % (os.path.basename(d), name, len(data)))


def main():
    spm_dir = os.path.join(HERE, "corpus", "fuzz_spm")
    os.makedirs(spm_dir, exist_ok=True)
    data_tok = os.path.join(ROOT, "tests", "data", "tok")
    for name in ("bpe_bytefallback", "bpe_plain", "unigram_rules", "unigram_suffix"):
        shutil.copy(os.path.join(data_tok, "spm_%s.model" % name), os.path.join(spm_dir, name + ".model"))
    shutil.copy(os.path.join(SHARED, "models", "stories260K", "tokenizer.model"), os.path.join(spm_dir, "stories260K.model"))

    d = os.path.join(HERE, "corpus", "fuzz_hf")
    os.makedirs(d, exist_ok=True)
    text = open(os.path.join(SHARED, "data", "tinystories_val_head.txt"), encoding="utf-8").read()[:6000]
    text += " it's we'RE they'd 2024 3.14 ſtraße 日本 😀  \n\n\t x"
    vocab, merges = R.train_bytelevel(text, 40)
    write(d, "llama3.json", R.bytelevel_json(vocab, merges, "llama3"))
    write(d, "qwen2_merges_arrays.json", R.bytelevel_json(vocab, merges, "qwen2", ignore_merges=False, merges_as_arrays=True))
    write(d, "gpt2_prefix_space.json", R.bytelevel_json(vocab, merges, "gpt2", ignore_merges=False, add_prefix_space=True))
    write(d, "qwen2_nfc.json", R.qwen2_json(vocab, merges, nfc=True))
    write(d, "qwen2_seq_nfd_replace_nfc.json", dict(R.qwen2_json(vocab, merges), normalizer={"type": "Sequence", "normalizers": [
        {"type": "NFD"}, {"type": "Replace", "pattern": {"String": "\u0301"}, "content": ""}, {"type": "NFC"}]}))
    mvocab, mmerges = R.train_metaspace(text, 40)
    write(d, "metaspace_first.json", R.metaspace_json(mvocab, mmerges))
    write(d, "metaspace_legacy_split.json", R.metaspace_json(mvocab, mmerges, split=True, legacy=True))
    # the tinystories656K shape with a small character vocabulary
    chars = sorted(set(text.replace(" ", "\u2581")))[:120]
    v = {"<unk>": 0, "<|start_story|>": 1, "<|end_story|>": 2}
    for c in chars:
        v.setdefault(c, len(v))
    tmerges = []
    for a, b in (("e", "\u2581"), ("t", "h"), ("\u2581", "a"), ("th", "e"), ("\u2581a", "n")):
        if a in v and b in v:
            v.setdefault(a + b, len(v))
            tmerges.append(a + " " + b)
    tiny = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [R.added_token(0, "<unk>", normalized=True), R.added_token(1, "<|start_story|>", normalized=True),
                         R.added_token(2, "<|end_story|>", normalized=True)],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|start_story|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<|start_story|>": {"id": "<|start_story|>", "ids": [1], "tokens": ["<|start_story|>"]}}},
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False, "vocab": v, "merges": tmerges},
    }
    write(d, "tinystories_shape.json", tiny)
    # added-token options and a String Split with each behavior (small alphabet)
    small = {"<unk>": 0, "a": 1, "b": 2, " ": 3, "ab": 4, "ab ": 5, "'": 6, "s": 7, "1": 8}
    opts = dict(tiny, normalizer=None, post_processor=None)
    opts["added_tokens"] = [R.added_token(9, "<sep>", lstrip=True, rstrip=True), R.added_token(10, "ab", special=False, single_word=True),
                            R.added_token(11, "[X]", special=False, normalized=True), R.added_token(12, "<|begin_of_text|>")]
    opts["model"] = dict(tiny["model"], vocab=small, merges=[["a", "b"], ["ab", " "]], fuse_unk=False, byte_fallback=False)
    for beh in ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
        o = dict(opts, pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": " "}, "behavior": beh, "invert": beh == "Contiguous"},
            {"type": "Split", "pattern": {"Regex": R.GPT2_PATTERN}, "behavior": "Isolated", "invert": False}]})
        write(d, "added_split_%s.json" % beh.lower(), o)
    # regressions: pre-tokenizers failing after their string was copied (leaked it; found by fuzz_hf)
    write(d, "regress_split_string_bad_behavior.json", dict(opts, pre_tokenizer={
        "type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways", "invert": False}]}))
    write(d, "regress_metaspace_bad_scheme.json", dict(opts, pre_tokenizer={
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "sometimes", "split": True}))


if __name__ == "__main__":
    main()
