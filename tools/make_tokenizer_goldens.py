#!/usr/bin/env python3
"""Builds the test vocabularies under tests/data/tokenizers/ and their golden token ids.

Dev-time only (needs PyPI: tokenizers, transformers, sentencepiece, protobuf, gguf); the C++
tests read the committed outputs. Run from the repository root:

    python3 tools/make_tokenizer_goldens.py [--shared /work/shared]

Outputs, per vocabulary <name> in tests/data/tokenizers/<name>/:
  tokenizer.json   the Hugging Face fast tokenizer lowbit loads, or instead
  variant.json     {"base": other vocabulary, "replace": {top-level key: value}}: the base's
                   tokenizer.json with those keys replaced (same model, other pipeline)
  golden.json      {"vocabulary": name, "cases": [{"text", "ids_special", "ids_plain",
                    "decoded_special", "decoded_plain"}]} where ids_* come from
                    tokenizers' encode(text, add_special_tokens=True/False).ids and decoded_* is
                    decode(ids_*, skip_special_tokens=True) (HF's default in transformers).
  LICENSE          the vocabulary's license where one ships with it

Vocabularies:
  llama2            Meta's tokenizer.model converted by transformers' LlamaConverter in legacy
                    mode (normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no
                    pre-tokenizer) plus the BOS TemplateProcessing post-processor and <unk>/<s>/</s>
                    added tokens, as meta-llama/Llama-2-7b-hf ships it.
  llama2-metaspace  the same vocabulary in non-legacy mode: no normalizer, Metaspace
                    pre-tokenizer (prepend_scheme "first", split false).
  falcon            rebuilt from ggml-vocab-falcon.gguf to behave like tiiuae/falcon-7b's
                    tokenizer.json (see build_falcon for what was checked).
  llama3            copied verbatim (with tokenizer_config.json).
  llama2-added-tokens  llama2 plus added tokens using lstrip/rstrip/single_word/normalized.
  llama2-metaspace-split  Metaspace(always, split) pre-tokenizer and Metaspace decoder.
  falcon-*          falcon's model under other pre-tokenizers/post-processors (variants).
  stories260K       copied from models/stories260K/tokenizer.json when that file exists.
"""
import argparse
import json
import os
import shutil
import sys

