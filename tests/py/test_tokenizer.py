"""test_tokenizer.py — the model's own tokenizer in C (src/tok, `cfsp-mpi tokenize`, --calib-text /
--eval-text), against real data and independent implementations:

 1. shared: every ../shared/data/*.txt through both shared models' tokenizers (stories260K:
    sentencepiece tokenizer.model; tinystories656K: tokenizer.json BPE with unk) gives exactly
    ../shared/data/tokens/<model>/<text>.u32.bin; --bos 0, no overwrite without --force, no .tmp left;
 2. split: the hand-written GPT-2 / LLaMA-3 / Qwen2 pre-tokenizer regexes against Python's `re`
    running the same patterns (\\p{L}, \\p{N}, \\s spelled out from unicodedata), on the test texts
    and on random strings of tricky characters;
 3. bytelevel / metaspace: tokenizer.json files generated here by a tiny BPE training
    (tests/ref/tok_ref.py) in the LLaMA-3, GPT-2 (with and without add_prefix_space), Qwen2 and
    LLaMA-2-Metaspace styles, against the pure-Python reference tokenizer, on texts with Unicode,
    digits, whitespace runs, contractions and special tokens; the reference also on the shared
    tinystories656K tokenizer.json;
 4. sentencepiece: against the sentencepiece library (Debian python3-sentencepiece, required;
    mpi_scripts/setup.sh installs it): models it trained (tests/data/tok: BPE and unigram, byte
    fallback, user-defined symbols, a precompiled charsmap, whitespace as suffix) with the ids it gave
    (committed, and re-checked against the installed library), the same models with every
    combination of the normalizer flags add_dummy_prefix / remove_extra_whitespaces, and the shared
    stories260K tokenizer.model, on the test texts, random whitespace-heavy texts and WikiText-2;
 5. malformed tokenizer files: one-line errors naming the file and the field (all through the
    library in one process, a few through `cfsp-mpi tokenize`: exit 1, that line, no output file);
 6. run: --calib-text / --eval-text give the same perplexities, calibration and pruning as the runs
    with the shared token files (tokenizer.json) and with `cfsp-mpi tokenize` outputs (sentencepiece).
    (Tokenization runs on rank 0 only; there is no parallel tokenizer to compare.)
 7. qwen (the BOS rule, --bos auto): a generated Qwen2-style tokenizer.json (ByteLevel post-processor,
    <|endoftext|> <|im_start|> <|im_end|>, tokenizer_config.json bos_token null, config.json
    bos_token_id = <|endoftext|>) gives no BOS by default and the reference's ids (chat markup and
    <|endoftext|> as their added ids); --bos 1 is a one-line error naming the tokenizer (exit 1, no
    output); LLaMA-3 style (TemplateProcessing) still puts its BOS first; add_bos_token false in
    tokenizer_config.json removes the BOS of both shared models; a run with --calib-text/--eval-text
    on a random Qwen2 checkpoint with that tokenizer = the run on token files of the reference's ids
    (no BOS), and differs from one with <|endoftext|> first; with Qwen's {"type": "NFC"} normalizer
    (the files Qwen2/2.5/3 ship): the reference's ids with NFC applied first, on the test texts, their
    NFD forms and decomposed inputs (= the ids of the precomposed text), through tok_tool and
    `cfsp-mpi tokenize`; invalid UTF-8 still reported at its byte offset in the raw text;
 8. nfc: the NFC / NFD normalizers alone (tok_tool norm) against Python's unicodedata.normalize
    restricted to Unicode 9.0.0 as tokenizers has it (tok_ref.hf_normalize): every scalar value
    alone, after "a" and before U+0301, between U+0345 and U+0334; every canonical decomposition
    (Hangul syllables included) decomposed; random strings of tricky code points (marks of many
    classes in random order, Hangul jamo L/V/T and syllables, singletons, composition exclusions,
    non-starter decompositions, Vietnamese stacked diacritics, starter + starter compositions,
    astral compositions, the code points Unicode added after 9.0.0, long mark runs).

usage: test_tokenizer.py --bin cfsp-mpi --tok-tool tok_tool --shared DIR --workdir DIR
"""

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "ref"))

TOK_TOOL = None
if "--tok-tool" in sys.argv:
    k = sys.argv.index("--tok-tool")
    TOK_TOOL = sys.argv[k + 1]
    del sys.argv[k:k + 2]

import common  # noqa: E402
import tok_ref as R  # noqa: E402
from tok_texts import test_texts  # noqa: E402

DATA_DIR = os.path.join(os.path.dirname(HERE), "data", "tok")
TEXT_NAMES = ("tinystories_val_head", "wikitext2_test.joined", "wikitext2_validation.joined")


def run(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=common.mpi_env())
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def write_texts(path, texts):
    with open(path, "wb") as f:
        for t in texts:
            b = t.encode("utf-8") if isinstance(t, str) else t
            assert b"\0" not in b
            f.write(b + b"\0")


def tool_encode(model_dir, texts, work):
    path = os.path.join(work, "texts.bin")
    write_texts(path, texts)
    rc, out, err = run([TOK_TOOL, "encode", model_dir, path])
    if rc != 0:
        return None, err.strip()
    return [json.loads(line) for line in out.splitlines()], ""


