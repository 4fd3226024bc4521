"""tok_texts.py — the tokenizer test texts: Unicode (accents, combining marks, Greek, Cyrillic, CJK,
Hangul, Arabic, emoji with modifiers, titlecase, long s, Kelvin sign, NBSP and other White_Space),
digits of several kinds (runs, Arabic-Indic, fractions, Roman numerals), whitespace runs (spaces,
tabs, CR LF, blank lines, leading / trailing), contractions in every case, punctuation runs, special
tokens inside text. Used by tests/py/test_tokenizer.py and tests/data/tok/make_spm_fixtures.py."""

LINES = [
    "Hello world! Don't stop: it's 12345 o'clock, we'RE here & I'LL go; they'd've said 'no'.",
    "  multiple   spaces\tand\ttabs\t\t here",
    "\n\n\nnewlines\r\nCRLF \n \n  trailing  \n",
    "Ünïcödé façade naïve — Ελληνικά 日本語のテキスト 中文 한국어 Привет мир\u00a0NBSP\u3000ideographic",
    "combining: e\u0301 a\u0308 n\u0303  Zalgo: Z\u0351\u0353a\u0358l\u035cg\u0361o",
    "digits ٣٤٥ ½ ¾ ⅫⅣ 2024-01-15 3.14159 1,000,000 0x1F 007 1234567890123",
    "emoji 😀👍🏽 mixed😀text 👩\u200d💻 flags 🇩🇪🇫🇷",
    "it'ſ long s, KELVIN \u212a, ſtraße, it'ſtraße, it'ſtraße we'ſ, ǅ titlecase ǈ, Kelvin'\u212aX",
    "\u2028line sep\u2029para sep \x85nel \u2000\u2001\u200a spaces \u202f\u205f end",
    "'s 'S 'T 'Re 'rE 'VE 'M 'Ll 'D 'x '' ''' 's's",
    "punct!!! ??? ... --- ((( ))) [[[ ]]] {{{ }}} @@ ## $$ %% ^^ && ** ++ == || \\\\ // ;; :: ,, <> ~~",
    " leading space",
    "trailing spaces   ",
    "\t\ttab-led",
    "a\n\nb\n\n\nc\r\rd\r\n\r\ne",
    "x  \n  y \t\n\t z",
    "<|begin_of_text|>special<|end_of_text|> tokens <|begin_of_text|><|begin_of_text|> <|end_of_text|>",
    "mid<|begin_of_text|>word and <s>sp</s> and <unk> and <sep> and @@ here",
    "ﬁ ﬂ ①② ＡＢａｂ … ABC ABCD xABC",
    "Hello",
    " ",
    "   ",
    "\n",
    "a",
    "Arabic: مرحبا بالعالم ١٢٣ Hebrew: שלום Thai: สวัสดี Devanagari: नमस्ते १२३",
    "math ∑∫∂ ≤≥≠ ∞ √2 π×10³ x² H₂O",
    "URL https://example.com/a?b=c&d=e#f user@host.org C:\\path\\to\\file.txt",
    "code: def f(x):\n    return x**2  # comment\n\tif a==b: pass\n",
]


def test_texts():
    texts = list(LINES)
    texts.append("\n".join(LINES))            # everything in one text
    texts.append("".join(LINES))
    texts.append("")                          # empty
    return texts