CORPUS = [
    "",
    " ",
    "  ",
    "   ",
    "Hello",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  Hello   world  ",
    "Hello, world! How are you?",
    "\t",
    "\n",
    "\n\n",
    "a\tb\tc",
    "line one\nline two\n\nline four",
    "windows\r\nline\r\nendings\r\n",
    " \n \t \r\n  ",
    "trailing newline\n",
    "   leading spaces",
    "trailing spaces   ",
    "0",
    "12",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159265358979 and 2,718,281,828",
    "Version 1.2.3-rc4 released on 2024-01-15 at 12:30:45",
    "$1,000,000.00 costs 10% more (approx. 1e6)",
    "!!!???...,,,;;;:::",
    "...",
    "Wait--what?!?! No way...",
    "\"quoted\" and 'single' and `backtick`",
    "({[<>]})",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&r=2#frag",
    "café naïve résumé façade",
    "cafe\u0301 e\u0301\u0302\u0303 combining",
    "Ångström Øresund Ærø",
    "Straße groß ẞ",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "こんにちは世界",
    "你好，世界！今天天气很好。",
    "안녕하세요 세계",
    "ไทย ภาษา",
    "emoji 😀😃😄 here",
    "👍🏽 thumbs with skin tone",
    "family 👨\u200d👩\u200d👧\u200d👦 zwj",
    "flag 🇫🇷🇯🇵",
    "❤️ heart with variation selector",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters 𝟙𝟚𝟛",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "int main() { printf(\"%d\\n\", x->y[0]); return 0; }",
    "for (int i = 0; i < 10; ++i) {\n\tsum += a[i] * b[i];\n}",
    "<html><body class=\"x\">&amp;&nbsp;</body></html>",
    "I'm you're we've they'll she'd it's DON'T I'M",
    "<s>",
    "</s>",
    "<unk>",
    "text <s> inside </s> text",
    "<s><s></s>",
    "<|begin_of_text|>",
    "Hello <|begin_of_text|> world<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|endoftext|>",
    "before<|endoftext|>after",
    ">>TITLE<<",
    ">>QUESTION<< What is 2+2? >>ANSWER<< 4",
    "<0x41> literal byte piece text",
    "▁ literal metaspace ▁▁ chars",
    "Ġ literal gpt2 space Ċ",
    "a" * 300,
    "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "supercalifragilisticexpialidocious" * 8,
    "mixed English, русский, 中文, العربية, and हिन्दी in one line",
    "Tokyo東京2024年Olympicsオリンピック",
    "x\u00a0y\u2003z\u3000w",
    "zero\u200bwidth\u200cspace\u200djoiner",
    "control \u0001\u0002\u007f chars",
    "\u2028line sep\u2029para sep",
    "private use \ue000 and noncharacter \ufffd",
    "   \n\n\n   ",
    "a  b   c    d     e",
    "1 22 333 4444 55555 666666",
    "x=1;y=22;z=333",
    "The quick brown fox jumps over the lazy dog. " * 4,
    "next\u0085line and a\u0085\u0085 b",
    "Arabic-Indic ١٢٣٤ fullwidth １２３ roman Ⅻ superscript ²³ half ½",
    "BOM\ufeffinside and soft\u00adhyphen",
    "<mask> hello world [SEP] xyz",
    "a <mask>b  <mask>  c",
    "hello hellohello say hello.",
    "[SEP][SEP] x [SEP]\n",
    "xyzxyz xyz",
]

# Random mixtures of the pieces that stress pre-tokenizers, merges and added-token matching;
# fixed seed so the committed corpus is reproducible.
FUZZ_PIECES = [
    " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\u0085", "\u00a0", "\u3000", "\u2009",
    "0", "7", "42", "123", "2024", "9999999", "3.14", "١٢", "²", "½", "Ⅻ",
    "a", "Z", "I", "hello", "World", "the", "ing", "tion", "ÿ", "é", "e\u0301", "ß", "Ω", "я",
    "中", "文字", "日本語", "한", "ไ", "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "\u200b", "\ufeff",
    "!", "?", "...", ",", ".", "'s", "'S", "'ll", "'", "\"", "--", "->", "::", "{", "}", "()", "#",
    "@", "`", "~", "_", "__init__", "$", "%", "&&", "||", "/*", "*/", "\\", "<", ">", "|",
    "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|endoftext|>", ">>TITLE<<",
    "<mask>", "[SEP]", "xyz", "<0x41>", "▁", "▁▁", "Ġ", "Ċ",
]


def fuzz_corpus(count=300, seed=20240601):
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(1, 24)
        out.append("".join(rng.choice(FUZZ_PIECES) for _ in range(n)))
    return out


CORPUS += fuzz_corpus()


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def build_llama2(shared, out_dir):
    import sentencepiece as spm
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import LlamaConverter, generate_merges

    model_path = os.path.join(shared, "tokenizers/llama2/tokenizer.model")

    class SlowLlamaStandIn:
        """What LlamaConverter reads from a slow LlamaTokenizer (transformers 5 has none)."""

        def __init__(self, legacy):
            self.vocab_file = model_path
            self.legacy = legacy
            self.add_prefix_space = True
            self.sp = spm.SentencePieceProcessor(model_file=model_path)

        def convert_ids_to_tokens(self, i):
            return self.sp.id_to_piece(i)

    class ScoreOrderedMerges:
        """transformers 5.24's SpmConverter passes the piece scores where its extractor expects
        a model type; this does what transformers 4 did: merges ranked by the merged piece's
        score (higher first), the SentencePiece BPE order."""

        def __init__(self, vocab_file):
            self.sp = spm.SentencePieceProcessor(model_file=vocab_file)

        def extract(self, vocab_scores):
            vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
            return vocab, generate_merges(vocab, vocab_scores)

    class Converter(LlamaConverter):
        SpmExtractor = ScoreOrderedMerges

    for name, legacy in (("llama2", True), ("llama2-metaspace", False)):
        tok = Converter(SlowLlamaStandIn(legacy)).converted()
        # As meta-llama/Llama-2-7b-hf ships it: <unk>, <s>, </s> are special added tokens and
        # the post-processor prepends BOS.
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t in ("<unk>", "<s>", "</s>")])
        tok.post_processor = processors.TemplateProcessing(
            single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
            special_tokens=[("<s>", 1)])
        if name == "llama2":
            d = os.path.join(out_dir, name)
            os.makedirs(d, exist_ok=True)
            tok.save(os.path.join(d, "tokenizer.json"))
            with open(os.path.join(d, "LICENSE"), "w") as f:
                f.write(LLAMA2_LICENSE_NOTE)
        else:
            write_variant(out_dir, name, "llama2", tok)
        # Check the conversion against SentencePiece itself on the corpus (without specials).
        sp = spm.SentencePieceProcessor(model_file=model_path)
        mismatches = [t for t in CORPUS if "<" not in t and sp.encode(t) != tok.encode(t, add_special_tokens=False).ids]
        print(f"{name}: {len(mismatches)} corpus strings differ from sentencepiece "
              f"(expected only where HF and SPM conventions differ)", file=sys.stderr)


