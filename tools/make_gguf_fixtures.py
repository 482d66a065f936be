#!/usr/bin/env python3
"""Builds the small GGUF fixtures under tests/data/gguf/ and their goldens.

Dev-time only (PyPI: gguf, numpy, tokenizers, torch, transformers); the C++ tests read the
committed outputs. Run from the repository root:

    /work/venv/bin/python tools/make_gguf_fixtures.py

Outputs in tests/data/gguf/:
  types.gguf        one small tensor per type lowbit dequantizes, and beside each its golden:
                    "golden.<name>" (F32) = gguf.quants.dequantize(<name>), the gguf package's
                    numpy port of ggml's dequantize_row_*. F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 are
                    quantized with gguf.quants.quantize from random normals (with a few exact
                    zeros and an outlier per row); the gguf package cannot quantize K-quants, so
                    Q4_K/Q5_K/Q6_K blocks are random bytes with finite, moderate f16 scales, which
                    exercises every bit of the layout. Also "q2_k" (random bytes), a type lowbit
                    refuses, for the error test.
  tiny-smollm.gguf  a 2-layer random Llama (hidden 64, 4 heads, 2 KV heads, head_dim 16, FFN 256)
                    written as llama.cpp's convert_hf_to_gguf.py writes Llama (q/k rows
                    permuted), token embedding Q8_0, attention Q4_1, FFN Q4_K/Q5_K/Q6_K/Q5_0,
                    norms F32, untied output F16; a byte-level BPE vocabulary trained here
                    (tokenizer.ggml.pre "smollm", ChatML specials, SmolLM2's chat template).
  tiny-smollm.golden.json  token ids of a prompt, and transformers' f32 logits for them from
                    the GGUF itself (AutoModelForCausalLM.from_pretrained(gguf_file=...), which
                    dequantizes with the gguf package and undoes the permutation on its own).
  tiny-bpe-golden.json      HF tokenizers' ids of the hard-strings corpus for the trained vocabulary.
  stories-spm.gguf  stories260K's SentencePiece vocabulary (from models/stories260K/tokenizer.json
                    and the llama2.c scores) as a vocabulary-only "llama" GGUF; its golden is
                    tests/data/tokenizers/stories260K/golden.json.
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "gguf")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def corpus():
    with open(os.path.join(ROOT, "tests/data/tokenizers/corpus.json"), encoding="utf-8") as f:
        return json.load(f)


def make_types(rng):
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    w = gguf.GGUFWriter(os.path.join(OUT, "types.gguf"), "llama")
    w.add_string("lowbit.purpose", "dequantization fixtures")

    def normals(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        x[..., 3] = 0.0
        x[..., 5] = 7.5  # an outlier per row
        return x

    for name, qtype, shape in [("f32", T.F32, (3, 64)), ("f16", T.F16, (3, 64)), ("bf16", T.BF16, (3, 64)),
                               ("q8_0", T.Q8_0, (4, 64)), ("q4_0", T.Q4_0, (4, 64)), ("q4_1", T.Q4_1, (4, 64)),
                               ("q5_0", T.Q5_0, (4, 64)), ("q5_1", T.Q5_1, (4, 64))]:
        x = normals(shape)
        data = quants.quantize(x, qtype)
        golden = quants.dequantize(data, qtype).astype(np.float32)
        w.add_tensor(name, data, raw_dtype=qtype)
        w.add_tensor("golden." + name, golden)

    # K-quants: random bytes with the f16 super-block scales replaced by moderate finite values.
    def kquant(qtype, nbytes, scale_offsets, rows=3, blocks_per_row=2):
        raw = rng.integers(0, 256, size=(rows * blocks_per_row, nbytes), dtype=np.uint8)
        for off in scale_offsets:
            vals = (rng.standard_normal(rows * blocks_per_row) * 0.01).astype(np.float16)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(-1, 2)
        return raw.reshape(rows, blocks_per_row * nbytes)

    for name, qtype, nbytes, offs in [("q4_k", T.Q4_K, 144, [0, 2]), ("q5_k", T.Q5_K, 176, [0, 2]),
                                      ("q6_k", T.Q6_K, 210, [208])]:
        data = kquant(qtype, nbytes, offs)
        golden = quants.dequantize(data, qtype).astype(np.float32)
        assert np.all(np.isfinite(golden))
        w.add_tensor(name, data, raw_dtype=qtype)
        w.add_tensor("golden." + name, golden)
    w.add_tensor("q2_k", kquant(T.Q2_K, 84, [80, 82], rows=1, blocks_per_row=1), raw_dtype=T.Q2_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def train_bpe():
    """A small byte-level BPE with SmolLM2's pipeline: Digits(individual) then ByteLevel."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = []
    stories = os.path.join(ROOT, "docs", "study.md")
    for path in (stories, os.path.join(ROOT, "README.md")):
        with open(path, encoding="utf-8") as f:
            text.append(f.read())
    text += corpus()
    tok.train_from_iterator(text, trainer)
    return tok