def first_diff(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i
    return min(len(a), len(b))


def read_u32(path):
    with open(path, "rb") as f:
        b = f.read()
    return list(struct.unpack("<%dI" % (len(b) // 4), b))


# ------------------------------------------------------------------------------------------------
def test_shared(args, ck):
    for model in common.SHARED_MODELS:
        mdir = os.path.join(args.shared, "models", model)
        for name in TEXT_NAMES:
            txt = os.path.join(args.shared, "data", name + ".txt")
            ref = os.path.join(args.shared, "data", "tokens", model, name + ".u32.bin")
            out = os.path.join(args.workdir, "%s.%s.u32.bin" % (model, name))
            if os.path.exists(out):
                os.remove(out)
            rc, _, err = run([args.bin, "tokenize", "--model", mdir, txt, out])
            same = rc == 0 and open(out, "rb").read() == open(ref, "rb").read()
            detail = err.strip().splitlines()[-1] if err.strip() else ""
            if rc == 0 and not same:
                a, b = read_u32(out), read_u32(ref)
                k = first_diff(a, b)
                detail = "%d vs %d tokens, first difference at %d: %s vs %s" % (len(a), len(b), k, a[k:k + 5], b[k:k + 5])
            ck.check(same, "shared %s / %s: ids equal ../shared/data/tokens" % (model, name), detail)
    # CLI behaviour on one pair
    mdir = os.path.join(args.shared, "models", "stories260K")
    txt = os.path.join(args.shared, "data", "tinystories_val_head.txt")
    ref = read_u32(os.path.join(args.shared, "data", "tokens", "stories260K", "tinystories_val_head.u32.bin"))
    out = os.path.join(args.workdir, "stories260K.tinystories_val_head.u32.bin")
    before = open(out, "rb").read()
    rc, _, err = run([args.bin, "tokenize", "--model", mdir, txt, out, "--bos", "0"])
    ck.check(rc == 1 and "exists (use --force" in err and open(out, "rb").read() == before,
             "tokenize: an existing output is not overwritten without --force", err.strip())
    rc, _, err = run([args.bin, "tokenize", "--model", mdir, txt, out, "--bos", "0", "--force"])
    ck.check(rc == 0 and read_u32(out) == ref[1:], "tokenize --bos 0 --force: the same ids without the BOS")
    ck.check(not [f for f in os.listdir(args.workdir) if f.endswith(".tmp")], "tokenize: no temporary file left")
    rc, _, err = run([args.bin, "tokenize", "--model", mdir, txt])
    ck.check(rc == 1 and "usage: cfsp-mpi tokenize" in err, "tokenize: missing output gives the usage", err.strip())
    rc, _, err = run(["mpiexec", "-n", "2", args.bin, "tokenize", "--model", mdir, txt, out, "--force"])
    ck.check(rc == 0 and read_u32(out) == ref, "tokenize under mpiexec -n 2 (rank 0 works): same ids", err.strip()[-200:])


# ------------------------------------------------------------------------------------------------
TRICKY_CHARS = (list(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000") +
                list("aZéßſKǅ日ä\u0301\u0308'\"!?.,-_@#19٣½Ⅻ²😀🏽\u200d") + ["'s", "'S", "'ll", "'RE", "'ſ", "'t", "'D", "'ve"] +
                ["\r\n", "  ", "\n\n", " 1", " a", " !"])


def random_texts(seed, n):
    rnd = random.Random(seed)
    return ["".join(rnd.choice(TRICKY_CHARS) for _ in range(rnd.randint(0, 24))) for _ in range(n)]


def test_split(args, ck):
    texts = test_texts() + random_texts(1, 3000)
    tpath = os.path.join(args.workdir, "split_texts.bin")
    write_texts(tpath, texts)
    for name, pat in (("LLaMA-3", R.LLAMA3_PATTERN), ("GPT-2", R.GPT2_PATTERN), ("Qwen2", R.QWEN2_PATTERN)):
        ppath = os.path.join(args.workdir, "pattern.txt")
        with open(ppath, "w", encoding="utf-8") as f:
            f.write(pat)
        rc, out, err = run([TOK_TOOL, "split", ppath, tpath])
        got = [json.loads(line) for line in out.splitlines()] if rc == 0 else []
        rx = R.translate(pat)
        exp = [[len(p.encode("utf-8")) for p in R.regex_split(rx, t)] for t in texts]
        bad = [i for i in range(len(texts)) if i >= len(got) or got[i] != exp[i]]
        ck.check(rc == 0 and not bad, "split: %s pattern by hand = Python re, %d texts (%d random)" % (name, len(texts), len(texts) - len(test_texts())),
                 err.strip() if rc else ("first mismatch on %r: %s vs %s" % (texts[bad[0]], got[bad[0]] if bad[0] < len(got) else None, exp[bad[0]]) if bad else ""))


# ------------------------------------------------------------------------------------------------
def corpus_for_training(args):
    wt = open(os.path.join(args.shared, "data", "wikitext2_test.joined.txt"), encoding="utf-8").read()
    ts = open(os.path.join(args.shared, "data", "tinystories_val_head.txt"), encoding="utf-8").read()
    return wt[:60000] + ts[:20000] + "\n".join(test_texts()) + " ſtraße we'ſt" * 30, wt


def compare(ck, what, model_dir, tj, texts, work):
    got, err = tool_encode(model_dir, texts, work)
    if got is None:
        ck.check(False, what, err)
        return
    ref = R.RefTokenizer(tj)
    exp = [ref.encode(t) for t in texts]
    bad = [i for i in range(len(texts)) if got[i] != exp[i]]
    detail = ""
    if bad:
        i = bad[0]
        k = first_diff(got[i], exp[i])
        detail = "text %d %r: at %d C %s vs reference %s" % (i, texts[i][:60], k, got[i][k:k + 4], exp[i][k:k + 4])
    ck.check(not bad, what + " (%d texts, %d tokens)" % (len(texts), sum(len(e) for e in exp)), detail)


def test_generated(args, ck):
    corpus, wt = corpus_for_training(args)
    vocab, merges = R.train_bytelevel(corpus, 300)
    mvocab, mmerges = R.train_metaspace(corpus, 300)
    ck.note("trained a byte-level BPE (%d tokens, %d merges) and a Metaspace BPE (%d merges)" % (len(vocab), len(merges), len(mmerges)))
    texts = test_texts() + [wt[100000:130000]] + random_texts(2, 200)
    variants = [
        ("LLaMA-3 style (Split regex + ByteLevel, ignore_merges, specials)", R.bytelevel_json(vocab, merges, "llama3")),
        ("LLaMA-3 style, merges as arrays, ignore_merges off", R.bytelevel_json(vocab, merges, "llama3", ignore_merges=False, merges_as_arrays=True)),
        ("GPT-2 style (ByteLevel use_regex)", R.bytelevel_json(vocab, merges, "gpt2", ignore_merges=False)),
        ("GPT-2 style, add_prefix_space", R.bytelevel_json(vocab, merges, "gpt2", ignore_merges=False, add_prefix_space=True)),
        ("Qwen2 style (single digits)", R.bytelevel_json(vocab, merges, "qwen2")),
        ("LLaMA-2 Metaspace (prepend first, byte fallback)", R.metaspace_json(mvocab, mmerges)),
        ("LLaMA-2 Metaspace split", R.metaspace_json(mvocab, mmerges, split=True)),
        ("LLaMA-2 Metaspace legacy add_prefix_space", R.metaspace_json(mvocab, mmerges, legacy=True)),
    ]
    for k, (what, tj) in enumerate(variants):
        d = os.path.join(args.workdir, "gen%d" % k)
        os.makedirs(d, exist_ok=True)
        R.dump(tj, os.path.join(d, "tokenizer.json"))
        compare(ck, "generated tokenizer.json, " + what + ": C = Python reference", d, tj, texts, args.workdir)
    # the CLI with a generated tokenizer: BOS from its TemplateProcessing
    d = os.path.join(args.workdir, "gen0")
    txt = os.path.join(args.workdir, "tricky.txt")
    with open(txt, "w", encoding="utf-8") as f:
        f.write("\n".join(test_texts()))
    out = os.path.join(args.workdir, "tricky.u32.bin")
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out, "--force"])
    exp = [len(vocab)] + R.RefTokenizer(variants[0][1]).encode("\n".join(test_texts()))
    ck.check(rc == 0 and read_u32(out) == exp, "tokenize with the generated LLaMA-3-style tokenizer (BOS <|begin_of_text|> first)", err.strip())
    # invalid UTF-8 is refused by tokenizer.json tokenizers, with the byte offset
    with open(txt, "wb") as f:
        f.write(b"valid text \xff\xfe then")
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out, "--force"])
    ck.check(rc == 1 and "invalid UTF-8 at byte 11" in err and len(err.strip().splitlines()) == 1,
             "tokenizer.json: invalid UTF-8 text gives a one-line error with the offset", err.strip())
    # the reference on the real tinystories656K tokenizer (normalizer chain, unk) agrees too
    tj = json.load(open(os.path.join(args.shared, "models", "tinystories656K", "tokenizer.json"), encoding="utf-8"))
    sample = [wt[:3000], wt[50000:52000], "Ünïcödé 日本 ☃ x  y\n\nz", "<|start_story|>Once upon a time<|end_story|>"]
    compare(ck, "tinystories656K tokenizer.json: C = Python reference", os.path.join(args.shared, "models", "tinystories656K"), tj, sample, args.workdir)


# ------------------------------------------------------------------------------------------------
QWEN_CHAT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHello, it's 2024!<|im_end|>\n<|endoftext|>"


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def write_u32(path, ids):
    with open(path, "wb") as f:
        f.write(struct.pack("<%dI" % len(ids), *ids))


def qwen_dir(d, tj, nvocab, config=None):
    """a Qwen2-style tokenizer directory: tokenizer.json, tokenizer_config.json (bos_token null) and
    config.json (bos_token_id = <|endoftext|>; merged into `config` if given)"""
    os.makedirs(d, exist_ok=True)
    R.dump(tj, os.path.join(d, "tokenizer.json"))
    tc, cfg = R.qwen2_config_files(nvocab)
    write_json(os.path.join(d, "tokenizer_config.json"), tc)
    write_json(os.path.join(d, "config.json"), dict(config or {"model_type": "qwen2"}, **cfg))
    return cfg


def test_qwen(args, ck):
    """the BOS rule (tokenizer_adds_bos): `cfsp-mpi tokenize` with --bos auto (the default), 1 and 0
    on Qwen2-style and LLaMA-3-style tokenizers, add_bos_token false on the shared models, and a run
    with --calib-text / --eval-text on a Qwen2-style tokenizer"""
    corpus, wt = corpus_for_training(args)
    vocab, merges = R.train_bytelevel(corpus, 300, R.QWEN2_PATTERN)
    nv = len(vocab)
    eot, ims, ime = nv, nv + 1, nv + 2
    tj = R.qwen2_json(vocab, merges)
    ref = R.RefTokenizer(tj)
    d = os.path.join(args.workdir, "qwen2")
    shutil.rmtree(d, ignore_errors=True)
    cfg = qwen_dir(d, tj, nv)
    ck.check(cfg["bos_token_id"] == eot and tj["added_tokens"][0]["content"] == "<|endoftext|>" and tj["post_processor"]["type"] == "ByteLevel",
             "generated Qwen2-style tokenizer: <|endoftext|> = %d first after the BPE vocab, ByteLevel post-processor, config.json bos_token_id = it" % eot)
    # the C encoder = the reference, chat markup included
    texts = test_texts() + [QWEN_CHAT, "<|endoftext|>", "a<|im_start|>b<|im_end|>c", wt[200000:215000]]
    compare(ck, "generated Qwen2-style tokenizer.json (3 added tokens): C = Python reference", d, tj, texts, args.workdir)
    chat_ids = ref.encode(QWEN_CHAT)
    ck.check(chat_ids[0] == ims and chat_ids.count(ims) == 2 and chat_ids.count(ime) == 2 and chat_ids[-1] == eot
             and ref.encode("<|endoftext|>") == [eot],
             "reference: <|im_start|> <|im_end|> <|endoftext|> in the text are their added ids %d %d %d" % (ims, ime, eot), str(chat_ids))
    text = "\n".join(test_texts()) + "\n" + QWEN_CHAT + "\nmore text after <|endoftext|>"
    txt = os.path.join(args.workdir, "qwen_text.txt")
    with open(txt, "w", encoding="utf-8") as f:
        f.write(text)
    exp = ref.encode(text)
    out = os.path.join(args.workdir, "qwen_text.u32.bin")
    if os.path.exists(out):
        os.remove(out)
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out])
    got = read_u32(out) if rc == 0 else []
    ck.check(rc == 0 and got == exp and got[0] != eot and "no BOS" in err,
             "tokenize (default --bos auto), Qwen2 style: no BOS (not config.json's <|endoftext|>), ids = the reference (%d tokens), log says 'no BOS'" % len(exp),
             err.strip() if rc else ("first ids %s vs %s" % (got[:4], exp[:4])))
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out, "--force", "--bos", "0"])
    ck.check(rc == 0 and read_u32(out) == exp, "tokenize --bos 0, Qwen2 style: the same ids", err.strip())
    os.remove(out)
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out, "--bos", "1"])
    lines = err.strip().splitlines()
    ck.check(rc == 1 and len(lines) == 1 and lines[0].startswith("cfsp-mpi: error: ") and os.path.join(d, "tokenizer.json") in lines[0]
             and "defines no BOS token" in lines[0] and not os.path.exists(out) and not os.path.exists(out + ".tmp"),
             "tokenize --bos 1, Qwen2 style: exit 1, one line naming the tokenizer, no output", err.strip())
    # the same tokenizer.json without tokenizer_config.json: still no BOS by default (its post-processor)
    d2 = os.path.join(args.workdir, "qwen2_bare")
    shutil.rmtree(d2, ignore_errors=True)
    os.makedirs(d2)
    R.dump(tj, os.path.join(d2, "tokenizer.json"))
    rc, _, err = run([args.bin, "tokenize", "--model", d2, txt, out, "--force"])
    ck.check(rc == 0 and read_u32(out) == exp, "tokenize, Qwen2-style tokenizer.json alone: no BOS", err.strip())
    qwen_nfc(args, ck, vocab, merges, wt)

    # LLaMA-3 style: TemplateProcessing puts <|begin_of_text|> first, with or without a tokenizer_config.json
    l3 = R.bytelevel_json(vocab, merges, "llama3")
    d3 = os.path.join(args.workdir, "llama3_cfg")
    shutil.rmtree(d3, ignore_errors=True)
    os.makedirs(d3)
    R.dump(l3, os.path.join(d3, "tokenizer.json"))
    write_json(os.path.join(d3, "tokenizer_config.json"), {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                                                           "tokenizer_class": "PreTrainedTokenizerFast"})
    write_json(os.path.join(d3, "config.json"), {"model_type": "llama", "bos_token_id": nv, "eos_token_id": nv + 1})
    exp3 = R.RefTokenizer(l3).encode(text)
    for bos in (None, "auto", "1"):
        rc, _, err = run([args.bin, "tokenize", "--model", d3, txt, out, "--force"] + (["--bos", bos] if bos else []))
        ck.check(rc == 0 and read_u32(out) == [nv] + exp3 and "BOS first" in err,
                 "tokenize%s, LLaMA-3 style (TemplateProcessing): <|begin_of_text|> first, log says 'BOS first'" % (" --bos " + bos if bos else ""),
                 err.strip())
    # add_bos_token false in tokenizer_config.json: no BOS for the shared models (tokenizer.json and sentencepiece)
    txt_s = os.path.join(args.shared, "data", "tinystories_val_head.txt")
    for model in common.SHARED_MODELS:
        src = os.path.join(args.shared, "models", model)
        dm = os.path.join(args.workdir, "nobos_" + model)
        shutil.rmtree(dm, ignore_errors=True)
        os.makedirs(dm)
        for fn in os.listdir(src):
            if fn.startswith("tokenizer") and fn != "tokenizer_config.json":
                shutil.copy(os.path.join(src, fn), dm)
        tc = json.load(open(os.path.join(src, "tokenizer_config.json"))) if os.path.exists(os.path.join(src, "tokenizer_config.json")) else {}
        tc["add_bos_token"] = False
        write_json(os.path.join(dm, "tokenizer_config.json"), tc)
        shared = read_u32(os.path.join(args.shared, "data", "tokens", model, "tinystories_val_head.u32.bin"))
        rc, _, err = run([args.bin, "tokenize", "--model", dm, txt_s, out, "--force"])
        ok0 = rc == 0 and read_u32(out) == shared[1:]
        rc, _, err1 = run([args.bin, "tokenize", "--model", dm, txt_s, out, "--force", "--bos", "1"])
        ck.check(ok0 and rc == 0 and read_u32(out) == shared,
                 "%s with add_bos_token false: no BOS by default, --bos 1 puts it back (= the shared token file)" % model, (err + err1).strip()[-300:])

    # a run: --calib-text / --eval-text on a random Qwen2 checkpoint with this tokenizer = token files of the reference ids
    mdir = os.path.join(args.workdir, "qwen2_model")
    vsize = (nv + 3 + 63) // 64 * 64
    shutil.rmtree(mdir, ignore_errors=True)
    rc, _, err = run([args.mkmodel or "cfsp-mpi-mkmodel", "--out", mdir, "--hidden", "32", "--ffn", "64", "--layers", "2", "--heads", "4",
                      "--kv-heads", "2", "--vocab", str(vsize), "--dtype", "f32", "--family", "qwen2"]) if args.mkmodel else (1, "", "no --mkmodel")
    if rc != 0:
        ck.check(False, "run, Qwen2 style: cfsp-mpi-mkmodel wrote a Qwen2 checkpoint", err.strip())
        return
    mcfg = json.load(open(os.path.join(mdir, "config.json")))
    qwen_dir(mdir, tj, nv, mcfg)
    calib_t, eval_t = wt[300000:312000] + "\n" + QWEN_CHAT, QWEN_CHAT + "\n" + wt[400000:412000]
    paths = []
    for name, t in (("calib", calib_t), ("eval", eval_t)):
        p = os.path.join(args.workdir, "qwen_run_%s.txt" % name)
        with open(p, "w", encoding="utf-8") as f:
            f.write(t)
        ids = ref.encode(t)
        write_u32(p + ".u32.bin", ids)
        write_u32(p + ".eot.u32.bin", [eot] + ids)
        paths.append(p)
    opts = ["--model", mdir, "--nsamples", "4", "--seqlen", "64", "--eval-windows", "4", "--ratios", "0.3", "--save-models", "0", "--force"]
    a, b, c = (os.path.join(args.workdir, "qwen_run_" + k) for k in ("text", "tokens", "eot"))
    ra, _, ea = run(["mpiexec", "-n", "2", args.bin] + opts + ["--output-dir", a, "--calib-text", paths[0], "--eval-text", paths[1]])
    rb, _, eb = run(["mpiexec", "-n", "2", args.bin] + opts + ["--output-dir", b, "--calib-tokens", paths[0] + ".u32.bin",
                                                            "--eval-tokens", paths[1] + ".u32.bin"])
    rc_, _, ec = run(["mpiexec", "-n", "2", args.bin] + opts + ["--output-dir", c, "--calib-tokens", paths[0] + ".eot.u32.bin",
                                                             "--eval-tokens", paths[1] + ".eot.u32.bin"])
    ok = ra == 0 and rb == 0 and rc_ == 0
    detail = (ea + eb + ec).strip()[-400:]
    if ok:
        ja, jb, jc = (json.load(open(os.path.join(x, "results.json"))) for x in (a, b, c))
        logged = [l for l in ea.splitlines() if "cfsp-mpi: tokenized" in l]
        ok = same_run(ja, jb) and len(logged) == 2 and all("no BOS" in l for l in logged) and ja["dense"]["ppl"] != jc["dense"]["ppl"]
        detail = "dense ppl text %.6f / tokens %.6f / <|endoftext|> first %.6f; log %s" % (ja["dense"]["ppl"], jb["dense"]["ppl"], jc["dense"]["ppl"], logged)
    ck.check(ok, "run -n 2 Qwen2 style with --calib-text/--eval-text = the run on the reference ids without BOS (ppl, calibration, importances, "
             "pruned ppl; 'no BOS' logged; <|endoftext|> first would differ)", detail)