def build_falcon(shared, out_dir):
    """Rebuilds tiiuae/falcon-7b's tokenizer.json from the GGUF vocabulary.

    Verified against the GGUF: 65,024 tokens, 64,784 merges, token types (ids 0..11 are
    control tokens >>TITLE<< .. >>MIDDLE<<, <|endoftext|>; all others normal), BOS = EOS = 11,
    tokenizer.ggml.pre = "falcon". The official file has a null normalizer, the pre-tokenizer
    Sequence[Punctuation(Contiguous), ByteLevel(add_prefix_space=false, use_regex=true),
    Digits(individual_digits=false), Split(Regex "[0-9][0-9][0-9]", Isolated)], no
    post-processor, a ByteLevel decoder, a plain BPE model (no unk, no byte fallback) and the 12
    control tokens as special, non-normalized added tokens.
    """
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, Regex

    reader = GGUFReader(os.path.join(shared, "tokenizers/falcon/ggml-vocab-falcon.gguf"))

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in strings("tokenizer.ggml.merges")]
    type_field = reader.fields["tokenizer.ggml.token_type"]
    token_types = [int(type_field.parts[i][0]) for i in type_field.data]
    assert len(tokens) == 65024 and len(merges) == 64784, (len(tokens), len(merges))
    control_ids = [i for i, t in enumerate(token_types) if t == 3]
    assert control_ids == list(range(12)), control_ids
    assert all(t == 1 for t in token_types[12:])
    assert tokens[11] == "<|endoftext|>"

    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex("[0-9][0-9][0-9]"), behavior="isolated", invert=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True) for i in control_ids])
    d = os.path.join(out_dir, "falcon")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    shutil.copyfile(os.path.join(shared, "tokenizers/falcon/LICENSE"), os.path.join(d, "LICENSE"))


def build_llama2_added_tokens(out_dir):
    """Llama-2 (legacy normalizer) plus added tokens with every matching flag HF has:
    lstrip/rstrip special "<mask>", single_word normalized "hello", rstrip raw "[SEP]",
    normalized "xyz" (matched after the Prepend/Replace normalizer ran)."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(os.path.join(out_dir, "llama2", "tokenizer.json"))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False, special=True)])
    tok.add_tokens([
        AddedToken("hello", single_word=True, normalized=True, special=False),
        AddedToken("[SEP]", rstrip=True, normalized=False, special=False),
        AddedToken("xyz", normalized=True, special=False),
    ])
    write_variant(out_dir, "llama2-added-tokens", "llama2", tok)


def build_llama2_metaspace_split(out_dir):
    """Llama-2 with Metaspace(prepend_scheme "always", split true) and a Metaspace decoder."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    tok = Tokenizer.from_file(os.path.join(out_dir, "llama2", "tokenizer.json"))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    write_variant(out_dir, "llama2-metaspace-split", "llama2", tok)


