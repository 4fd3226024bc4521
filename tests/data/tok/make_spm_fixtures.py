#!/usr/bin/python3
"""make_spm_fixtures.py — development-time generator of the sentencepiece test fixtures in this
directory: small models trained by the real sentencepiece library (Debian python3-sentencepiece)
on the shared data, and the ids that library gives for the test texts (expected.json). The test
(tests/py/test_tokenizer.py) compares src/tok against expected.json, and against the library
itself when it is installed.  Run:  /usr/bin/python3 tests/data/tok/make_spm_fixtures.py [SHARED]"""
import io
import json
import os
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "py"))
from tok_texts import test_texts  # noqa: E402

SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "..", "shared")

# a tiny custom normalization rule set (compiled by the trainer into a small precompiled_charsmap):
# source code points TAB target code points
RULES = "\n".join([
    "FF21\t41", "FF22\t42", "FF41\t61", "FF42\t62",       # fullwidth A B a b -> ASCII
    "FB01\t66 69", "FB02\t66 6C",                          # ligatures fi fl
    "9\t20", "3000\t20", "A0\t20",                          # tab, ideographic space, NBSP -> space
    "2460\t31", "2461\t32",                                # circled 1 2
    "41 42 43\t78 79 7A",                                  # "ABC" -> "xyz" (multi-char source)
    "2026\t2E 2E 2E",                                      # ellipsis -> ...
]) + "\n"

CONFIGS = {
    # name: trainer options
    "spm_bpe_bytefallback": dict(model_type="bpe", vocab_size=400, byte_fallback=True, split_digits=True,
                                 normalization_rule_name="identity", user_defined_symbols=["<sep>", "@@"]),
    "spm_bpe_plain": dict(model_type="bpe", vocab_size=300, normalization_rule_name="identity",
                          add_dummy_prefix=False, remove_extra_whitespaces=False),
    "spm_unigram_rules": dict(model_type="unigram", vocab_size=400, byte_fallback=True,
                              normalization_rule_tsv=os.path.join(HERE, "rules.tsv"), user_defined_symbols=["<sep>"]),
    "spm_unigram_suffix": dict(model_type="unigram", vocab_size=300, treat_whitespace_as_suffix=True,
                               normalization_rule_name="identity"),
}


def main():
    corpus = open(os.path.join(SHARED, "data", "tinystories_val_head.txt"), encoding="utf-8").read()[:150000]
    corpus += open(os.path.join(SHARED, "data", "wikitext2_test.joined.txt"), encoding="utf-8").read()[:150000]
    corpus += "\n".join(test_texts()) + "\nABC ﬁﬂ ①② ＡＢａｂ …\t\u3000x\n"
    with open(os.path.join(HERE, "rules.tsv"), "w") as f:
        f.write(RULES)
    texts = test_texts()
    expected = {"texts": texts, "models": {}}
    for name, opts in CONFIGS.items():
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus.split("\n")), model_writer=model,
                                       character_coverage=0.99, num_threads=1, minloglevel=2,
                                       max_sentence_length=100000, **opts)
        path = os.path.join(HERE, name + ".model")
        with open(path, "wb") as f:
            f.write(model.getvalue())
        sp = spm.SentencePieceProcessor(model_file=path)
        expected["models"][name] = {"bos": sp.bos_id(), "ids": [sp.encode(t) for t in texts]}
        print(name, os.path.getsize(path), "bytes")
    os.remove(os.path.join(HERE, "rules.tsv"))
    with open(os.path.join(HERE, "spm_expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