def qwen_nfc(args, ck, vocab, merges, wt):
    """the Qwen2-style tokenizer with the normalizer Qwen's files declare, {"type": "NFC"}: the
    reference with NFC first; decomposed text gives the ids of the precomposed text (and not the
    ids without NFC); NFC in a Sequence and NFD; `cfsp-mpi tokenize`; invalid UTF-8"""
    tj = R.qwen2_json(vocab, merges, nfc=True)
    d = os.path.join(args.workdir, "qwen2_nfc")
    shutil.rmtree(d, ignore_errors=True)
    qwen_dir(d, tj, len(vocab))
    decomposed = ["e\u0301", "\u1100\u1161\u11a8", "caf\u0065\u0301 na\u0131\u0308ve \u212b \u2126 \u0958",
                  "Tie\u0302\u0301ng Vie\u0323\u0302t: ho\u031b\u0323c sinh, ng\u01b0\u0300\u01a1i",
                  "\u1112\u1161\u11ab\u1100\u1173\u11af \u1112\u1161\u11ab\u1100\u1173\u11af\u11a8 \uac00\u11a8 \uac00\u11a7",
                  "<|im_start|>user\ne\u0301\u0301<|im_end|>\n<|im_start|>assistant\na\u0323\u0302<|im_end|>",
                  "mark first: \u0301a, \u0301\u0301"]
    nfd_texts = [unicodedata.normalize("NFD", t) for t in test_texts()]
    texts = test_texts() + decomposed + nfd_texts + [QWEN_CHAT, unicodedata.normalize("NFD", wt[200000:215000])] + norm_random_texts(4, 300)
    compare(ck, "Qwen2-style tokenizer.json with Qwen's NFC normalizer: C = Python reference (NFC first; test texts, their NFD "
            "forms, decomposed inputs, random tricky strings)", d, tj, texts, args.workdir)
    plain = R.RefTokenizer(R.qwen2_json(vocab, merges))
    got, err = tool_encode(d, decomposed, args.workdir)
    want = [plain.encode(unicodedata.normalize("NFC", t)) for t in decomposed]
    ck.check(got == want and all(plain.encode(t) != w for t, w in zip(decomposed, want) if unicodedata.normalize("NFC", t) != t),
             "NFC tokenizer: decomposed text gives the ids of the precomposed text without NFC (and not those of the decomposed text)",
             err or ("" if got == want else "%s vs %s" % (got, want)))
    # NFC inside a Sequence, and NFD: an accent-stripping chain and a decomposing one
    for name, norm in (("Sequence[NFD, Replace U+0301, NFC]", {"type": "Sequence", "normalizers": [
                            {"type": "NFD"}, {"type": "Replace", "pattern": {"String": "\u0301"}, "content": ""}, {"type": "NFC"}]}),
                       ("NFD", {"type": "NFD"})):
        tj2 = dict(tj, normalizer=norm)
        d2 = os.path.join(args.workdir, "qwen2_norm_" + name.split("[")[0].lower())
        shutil.rmtree(d2, ignore_errors=True)
        qwen_dir(d2, tj2, len(vocab))
        compare(ck, "Qwen2-style tokenizer.json, normalizer %s: C = Python reference" % name, d2, tj2, test_texts() + decomposed, args.workdir)
    # cfsp-mpi tokenize on NFD text = the reference
    text = unicodedata.normalize("NFD", "\n".join(test_texts())) + "\n" + "\n".join(decomposed) + "\n" + wt[:20000]
    txt = os.path.join(args.workdir, "qwen_nfc_text.txt")
    with open(txt, "w", encoding="utf-8") as f:
        f.write(text)
    out = os.path.join(args.workdir, "qwen_nfc_text.u32.bin")
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out, "--force"])
    exp = R.RefTokenizer(tj).encode(text)
    got = read_u32(out) if rc == 0 else []
    ck.check(rc == 0 and got == exp, "tokenize, Qwen2 style with NFC, NFD text: ids = the reference (%d tokens)" % len(exp),
             err.strip() if rc else ("first difference at %d" % first_diff(got, exp) if got != exp else ""))
    # invalid UTF-8: the byte offset in the raw text (checked before normalizing)
    with open(txt, "wb") as f:
        f.write("e\u0301e\u0301 ok ".encode("utf-8") + b"\xff rest")
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, out, "--force"])
    ck.check(rc == 1 and "invalid UTF-8 at byte 10" in err and len(err.strip().splitlines()) == 1,
             "tokenize, NFC tokenizer: invalid UTF-8 after decomposed text is reported at its raw byte offset", err.strip())