def build_falcon_variants(out_dir):
    """Falcon's vocabulary under other pipelines, to cover what the real files do not use:
    Split behaviours (Removed, MergedWithPrevious/Next, Contiguous, invert), String patterns,
    ByteLevel add_prefix_space and use_regex=false, a Regex Replace normalizer, Whitespace,
    WhitespaceSplit, individual Digits, and post-processors with a suffix and a Sequence."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors

    base = os.path.join(out_dir, "falcon", "tokenizer.json")

    tok = Tokenizer.from_file(base)
    tok.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("-", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex("[0-9]+"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex("\\?"), behavior="removed"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single=">>TITLE<< $A <|endoftext|>", special_tokens=[(">>TITLE<<", 0), ("<|endoftext|>", 11)])
    write_variant(out_dir, "falcon-split-behaviors", "falcon", tok)

    tok = Tokenizer.from_file(base)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex("[aeiou]"), behavior="contiguous", invert=True),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=">>QUESTION<< $A", special_tokens=[(">>QUESTION<<", 6)]),
    ])
    write_variant(out_dir, "falcon-invert", "falcon", tok)

    tok = Tokenizer.from_file(base)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Whitespace(),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    write_variant(out_dir, "falcon-whitespace", "falcon", tok)


def write_variant(out_dir, name, base, tok):
    """Stores a vocabulary that differs from `base` only outside "model" as variant.json,
    {"base": base, "replace": {top-level key: value}}, instead of another multi-MB
    tokenizer.json; the test (and write_golden) rebuild the full file from it."""
    with open(os.path.join(out_dir, base, "tokenizer.json"), encoding="utf-8") as f:
        base_json = json.load(f)
    variant_json = json.loads(tok.to_str())
    assert variant_json["model"] == base_json["model"], f"{name}: model differs from {base}"
    replace = {k: v for k, v in variant_json.items() if k != "model" and base_json.get(k) != v}
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    stale = os.path.join(d, "tokenizer.json")
    if os.path.exists(stale):
        os.remove(stale)
    write_json(os.path.join(d, "variant.json"), {"base": base, "replace": replace})
    shutil.copyfile(os.path.join(out_dir, base, "LICENSE"), os.path.join(d, "LICENSE"))


def tokenizer_json_text(d):
    """The tokenizer.json of directory `d`, rebuilt from variant.json where there is one."""
    variant_path = os.path.join(d, "variant.json")
    if not os.path.exists(variant_path):
        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            return f.read()
    with open(variant_path, encoding="utf-8") as f:
        variant = json.load(f)
    with open(os.path.join(os.path.dirname(d), variant["base"], "tokenizer.json"), encoding="utf-8") as f:
        merged = json.load(f)
    merged.update(variant["replace"])
    return json.dumps(merged, ensure_ascii=False)


def copy_llama3(shared, out_dir):
    d = os.path.join(out_dir, "llama3")
    os.makedirs(d, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "LICENSE"):
        shutil.copyfile(os.path.join(shared, "tokenizers/llama3", f), os.path.join(d, f))


LLAMA2_LICENSE_NOTE = """The Llama 2 tokenizer vocabulary (tokenizer.json here is converted from Meta's
tokenizer.model) is distributed under the Llama 2 Community License Agreement,
Copyright (c) Meta Platforms, Inc. All Rights Reserved.
https://ai.meta.com/llama/license/
"""


def write_golden(name, d):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json_text(d))
    cases = []
    for text in CORPUS:
        with_special = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids_special": with_special,
            "ids_plain": plain,
            "decoded_special": tok.decode(with_special, skip_special_tokens=True),
            "decoded_plain": tok.decode(plain, skip_special_tokens=True),
            "decoded_special_kept": tok.decode(with_special, skip_special_tokens=False),
        })
    write_json(os.path.join(d, "golden.json"), {"vocabulary": name, "cases": cases})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="/work/shared")
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = parser.parse_args()
    out_dir = os.path.join(args.root, "tests/data/tokenizers")
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "corpus.json"), CORPUS)

    build_llama2(args.shared, out_dir)
    build_llama2_added_tokens(out_dir)
    build_llama2_metaspace_split(out_dir)
    build_falcon(args.shared, out_dir)
    build_falcon_variants(out_dir)
    copy_llama3(args.shared, out_dir)

    names = ["llama2", "llama2-metaspace", "llama2-added-tokens", "llama2-metaspace-split", "falcon",
             "falcon-split-behaviors", "falcon-invert", "falcon-whitespace", "llama3"]
    stories = os.path.join(args.root, "models/stories260K/tokenizer.json")
    if os.path.exists(stories):
        d = os.path.join(out_dir, "stories260K")
        os.makedirs(d, exist_ok=True)
        shutil.copyfile(stories, os.path.join(d, "tokenizer.json"))
        lic = os.path.join(args.root, "models/stories260K/LICENSE")
        if os.path.exists(lic):
            shutil.copyfile(lic, os.path.join(d, "LICENSE"))
        names.append("stories260K")
    else:
        print("models/stories260K/tokenizer.json not found; re-run once it exists", file=sys.stderr)

    for name in names:
        write_golden(name, os.path.join(out_dir, name))
        print(f"wrote {name}/golden.json ({len(CORPUS)} strings)", file=sys.stderr)


if __name__ == "__main__":
    main()
