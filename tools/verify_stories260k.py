#!/usr/bin/env python3
"""Proves models/stories260K (made by `lowbit convert-llama2c`) is a faithful conversion.

1. transformers' LlamaForCausalLM, greedy from BOS exactly as llama2.c's `run -t 0.0` samples
   (256 steps, stopping early on BOS), must print the text in reference-output.md. A wrong q/k
   permutation, norm or tying would change the text within a few tokens.
2. tokenizer.json must load in `tokenizers` and in transformers' AutoTokenizer, and encode
   sentences to the same ids as llama2.c's own encoder (run.c `encode`, re-implemented below
   on tok512.bin), and decode them back.

Usage: python tools/verify_stories260k.py [--model models/stories260K]
         [--llama2c-tokenizer /path/to/tok512.bin]   (default: tok512.bin next to the model if
                                                      present, else ../shared/models/stories260K)
Installs torch, transformers and tokenizers from PyPI when missing. Exit code 0 = verified.
"""
import argparse
import importlib.util
import os
import re
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOS, EOS = 1, 2
LLAMA2C_STEPS = 256  # run.c's default -n


def ensure_packages():
    missing = [p for p in ("torch", "transformers", "tokenizers") if importlib.util.find_spec(p) is None]
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


def reference_text(markdown_path):
    """The greedy (-t 0.0) sample of reference-output.md: the lines after the ./run command."""
    lines = open(markdown_path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("$ ./run") and re.search(r"-t 0\.0(\s|$)", line) and "-p" not in line:
            end = lines.index("```", i + 1)
            return "\n".join(lines[i + 1:end])
    raise SystemExit(f"{markdown_path}: no greedy `./run ... -t 0.0` sample found")


class Llama2cTokenizer:
    """llama2.c's tokenizer.bin and run.c's encode/decode, transcribed to Python."""

    def __init__(self, path, vocab_size):
        data = open(path, "rb").read()
        offset = 4  # max_token_length
        self.pieces, self.scores = [], []
        for _ in range(vocab_size):
            score, length = struct.unpack_from("<fi", data, offset)
            offset += 8
            self.pieces.append(data[offset:offset + length])
            self.scores.append(score)
            offset += length
        self.lookup = {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text, bos=True):
        tokens = [BOS] if bos else []
        raw = text.encode("utf-8")
        if raw:
            tokens.append(self.lookup[b" "])  # the dummy prefix
        for ch in text:
            b = ch.encode("utf-8")
            if b in self.lookup:
                tokens.append(self.lookup[b])
            else:
                tokens.extend(byte + 3 for byte in b)  # byte fallback: <0x00> is id 3
        while True:  # merge the adjacent pair whose merged piece scores best (first on ties)
            best_score, best_id, best_idx = -1e10, -1, -1
            for i in range(len(tokens) - 1):
                merged = self.pieces[tokens[i]] + self.pieces[tokens[i + 1]]
                idx = self.lookup.get(merged, -1)
                if idx != -1 and self.scores[idx] > best_score:
                    best_score, best_id, best_idx = self.scores[idx], idx, i
            if best_idx == -1:
                return tokens
            tokens[best_idx:best_idx + 2] = [best_id]

    def decode(self, tokens):
        """What run.c prints for these generated tokens, BOS being the token before the first."""
        out, prev = b"", BOS
        for token in tokens:
            piece = self.pieces[token]
            if prev == BOS and piece.startswith(b" "):
                piece = piece[1:]
            m = re.fullmatch(rb"<0x([0-9A-F]{2})>", piece)
            out += bytes([int(m.group(1), 16)]) if m else piece
            prev = token
        return out.decode("utf-8", errors="replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "stories260K"))
    parser.add_argument("--llama2c-tokenizer", default=None)
    args = parser.parse_args()
    ensure_packages()
    import torch
    import tokenizers
    import transformers

    model_dir = args.model
    tok_bin = args.llama2c_tokenizer
    if tok_bin is None:
        for candidate in (os.path.join(model_dir, "tok512.bin"),
                          os.path.join(ROOT, "..", "shared", "models", "stories260K", "tok512.bin")):
            if os.path.exists(candidate):
                tok_bin = candidate
                break
    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    # 1. Greedy generation from BOS, as llama2.c's run does at temperature 0.
    torch.manual_seed(0)
    version = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    dtype_arg = "dtype" if version >= (4, 56) else "torch_dtype"  # renamed in 4.56
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, **{dtype_arg: torch.float32})
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([[BOS]]), max_new_tokens=LLAMA2C_STEPS, do_sample=False,
                             eos_token_id=BOS, pad_token_id=0, top_k=None, top_p=None,
                             temperature=None)
    generated = out[0, 1:].tolist()
    if generated and generated[-1] == BOS:  # run.c stops on BOS without printing it
        generated = generated[:-1]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = hf_tokenizer.decode(generated, skip_special_tokens=True)
    expected = reference_text(os.path.join(model_dir, "reference-output.md"))
    print(f"generated {len(generated)} tokens")
    check(text.rstrip("\n") == expected,
          "transformers greedy text equals reference-output.md" +
          ("" if text.rstrip("\n") == expected else f"\n--- got ---\n{text}\n--- expected ---\n{expected}"))

    # 2. The tokenizer files against llama2.c's own encoder.
    fast = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    check(fast.get_vocab_size() == model.config.vocab_size, "tokenizer.json vocabulary size")
    sentences = [
        "Once upon a time, there was a little girl named Lily.",
        expected.split("\n")[1],
        "Lily's mom said, \"Don't worry.\"\nThey played all day!",
        "Hello world",
        "  two leading spaces and trailing  ",
        "Tim had 3 apples, 12 pears and 100 plums.",
        "A café, a naïve dog and a 日本 cat ☕.",
        "tab\there",
        "",
    ]
    if tok_bin is None:
        print("skip  llama2.c encoder comparison: tok512.bin not found (pass --llama2c-tokenizer)")
        sp = None
    else:
        sp = Llama2cTokenizer(tok_bin, model.config.vocab_size)
        check(sp.decode(generated) == text, "llama2.c decode of the generated tokens equals transformers'")
    for sentence in sentences:
        ids = fast.encode(sentence).ids
        auto_ids = hf_tokenizer(sentence)["input_ids"]
        check(auto_ids == ids, f"AutoTokenizer and tokenizers agree on {sentence!r}")
        if sp is not None:
            reference = sp.encode(sentence)
            check(ids == reference, f"encode {sentence!r} == llama2.c {reference}" +
                  ("" if ids == reference else f" (got {ids})"))
        decoded = fast.decode(ids, skip_special_tokens=True)
        check(decoded == sentence, f"decode(encode({sentence!r})) round trips" +
              ("" if decoded == sentence else f" (got {decoded!r})"))

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("stories260K verified: transformers reproduces llama2.c's greedy output and tokenizer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