# ------------------------------------------------------------------------------------------------
NORM_MARKS = list(
    # combining marks of many classes (230 above, 220 below, 202 attached below, 216 horn, 1 overlay,
    # 240 ypogegrammeni, 10/107/8/7/9/129/130/132 Hebrew / Thai / kana voicing / nukta / virama /
    # Tibetan vowels, musical 216/226), the singletons U+0340 U+0341 U+0343, the non-starter
    # decompositions U+0344 U+0F73 U+0F75 U+0F81
    "\u0300\u0301\u0302\u0303\u0306\u0308\u0309\u030a\u030c\u0313\u0314\u0342\u0316\u0323\u0327\u0328"
         "\u031b\u0334\u0338\u0345\u05b0\u05bc\u0e48\u3099\u309a\u093c\u094d\u0f71\u0f72\u0f74\u0f80"
         "\U0001d165\U0001d16e\u0340\u0341\u0343\u0344\u0f73\u0f75\u0f81\u0952\u1dc0")
NORM_POOL = (
    NORM_MARKS +
    # starters that compose, ASCII and others
    list("aeiouyAEOUncsCSzZ ωαηιΩΑυρиеИгкуЗ\u05d0\u05e9\u0915\u0b47\u0b3e\u0b57\u0cc6\u0cd5\u0dd9\u0dcf\u1025\u102e"
         "\u1b05\u1b35\u0627\u0653\u0654\u0655x1 \n") +
    # precomposed, with more marks to come: é ồ ệ ẫ Ǻ ǖ ḱ Ḉ ᾂ Å ḋ ḍ ǭ ὧ
    list("\u00e9\u1ed3\u1ec7\u1eab\u01fa\u01d6\u1e31\u1e08\u1f82\u00c5\u1e0b\u1e0d\u01ed\u1f67") +
    # singletons (ANGSTROM SIGN, OHM, KELVIN, EN QUAD, GREEK QUESTION MARK, ANO TELEIA, CJK
    # compatibility) and composition exclusions (Devanagari QA, Hebrew, forking, musical)
    list("\u212b\u2126\u212a\u2000\u2001\u0374\u037e\u0387\u1fee\uf900\ufa10\U0002f800"
         "\u0958\u095f\u09dc\u0a33\u0f43\ufb1d\ufb2a\ufb4e\u2adc\U0001d15e\U0001d1bb") +
    # astral compositions (Kaithi, Chakma, Grantha, Tirhuta, Siddham) and their parts
    list("\U00011099\U000110ba\U0001109a\U00011131\U00011127\U0001112e\U00011347\U0001133e\U00011357"
         "\U0001134b\U000114b9\U000114ba\U000114b0\U000114bd\U000115b8\U000115af\U000115ba") +
    # Hangul: L V T jamo (T_BASE U+11A7 and old jamo beyond the composing ranges too), LV and LVT
    # syllables, the last syllable, compatibility jamo
    list("\u1100\u1101\u1112\u1113\u1161\u1175\u1176\u11a7\u11a8\u11c2\u11c3\uac00\uac01\uac1c\ud7a3\ud788\u3131") +
    # code points Unicode added after 9.0.0 (marks, and the Dives Akuru pair U+11935 U+11930): to
    # tokenizers unassigned
    list("\u1ac1\u1acb\u0898\u08ca\u1dfa\u1df6\u0d3b\u0c3c\U00011935\U00011930\U00011938\U00016ff0\U0001e2ec") +
    # Vietnamese stacked diacritics, decomposed in both orders
    ["e\u0302\u0301", "e\u0301\u0302", "o\u031b\u0323", "o\u0323\u031b", "u\u031b\u0309", "a\u0306\u0303",
     "A\u0323\u0302", "Vie\u0323\u0302t", "Tie\u0302\u0301ng"])