def bpe_vocab(tok):
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    specials = {a["id"] for a in data["added_tokens"] if a["special"]}
    types = [3 if i in specials else 1 for i in range(len(tokens))]
    return tokens, merges, types


SMOLLM2_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                    "{% endif %}")


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_tiny_model(rng, tok):
    import gguf
    import torch
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    tokens, merges, types = bpe_vocab(tok)
    vocab = len(tokens)
    dim, ffn, layers, heads, kv_heads, hd = 64, 256, 2, 4, 2, 16
    path = os.path.join(OUT, "tiny-smollm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("lowbit tiny smollm-style fixture")
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(SMOLLM2_TEMPLATE)

    def rnd(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def put(name, x, qtype):
        data = x if qtype == T.F32 else quants.quantize(x, qtype) if qtype != T.F16 else x.astype(np.float16)
        if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
            raise AssertionError("K-quants are written with put_k")
        w.add_tensor(name, data, raw_dtype=None if qtype in (T.F32, T.F16) else qtype)

    def put_k(name, rows, cols, qtype, nbytes, offs):
        raw = rng.integers(0, 256, size=(rows * cols // 256, nbytes), dtype=np.uint8)
        for off in offs:
            vals = (np.abs(rng.standard_normal(raw.shape[0])) * 0.002 + 0.0005).astype(np.float16)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(-1, 2)
        w.add_tensor(name, raw.reshape(rows, cols // 256 * nbytes), raw_dtype=qtype)

    put("token_embd.weight", rnd(vocab, dim, scale=0.5), T.Q8_0)
    for l in range(layers):
        p = f"blk.{l}."
        put(p + "attn_norm.weight", (1 + rnd(dim, scale=0.1)), T.F32)
        put(p + "attn_q.weight", permute(rnd(heads * hd, dim), heads), T.Q4_1)
        put(p + "attn_k.weight", permute(rnd(kv_heads * hd, dim), kv_heads), T.Q4_1)
        put(p + "attn_v.weight", rnd(kv_heads * hd, dim), T.Q8_0)
        put(p + "attn_output.weight", rnd(dim, heads * hd), T.Q5_1)
        put(p + "ffn_norm.weight", (1 + rnd(dim, scale=0.1)), T.F32)
        # The K-quants need rows of 256: the FFN's down projection has ffn = 256 columns.
        put(p + "ffn_gate.weight", rnd(ffn, dim), T.Q5_0)
        put(p + "ffn_up.weight", rnd(ffn, dim), T.Q4_0)
        qt, nb, offs = [(T.Q4_K, 144, [0, 2]), (T.Q6_K, 210, [208])][l]
        put_k(p + "ffn_down.weight", dim, ffn, qt, nb, offs)
    put("output_norm.weight", (1 + rnd(dim, scale=0.1)), T.F32)
    put("output.weight", rnd(vocab, dim, scale=0.3), T.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny-smollm.gguf", dtype=torch.float32)
    model.eval()
    text = "<|im_start|>user\nWhat is 12 + 30? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(text, add_special_tokens=False).ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    golden = {"text": text, "ids": ids, "logits": [[float(f"{v:.8g}") for v in row] for row in logits]}
    with open(os.path.join(OUT, "tiny-smollm.golden.json"), "w") as f:
        json.dump(golden, f)
    print(f"tiny-smollm.gguf: vocab {vocab}, {len(merges)} merges, {len(ids)} prompt ids", file=sys.stderr)


def make_bpe_golden(tok):
    cases = []
    for text in corpus():
        cases.append({"text": text, "ids_special": tok.encode(text, add_special_tokens=True).ids,
                      "ids_plain": tok.encode(text, add_special_tokens=False).ids})
    with open(os.path.join(OUT, "tiny-bpe-golden.json"), "w", encoding="utf-8") as f:
        json.dump({"vocabulary": "tiny-smollm.gguf", "cases": cases}, f, ensure_ascii=False)


def make_stories_spm():
    """stories260K's vocabulary as llama.cpp writes a SentencePiece vocabulary: tokens, scores,
    token types (2 unknown, 3 control, 6 byte, 1 normal), BOS/EOS/UNK ids, add_bos."""
    import gguf
    import struct

    with open(os.path.join(ROOT, "models/stories260K/tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    scores = []
    with open("/work/shared/models/stories260K/tok512.bin", "rb") as f:
        data = f.read()
    off = 4
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8 + n
        scores.append(score)
    assert len(scores) == len(tokens)
    types = [2 if i == 0 else 3 if i in (1, 2) else 6 if t.startswith("<0x") else 1 for i, t in enumerate(tokens)]
    w = gguf.GGUFWriter(os.path.join(OUT, "stories-spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240917)
    make_types(rng)
    tok = train_bpe()
    make_bpe_golden(tok)
    make_tiny_model(rng, tok)
    make_stories_spm()
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
