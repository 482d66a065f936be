#!/usr/bin/env python3
"""Golden of the real model: SmolLM2-135M-Instruct's f32 logits as transformers computes them from
the GGUF in ../shared/models (its weights are Q4_1/Q8_0-rounded; transformers dequantizes them
with the gguf package and undoes llama.cpp's q/k permutation itself, so this golden does not
depend on lowbit's converter), plus the HF tokenizer ids of the hard-strings corpus for its
vocabulary.

Dev-time only (PyPI: torch, transformers, accelerate, gguf, tokenizers). Run from the repository root:

    /work/venv/bin/python tools/make_smollm2_golden.py [--gguf PATH] [--check-folder DIR]

Writes tests/data/smollm2/golden.json:
  prompt_text   a ChatML conversation rendered with the model's template (generation prompt on)
  ids           its token ids (tokenizers' encode, no special tokens added)
  positions     the positions whose logits are stored; logits[k] is the full f32 row at positions[k],
                logits_f64[k] the same forward run in float64 (model.double())
  greedy        transformers' greedy continuation (24 new tokens, stopping at <|im_end|>)
and tests/data/smollm2/tokenizer-golden.json: ids of tests/data/tokenizers/corpus.json from a
tokenizers pipeline rebuilt from the GGUF's vocabulary and merges as SmolLM2's tokenizer.json
defines it (no normalizer; pre-tokenizer Digits(individual) then ByteLevel(no prefix space, GPT-2
regex); ByteLevel decoder; the 17 control tokens as special added tokens; no BOS added).
--check-folder DIR also loads a lowbit-converted folder in transformers and reports the largest
logit difference from the GGUF load (expected 0: the same fp32 weights).
"""
import argparse
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "smollm2")
DEFAULT_GGUF = os.path.join(ROOT, "..", "shared", "models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")


def rebuilt_tokenizer(path):
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    r = GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in r.fields["tokenizer.ggml.merges"].contents()]
    types = r.fields["tokenizer.ggml.token_type"].contents()
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True) for i, t in enumerate(types) if t == 3])
    return tok, r


def main():
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--check-folder")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    tok, reader = rebuilt_tokenizer(args.gguf)

    with open(os.path.join(ROOT, "tests/data/tokenizers/corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    cases = [{"text": t, "ids_special": tok.encode(t, add_special_tokens=True).ids,
              "ids_plain": tok.encode(t, add_special_tokens=False).ids} for t in corpus]
    with open(os.path.join(OUT, "tokenizer-golden.json"), "w", encoding="utf-8") as f:
        json.dump({"vocabulary": "SmolLM2-135M-Instruct (GGUF)", "cases": cases}, f, ensure_ascii=False)

    text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(text, add_special_tokens=False).ids
    d, f_ = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f_, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=2)
    greedy = out[0, len(ids):].tolist()
    # The same forward in float64: how far each f32 computation is from the exact one (the two
    # f32 forwards, transformers' and lowbit's, each round differently).
    with torch.no_grad():
        logits64 = model.double()(torch.tensor([ids])).logits[0].numpy()
    positions = [0, len(ids) // 2, len(ids) - 1]
    for p in positions:
        print(f"position {p}: transformers f32 vs f64 max |diff| {np.abs(logits[p] - logits64[p]).max():.3g}",
              file=sys.stderr)
    golden = {"prompt_text": text, "ids": ids, "positions": positions,
              "logits": [[float(f"{v:.8g}") for v in logits[p]] for p in positions],
              "logits_f64": [[float(f"{v:.9g}") for v in logits64[p]] for p in positions], "greedy": greedy,
              "greedy_text": tok.decode(greedy, skip_special_tokens=True)}
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f)
    print(f"{len(ids)} prompt ids; greedy: {golden['greedy_text']!r}", file=sys.stderr)

    if args.check_folder:
        other = AutoModelForCausalLM.from_pretrained(args.check_folder, dtype=torch.float32)
        with torch.no_grad():
            l2 = other(torch.tensor([ids])).logits[0].float().numpy()
        print(f"converted folder vs GGUF load: max |logit diff| {np.abs(l2 - logits).max():.3g}", file=sys.stderr)


if __name__ == "__main__":
    main()