def norm_random_texts(seed, n):
    rnd = random.Random(seed)
    out = ["".join(rnd.choice(NORM_POOL) for _ in range(rnd.randint(0, 20))) for _ in range(n)]
    for k in (63, 64, 65, 200, 1000):              # long runs of marks (the sort of a long run)
        out.append("a" + "".join(rnd.choice(NORM_MARKS) for _ in range(k)) + "b\u0301")
    return out


def tool_norm(form, texts, work):
    path = os.path.join(work, "norm_texts.bin")
    write_texts(path, texts)
    rc, out, err = run([TOK_TOOL, "norm", form.lower(), path])
    if rc != 0:
        return None, err.strip()
    return [bytes.fromhex(l).decode("utf-8") if l != "error" else None for l in out.splitlines()], ""


def check_norm(ck, form, what, texts, work, sep=None):
    """C's normalizer = tok_ref.hf_normalize on each text; sep: the texts join independent pieces
    (located by splitting on sep for the message)"""
    got, err = tool_norm(form, texts, work)
    if got is None:
        ck.check(False, "%s: %s" % (form, what), err)
        return
    bad = [i for i in range(len(texts)) if got[i] != R.hf_normalize(form, texts[i])]
    detail = ""
    if bad:
        t, g, w = texts[bad[0]], got[bad[0]], R.hf_normalize(form, texts[bad[0]])
        if sep and g is not None:
            parts, gp, wp = t.split(sep), g.split(sep), w.split(sep)
            k = next((k for k in range(len(wp)) if k >= len(gp) or gp[k] != wp[k]), 0)
            t, g, w = parts[k] if k < len(parts) else "", gp[k] if k < len(gp) else None, wp[k]
        u = lambda x: " ".join("%04X" % ord(c) for c in x) if x is not None else "None"
        detail = "%d texts differ, first: input %s: C %s vs reference %s" % (len(bad), u(t), u(g), u(w))
    n = sum(len(t.split(sep)) for t in texts) if sep else len(texts)
    ck.check(not bad, "%s: %s (%d cases)" % (form, what, n), detail)


def test_nfc(args, ck):
    """tok_tool norm (uni_normalize) against Python's unicodedata as tokenizers has it (Unicode 9.0.0)"""
    ck.note("reference: Python unicodedata %s, restricted to Unicode 9.0.0 (tokenizers' unicode-normalization-alignments 0.1.12): "
            "%d later code points treated as unassigned" % (unicodedata.unidata_version, len(R.POST_HF_NORM)))
    scalars = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]      # (U+0000 ends a text)

    def chunked(fmt, cps):
        return ["\n".join(fmt(chr(c)) for c in cps[i:i + 8192]) for i in range(0, len(cps), 8192)]
    # "\n" is a starter that composes with nothing: the pieces are normalized independently
    for form in ("NFC", "NFD"):
        check_norm(ck, form, "every scalar value alone", chunked(lambda c: c, scalars), args.workdir, "\n")
        check_norm(ck, form, "every scalar value after 'a', before U+0301", chunked(lambda c: "a" + c + "\u0301", scalars), args.workdir, "\n")
        check_norm(ck, form, "every scalar value between U+0345 (class 240) and U+0334 (class 1)",
                   chunked(lambda c: "\u0345" + c + "\u0334", scalars), args.workdir, "\n")
    decomposable = [c for c in scalars if c not in R.POST_HF_NORM and unicodedata.normalize("NFD", chr(c)) != chr(c)]
    check_norm(ck, "NFC", "every canonical decomposition decomposed (%d code points, Hangul syllables included)" % len(decomposable),
               chunked(lambda c: unicodedata.normalize("NFD", c), decomposable), args.workdir, "\n")
    texts = norm_random_texts(3, 6000)
    for form in ("NFC", "NFD"):
        check_norm(ck, form, "random strings of tricky code points", texts, args.workdir)
    fixed = [("e\u0301", "\u00e9"), ("\u1100\u1161\u11a8", "\uac01"), ("\uac00\u11a7", "\uac00\u11a7"), ("\u212b", "\u00c5"),
             ("\u0958", "\u0915\u093c"), ("\u0344", "\u0308\u0301"), ("a\u0323\u0302", "\u1ead"), ("a\u0302\u0323", "\u1ead"),
             ("\u1e0b\u0323", "\u1e0d\u0307"), ("\u0b47\u0b3e", "\u0b4b"), ("\U00011099\U000110ba", "\U0001109a"),
             ("a\u1ac1\u0301", "a\u1ac1\u0301"), ("\U00011935\U00011930", "\U00011935\U00011930"), ("", "")]
    got, err = tool_norm("NFC", [a for a, _ in fixed], args.workdir)
    ck.check(got == [b for _, b in fixed], "NFC: fixed cases (e+acute, Hangul L V T, LV + T_BASE, ANGSTROM SIGN, U+0958, U+0344, "
             "a + dot below + circumflex in both orders, reordering, Oriya starter pair, Kaithi astral pair, post-9.0 marks not "
             "reordered, the Dives Akuru pair not composed)", err or ("" if got == [b for _, b in fixed] else
                                                                     str([(a, g) for (a, b), g in zip(fixed, got or []) if g != b])))
    got, err = tool_norm("NFC", [b"a\xcc", "ok"], args.workdir)
    ck.check(got == [None, "ok"], "tok_tool norm: a text that is not UTF-8 is reported, not normalized", err)


# ------------------------------------------------------------------------------------------------
def pb_read_varint(b, i):
    r, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return r, i


def pb_fields(b):
    """the top-level fields of a protobuf message: (field number, wire type, raw bytes, payload)"""
    i, out = 0, []
    while i < len(b):
        s = i
        key, i = pb_read_varint(b, i)
        wt, payload = key & 7, None
        if wt == 0:
            _, i = pb_read_varint(b, i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        elif wt == 2:
            n, i = pb_read_varint(b, i)
            payload = b[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wt)
        out.append((key >> 3, wt, b[s:i], payload))
    return out


def spm_with_flags(model, add_dummy_prefix, remove_extra_ws):
    """the ModelProto with normalizer_spec.add_dummy_prefix (3) / remove_extra_whitespaces (4) set"""
    flags = pb_field(3, 0, pb_varint(int(add_dummy_prefix))) + pb_field(4, 0, pb_varint(int(remove_extra_ws)))
    out, found = b"", False
    for f, wt, raw, payload in pb_fields(model):
        if f == 3 and wt == 2:
            out += pb_field(3, 2, b"".join(r for g, _, r, _ in pb_fields(payload) if g not in (3, 4)) + flags)
            found = True
        else:
            out += raw
    return out if found else out + pb_field(3, 2, pb_field(1, 2, b"identity") + flags)


def spm_flags_of(model):
    """(add_dummy_prefix, remove_extra_whitespaces) as stored (both default to true)"""
    adp = rew = True
    for f, wt, _, payload in pb_fields(model):
        if f == 3 and wt == 2:
            for g, gwt, raw, _ in pb_fields(payload):
                if g in (3, 4) and gwt == 0:
                    v = pb_read_varint(raw, 1)[0] != 0
                    if g == 3:
                        adp = v
                    else:
                        rew = v
    return adp, rew


def test_sentencepiece(args, ck):
    """src/tok/spm.c against the sentencepiece library (Debian python3-sentencepiece, installed by
    mpi_scripts/setup.sh): the committed fixtures (BPE and unigram models the library trained, the ids
    it gave), the same models with every combination of the normalizer flags add_dummy_prefix and
    remove_extra_whitespaces (the ModelProto rewritten here; the library reads the flags from it), and
    the shared stories260K tokenizer.model."""
    exp = json.load(open(os.path.join(DATA_DIR, "spm_expected.json"), encoding="utf-8"))
    texts = exp["texts"]
    try:
        import sentencepiece as spm
    except ImportError:
        ck.check(False, "sentencepiece: the reference library is installed",
                 "python3-sentencepiece is missing: run mpi_scripts/setup.sh (or apt-get install python3-sentencepiece)")
        return
    wt = open(os.path.join(args.shared, "data", "wikitext2_validation.joined.txt"), encoding="utf-8").read()
    extra = random_texts(3, 300) + [wt[:200000]]
    flag_texts = texts + random_texts(4, 150) + [wt[200000:230000]]

    def against_library(what, model_bytes, tx, want_diff_from=None):
        d = os.path.join(args.workdir, "spm_" + what.replace(" ", "_").replace("/", "_").replace("=", ""))
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.model")
        with open(path, "wb") as f:
            f.write(model_bytes)
        sp = spm.SentencePieceProcessor(model_file=path)
        lib = [sp.encode(t) for t in tx]
        got, err = tool_encode(d, tx, args.workdir)
        bad = [i for i in range(len(tx)) if got is None or got[i] != lib[i]]
        detail = err
        if bad and got is not None:
            i = bad[0]
            k = first_diff(got[i], lib[i])
            detail = "text %d %r: at %d C %s vs library %s" % (i, tx[i][:60], k, got[i][k:k + 4], lib[i][k:k + 4])
        ck.check(got is not None and not bad, "sentencepiece %s: ids = the library's (%d texts, %d tokens)" % (what, len(tx), sum(map(len, lib))), detail)
        return lib

    for name, e in sorted(exp["models"].items()):
        model = open(os.path.join(DATA_DIR, name + ".model"), "rb").read()
        d = os.path.join(args.workdir, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.model"), "wb") as f:
            f.write(model)
        got, err = tool_encode(d, texts, args.workdir)
        bad = [i for i in range(len(texts)) if got is None or got[i] != e["ids"][i]]
        ck.check(got is not None and not bad, "sentencepiece %s: ids = the committed ids of the library (%d texts)" % (name, len(texts)),
                 err or ("text %d %r" % (bad[0], texts[bad[0]][:60]) if bad else ""))
        sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
        ck.check([sp.encode(t) for t in texts] == e["ids"], "sentencepiece %s: the committed ids are the installed library's" % name)
        against_library(name, model, extra)
        # the normalizer flags: every combination, on texts with leading/trailing/repeated whitespace
        orig = spm_flags_of(model)
        base = [sp.encode(t) for t in flag_texts]
        for adp in (False, True):
            for rew in (False, True):
                if (adp, rew) == orig:
                    continue
                lib = against_library("%s add_dummy_prefix=%d remove_extra_whitespaces=%d" % (name, adp, rew),
                                      spm_with_flags(model, adp, rew), flag_texts)
                ck.check(lib != base, "sentencepiece %s add_dummy_prefix=%d remove_extra_whitespaces=%d: the flags change the library's ids" % (name, adp, rew))
    shared = open(os.path.join(args.shared, "models", "stories260K", "tokenizer.model"), "rb").read()
    against_library("stories260K (shared tokenizer.model)", shared, texts + extra)


# ------------------------------------------------------------------------------------------------
def pb_varint(v):
    out = b""
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out += bytes([c | 0x80])
        else:
            return out + bytes([c])


def pb_field(field, wt, payload):
    key = pb_varint(field << 3 | wt)
    if wt == 2:
        return key + pb_varint(len(payload)) + payload
    return key + payload


def pb_piece(piece, score=0.0, typ=None):
    b = pb_field(1, 2, piece.encode() if isinstance(piece, str) else piece) + pb_field(2, 5, struct.pack("<f", score))
    if typ is not None:
        b += pb_field(3, 0, pb_varint(typ))
    return pb_field(1, 2, b)


def spm_bytes(extra_trainer=b"", pieces=None):
    if pieces is None:
        pieces = pb_piece("<unk>", 0, 2) + pb_piece("<s>", 0, 3) + pb_piece("</s>", 0, 3) + pb_piece("\u2581a", -1) + pb_piece("a", -2)
    return pieces + pb_field(2, 2, pb_field(3, 0, pb_varint(2)) + extra_trainer) + pb_field(3, 2, pb_field(1, 2, b"identity"))


def hf_json(**over):
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None, "post_processor": None,
          "model": {"type": "BPE", "unk_token": None, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    for k, v in over.items():
        if k.startswith("model_"):
            tj["model"][k[6:]] = v
        else:
            tj[k] = v
    return json.dumps(tj).encode()


def bad_cases():
    good = spm_bytes()
    llama3 = {"type": "Split", "pattern": {"Regex": R.LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False}
    return [
        # (name, file name, bytes, substrings expected in the message)
        ("spm_empty", "tokenizer.model", b"", ["tokenizer.model", "empty file"]),
        ("spm_truncated", "tokenizer.model", good[:-3], ["tokenizer.model", "exceeds"]),
        ("spm_garbage", "tokenizer.model", b"\xff" * 20, ["tokenizer.model", "ModelProto"]),
        ("spm_group_wiretype", "tokenizer.model", pb_field(1, 3, b"") + good, ["wire type 3"]),
        ("spm_pieces_varint", "tokenizer.model", pb_field(1, 0, pb_varint(5)) + good, ["ModelProto.pieces", "wire type 0"]),
        ("spm_no_pieces", "tokenizer.model", pb_field(2, 2, pb_field(3, 0, pb_varint(2))), ["pieces: none"]),
        ("spm_empty_piece", "tokenizer.model", spm_bytes(pieces=pb_piece("<unk>", 0, 2) + pb_piece("", -1)), ["pieces[1].piece", "empty"]),
        ("spm_bad_type", "tokenizer.model", spm_bytes(pieces=pb_piece("<unk>", 0, 2) + pb_piece("x", -1, 9)), ["pieces[1].type", "piece type"]),
        ("spm_duplicate", "tokenizer.model", spm_bytes(pieces=pb_piece("<unk>", 0, 2) + pb_piece("x", -1) + pb_piece("x", -2)), ["pieces[2].piece", "already defined"]),
        ("spm_no_unk", "tokenizer.model", spm_bytes(pieces=pb_piece("x", -1) + pb_piece("y", -2)), ["no piece of type UNKNOWN"]),
        ("spm_two_unk", "tokenizer.model", spm_bytes(pieces=pb_piece("<unk>", 0, 2) + pb_piece("<u2>", 0, 2)), ["pieces[1]", "second unknown"]),
        ("spm_byte_without_fallback", "tokenizer.model", spm_bytes(pieces=pb_piece("<unk>", 0, 2) + pb_piece("<0x41>", 0, 6)), ["byte_fallback is false"]),
        ("spm_bad_byte_piece", "tokenizer.model", spm_bytes(pb_field(35, 0, pb_varint(1)), pb_piece("<unk>", 0, 2) + pb_piece("<0xZZ>", 0, 6)), ["pieces[1]", "not <0xXX>"]),
        ("spm_word_model", "tokenizer.model", pb_piece("<unk>", 0, 2) + pb_field(2, 2, pb_field(3, 0, pb_varint(3))), ["trainer_spec.model_type", "not supported"]),
        ("spm_nan_score", "tokenizer.model", spm_bytes(pieces=pb_piece("<unk>", 0, 2) + pb_piece("x", float("nan"))), ["pieces[1].score"]),
        ("spm_charsmap_size", "tokenizer.model", pb_piece("<unk>", 0, 2) + pb_field(3, 2, pb_field(2, 2, struct.pack("<I", 4000) + b"\0" * 8)), ["precompiled_charsmap", "does not fit"]),
        ("spm_overlong_varint", "tokenizer.model", b"\x08" + b"\xff" * 11, ["ModelProto", "varint"]),
        ("spm_flag_wiretype", "tokenizer.model", spm_bytes() + pb_field(3, 2, pb_field(3, 2, b"\x01")),
         ["normalizer_spec.add_dummy_prefix", "wire type 2"]),
        ("json_not_json", "tokenizer.json", b"{\"model\": ", ["tokenizer.json", "not valid JSON"]),
        ("json_array", "tokenizer.json", b"[]", ["tokenizer.json", "expected a JSON object"]),
        ("json_no_model", "tokenizer.json", b"{\"normalizer\": null}", ["tokenizer.json", "model: missing"]),
        ("json_wordpiece", "tokenizer.json", hf_json(model_type="WordPiece"), ["model.type", "WordPiece", "not supported"]),
        ("json_vocab_array", "tokenizer.json", hf_json(model_vocab=[1, 2]), ["model.vocab", "expected an object"]),
        ("json_vocab_bad_id", "tokenizer.json", hf_json(model_vocab={"a": 0, "b": -3, "ab": 2}), ["model.vocab['b']", "integer id"]),
        ("json_vocab_float_id", "tokenizer.json", hf_json(model_vocab={"a": 0, "b": 1.5, "ab": 2}), ["model.vocab['b']"]),
        ("json_merges_not_array", "tokenizer.json", hf_json(model_merges="a b"), ["model.merges", "expected an array"]),
        ("json_merge_three", "tokenizer.json", hf_json(model_merges=["a b c"]), ["model.merges[0]", "two tokens"]),
        ("json_merge_unknown", "tokenizer.json", hf_json(model_merges=["a x"]), ["model.merges[0]", "'x' is not in model.vocab"]),
        ("json_merge_result_unknown", "tokenizer.json", hf_json(model_vocab={"a": 0, "b": 1, "c": 2}), ["model.merges[0]", "merged token 'ab'"]),
        ("json_merge_number", "tokenizer.json", hf_json(model_merges=[7]), ["model.merges[0]", "a number"]),
        ("json_unk_missing", "tokenizer.json", hf_json(model_unk_token="<unk>"), ["model.unk_token", "'<unk>' is not in model.vocab"]),
        ("json_dropout", "tokenizer.json", hf_json(model_dropout=0.1), ["model.dropout"]),
        ("json_suffix", "tokenizer.json", hf_json(model_end_of_word_suffix="</w>"), ["model.end_of_word_suffix"]),
        ("json_nfkc", "tokenizer.json", hf_json(normalizer={"type": "NFKC"}), ["normalizer.type", "NFKC"]),
        ("json_seq_nfkd", "tokenizer.json", hf_json(normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "NFKD"}]}),
         ["normalizer.normalizers[1].type", "NFKD", "supported: Sequence, Prepend, Replace, NFC, NFD"]),
        ("json_replace_regex", "tokenizer.json", hf_json(normalizer={"type": "Replace", "pattern": {"Regex": " +"}, "content": " "}), ["normalizer.pattern", "Regex"]),
        ("json_pretok_bert", "tokenizer.json", hf_json(pre_tokenizer={"type": "BertPreTokenizer"}), ["pre_tokenizer.type", "BertPreTokenizer"]),
        ("json_regex_unknown", "tokenizer.json", hf_json(pre_tokenizer={"type": "Split", "pattern": {"Regex": "\\p{Lu}+|\\s+"}, "behavior": "Isolated", "invert": False}),
         ["pre_tokenizer.pattern.Regex", "unsupported regex alternative '\\p{Lu}+'"]),
        ("json_regex_in_seq", "tokenizer.json", hf_json(pre_tokenizer={"type": "Sequence", "pretokenizers": [llama3, dict(llama3, pattern={"Regex": "(a|"})]}),
         ["pre_tokenizer.pretokenizers[1].pattern.Regex"]),
        ("json_split_behavior", "tokenizer.json", hf_json(pre_tokenizer=dict(llama3, behavior="Sideways")), ["pre_tokenizer.behavior", "Sideways"]),
        ("json_metaspace_rep", "tokenizer.json", hf_json(pre_tokenizer={"type": "Metaspace", "replacement": "ab"}), ["pre_tokenizer.replacement", "one-character"]),
        ("json_bytelevel_bool", "tokenizer.json", hf_json(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": "yes"}), ["pre_tokenizer.add_prefix_space", "boolean"]),
        ("json_added_not_array", "tokenizer.json", hf_json(added_tokens={"a": 1}), ["added_tokens", "expected an array"]),
        ("json_added_no_content", "tokenizer.json", hf_json(added_tokens=[{"id": 5, "special": True}]), ["added_tokens[0].content"]),
        ("json_added_bad_id", "tokenizer.json", hf_json(added_tokens=[{"id": "5", "content": "<x>"}]), ["added_tokens[0].id"]),
        ("json_invalid_utf8", "tokenizer.json", b"{\"model\": \"\xc3\x28\"}", ["tokenizer.json", "invalid UTF-8"]),
    ]


def test_bad(args, ck):
    """every malformed file through the library in one process (tok_tool load: the message FAIL
    recorded), then a few through `cfsp-mpi tokenize` (exit 1, exactly that one line on stderr, no
    output or temporary file)"""
    txt = os.path.join(args.workdir, "small.txt")
    with open(txt, "w", encoding="utf-8") as f:
        f.write("a b ab\n")
    cases = bad_cases()
    dirs = []
    for name, fname, data, want in cases:
        d = os.path.join(args.workdir, "bad", name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)
        dirs.append(d)
    rc, out, err = run([TOK_TOOL, "load"] + dirs)
    res = [json.loads(line) for line in out.splitlines()] if rc == 0 else []
    ck.check(rc == 0 and len(res) == len(cases), "tok_tool load: one answer per malformed file", err.strip())
    msgs = {}
    for k, (name, fname, data, want) in enumerate(cases):
        msg = res[k].get("error", "") if k < len(res) else ""
        msgs[name] = msg
        ok = (msg.startswith("cfsp-mpi: error: ") and os.path.join(dirs[k], fname) in msg and "\n" not in msg
              and all(w in msg for w in want))
        ck.check(ok, "malformed %s: one-line error naming the file and field" % name,
                 "" if ok else (msg or json.dumps(res[k]) if k < len(res) else "no answer"))
    ck.note("example: " + msgs.get("json_merge_unknown", ""))
    for name in ("spm_truncated", "spm_flag_wiretype", "json_merge_unknown", "json_regex_in_seq"):
        d = os.path.join(args.workdir, "bad", name)
        o = os.path.join(d, "out.u32.bin")
        rc, _, err = run([args.bin, "tokenize", "--model", d, txt, o])
        lines = err.strip().splitlines()
        ck.check(rc == 1 and lines == [msgs[name]] and not os.path.exists(o) and not os.path.exists(o + ".tmp"),
                 "malformed %s through cfsp-mpi tokenize: exit 1, that one line, no output" % name, err.strip()[:300])
    d = os.path.join(args.workdir, "bad", "no_tokenizer")
    os.makedirs(d, exist_ok=True)
    rc, _, err = run([args.bin, "tokenize", "--model", d, txt, os.path.join(d, "o.bin")])
    ck.check(rc == 1 and "no tokenizer.json or tokenizer.model" in err, "a model directory without a tokenizer: clear error", err.strip())


# ------------------------------------------------------------------------------------------------
def same_run(ja, jb):
    """dense perplexity, calibration windows, importances and every pruned model's channels and
    perplexity equal (bitwise: the same ids give the same floating-point sums)"""
    pr = lambda j: [(p.get("method"), p.get("ratio"), p.get("keep_counts"), p.get("nll_sum"), p.get("ppl")) for p in j["pruned"]]
    return (ja["dense"]["ppl"] == jb["dense"]["ppl"] and ja["dense"]["nll_sum"] == jb["dense"]["nll_sum"]
            and ja["dense"]["ntokens"] == jb["dense"]["ntokens"] and ja["calibration"]["offsets"] == jb["calibration"]["offsets"]
            and ja["importance"] == jb["importance"] and len(ja["pruned"]) > 0 and pr(ja) == pr(jb))


def test_run(args, ck):
    """--calib-text/--eval-text (tokenized on rank 0 inside the run) against token-file runs:
    tinystories656K (tokenizer.json) with the shared token files, stories260K (sentencepiece) with
    the files `cfsp-mpi tokenize` writes (equal to the shared ones, see test_shared)."""
    dat = os.path.join(args.shared, "data")
    calib, evalt = "tinystories_val_head", "wikitext2_test.joined"
    for model in ("tinystories656K", "stories260K"):
        mdir = os.path.join(args.shared, "models", model)
        common_opts = ["--model", mdir, "--nsamples", "4", "--seqlen", "128", "--eval-windows", "8", "--ratios", "0.3",
                       "--save-models", "0", "--force"]
        if model == "tinystories656K":
            toks = [os.path.join(dat, "tokens", model, n + ".u32.bin") for n in (calib, evalt)]
            how, rt = "the shared token files", 0
        else:
            toks = [os.path.join(args.workdir, "run_%s.%s.u32.bin" % (model, n)) for n in (calib, evalt)]
            how = "the files of cfsp-mpi tokenize"
            rt = 0
            for n, t in zip((calib, evalt), toks):
                r, _, e = run([args.bin, "tokenize", "--model", mdir, os.path.join(dat, n + ".txt"), t, "--force"])
                rt |= r
        a = os.path.join(args.workdir, "run_text_" + model)
        b = os.path.join(args.workdir, "run_tokens_" + model)
        ra, _, ea = run(["mpiexec", "-n", "2", args.bin] + common_opts + ["--output-dir", a, "--calib-text", os.path.join(dat, calib + ".txt"),
                                                                       "--eval-text", os.path.join(dat, evalt + ".txt")])
        rb, _, eb = run(["mpiexec", "-n", "2", args.bin] + common_opts + ["--output-dir", b, "--calib-tokens", toks[0], "--eval-tokens", toks[1]])
        ok = ra == 0 and rb == 0 and rt == 0
        detail = (ea + eb).strip()[-400:]
        if ok:
            ja = json.load(open(os.path.join(a, "results.json")))
            jb = json.load(open(os.path.join(b, "results.json")))
            ok = same_run(ja, jb)
            detail = "dense ppl %.6f vs %.6f, pruned ppl %s vs %s" % (ja["dense"]["ppl"], jb["dense"]["ppl"],
                                                                     [p["ppl"] for p in ja["pruned"]], [p["ppl"] for p in jb["pruned"]])
        ck.check(ok, "run -n 2 %s with --calib-text/--eval-text = the run with %s (ppl, calibration, importances, pruned ppl)" % (model, how), detail)
    tok = os.path.join(dat, "tokens", "tinystories656K")
    rc, _, err = run([args.bin, "--model", os.path.join(args.shared, "models", "tinystories656K"), "--calib-text", os.path.join(dat, calib + ".txt"),
                      "--calib-tokens", os.path.join(tok, calib + ".u32.bin")])
    ck.check(rc == 1 and "give one of them" in err, "run: --calib-text with --calib-tokens is refused", err.strip())


def main():
    args = common.parse_args("tokenizer tests")
    global TOK_TOOL
    if TOK_TOOL is None:
        TOK_TOOL = os.path.join(os.path.dirname(args.bin), "tests", "tok_tool")
    ck = common.Checker("test_tokenizer")
    only = os.environ.get("TOK_TEST_ONLY", "")
    for name, fn in (("shared", test_shared), ("split", test_split), ("generated", test_generated),
                     ("sentencepiece", test_sentencepiece), ("bad", test_bad), ("run", test_run), ("qwen", test_qwen),
                     ("nfc", test_nfc)):
        if only and name not in only.split(","):
            continue
        print("== %s" % name, flush=True)
        fn(args, ck)
    ck.finish()


if __name__ == "__main__":
    main()
