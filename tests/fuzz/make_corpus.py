#!/usr/bin/env python3
"""Writes the fuzz seed corpora under tests/fuzz/corpus/<target>/ (run from the repo root).

Small valid examples of each input plus a few malformed ones; libFuzzer mutates from these.
Standard library only; reads the committed fixtures, so the seeds follow them."""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(*parts):
    with open(os.path.join(ROOT, *parts), "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None, pad=True, order=None):
    """tensors: list of (name, dtype, shape, bytes); data laid out in list order (or `order`)."""
    header, blobs, off = {}, [], 0
    for i in order or range(len(tensors)):
        name, dtype, shape, blob = tensors[i]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
    a = ("a", "F32", [2], f32(1, 2))
    b = ("b", "BF16", [2, 2], bytes([0, 0x3f, 0x80, 0xbf, 0, 0x40, 0xc0, 0x7f]))
    c = ("c", "F16", [3], struct.pack("<3e", 1.0, -2.0, 0.5))
    e = ("empty", "F32", [0, 4], b"")
    put("safetensors", "valid", safetensors([a, b, c], {"format": "pt"}))
    put("safetensors", "out_of_order", safetensors([a, b, c], order=[2, 0, 1]))
    put("safetensors", "empty_tensor", safetensors([e, a]))
    put("safetensors", "no_tensors", safetensors([]))
    put("safetensors", "scalar", safetensors([("s", "F32", [], f32(3))]))
    good = safetensors([a, b])
    put("safetensors", "truncated", good[:-3])
    put("safetensors", "header_too_long", struct.pack("<Q", 1 << 40) + good[8:])
    h = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    put("safetensors", "overlap", struct.pack("<Q", len(h)) + h + f32(1, 2))
    h = b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'
    put("safetensors", "size_mismatch", struct.pack("<Q", len(h)) + h + f32(1, 2))
    h = b'{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}'
    put("safetensors", "unknown_dtype", struct.pack("<Q", len(h)) + h + f32(1, 2))
    put("safetensors", "tiny", b"\x02\x00\x00\x00\x00\x00\x00\x00{}")

    # Index: the fuzz target puts the index next to shards model-0000{1,2}-of-00002.safetensors
    # (a, b | c) and sub/s.safetensors (d).
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    idx = lambda wm: json.dumps({"metadata": {"total_size": 36}, "weight_map": wm})
    put("safetensors_index", "valid", idx({"a": s1, "b": s1, "c": s2}))
    put("safetensors_index", "subdir", idx({"a": s1, "b": s1, "d": "sub/s.safetensors"}))
    put("safetensors_index", "wrong_shard", idx({"a": s2}))
    put("safetensors_index", "missing_shard", idx({"a": "model-00003-of-00003.safetensors"}))
    put("safetensors_index", "escape", idx({"a": "../x.safetensors"}))
    put("safetensors_index", "not_string", idx({"a": 3}))
    put("safetensors_index", "no_weight_map", "{}")
    put("safetensors_index", "duplicate", '{"weight_map": {"a": "%s", "a": "%s"}}' % (s1, s1))

    models = os.path.join("tests", "data", "models")
    for m in sorted(os.listdir(os.path.join(ROOT, models))):
        p = os.path.join(models, m, "config.json")
        if os.path.exists(os.path.join(ROOT, p)):
            put("config", m, read(p))
    put("config", "stories260K", read("models", "stories260K", "config.json"))
    base = json.loads(read(models, "llama-gqa-tied", "config.json"))
    for name, change in [("zero_hidden", {"hidden_size": 0}), ("negative_layers", {"num_hidden_layers": -1}),
                         ("heads_not_dividing", {"num_attention_heads": 7}), ("kv_not_dividing", {"num_key_value_heads": 3}),
                         ("unknown_arch", {"architectures": ["GPT2LMHeadModel"]}), ("huge", {"hidden_size": 2**31 - 1}),
                         ("head_dim", {"head_dim": 1 << 20}), ("rope_llama3", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                          "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}),
                         ("eos_list", {"eos_token_id": [1, 2, 3]}), ("string_size", {"hidden_size": "64"})]:
        put("config", name, json.dumps({**base, **change}))
    put("config", "not_object", "[1, 2]")
    put("config", "truncated", json.dumps(base)[:40])

    stories_tok = json.loads(read("tests", "data", "tokenizers", "stories260K", "tokenizer.json"))
    put("tokenizer_json", "stories260K", json.dumps(stories_tok))
    for variant in ("llama2-metaspace", "llama2-metaspace-split"):
        v = json.loads(read("tests", "data", "tokenizers", variant, "variant.json"))
        put("tokenizer_json", variant, json.dumps({**stories_tok, **v["replace"]}))
    # A byte-level BPE (Llama-3's pre-tokenizer and decoder) over Llama-3's first 600 ids.
    l3 = json.loads(read("tests", "data", "tokenizers", "llama3", "tokenizer.json"))
    vocab = {t: i for t, i in l3["model"]["vocab"].items() if i < 600}
    merges = [m for m in l3["model"]["merges"]
              if (lambda p: len(p) == 2 and p[0] in vocab and p[1] in vocab and p[0] + p[1] in vocab)(m.split(" "))]
    added = [dict(t, id=600 + k) for k, t in enumerate(l3["added_tokens"][:4])]
    small = {**l3, "added_tokens": added, "model": {**l3["model"], "vocab": vocab, "merges": merges}}
    put("tokenizer_json", "bytelevel", json.dumps(small))
    ws = json.loads(read("tests", "data", "tokenizers", "falcon-whitespace", "variant.json"))
    put("tokenizer_json", "bytelevel-whitespace", json.dumps({**small, **ws["replace"]}))
    put("tokenizer_json", "no_model", '{"version": "1.0"}')
    put("tokenizer_json", "bad_merges", json.dumps({**small, "model": {**small["model"], "merges": [["x"], 3]}}))

    # tokenizer_encode: first byte = mode (bit 0 llama3, bit 1 add_special, bit 2 skip_special, bit 3 ids).
    for k, (mode, text) in enumerate([(0, "Once upon a time, there was a little girl."), (3, "Hello, world! 123 4567"),
                                      (2, "<s>hi</s> \u00fcber \u65e5\u672c\u8a9e \U0001F600"), (1, "<|begin_of_text|>Hi<|eot_id|>"),
                                      (1, "  spaces\n\n\ttabs  it's we'll"), (0, "\u2581\u2581x")]):
        put("tokenizer_encode", f"text{k}", bytes([mode]) + text.encode())
    put("tokenizer_encode", "invalid_utf8", b"\x00abc\xff\xfe")
    put("tokenizer_encode", "overlong", b"\x01\xc0\xaf and \xed\xa0\x80")
    put("tokenizer_encode", "truncated_utf8", b"\x00abc\xe6\x97")
    put("tokenizer_encode", "ids_small", bytes([8]) + struct.pack("<8H", 1, 300, 3, 260, 400, 2, 511, 4))
    put("tokenizer_encode", "ids_llama3", bytes([9 + 4]) + struct.pack("<6H", 9906, 1917, 0, 65535, 128, 300))

    # llama2c: <u32 checkpoint length><checkpoint><tokenizer .bin>; a tiny checkpoint for tok512.
    dim, hidden, layers, heads, kv, vocab_n, seq = 8, 16, 1, 2, 1, 512, 4
    hd = dim // heads
    n = (vocab_n * dim + layers * dim + layers * dim * dim + 2 * layers * kv * hd * dim + layers * dim * dim
         + layers * dim + 3 * layers * hidden * dim + dim + seq * hd)
    weights = struct.pack(f"<{n}f", *[((i * 37) % 101 - 50) / 100 for i in range(n)])
    tok = read("models", "stories260K", "tok512.bin")

    def pair(ckpt, tk=tok):
        return struct.pack("<I", len(ckpt)) + ckpt + tk
    hdr = lambda *v: struct.pack("<7i", *v)
    put("llama2c", "tiny_tied", pair(hdr(dim, hidden, layers, heads, kv, vocab_n, seq) + weights))
    put("llama2c", "tiny_untied", pair(hdr(dim, hidden, layers, heads, kv, -vocab_n, seq) + weights
                                       + struct.pack(f"<{vocab_n * dim}f", *([0.01] * (vocab_n * dim)))))
    put("llama2c", "short_weights", pair(hdr(dim, hidden, layers, heads, kv, vocab_n, seq) + weights[:-4]))
    put("llama2c", "odd_head", pair(hdr(6, hidden, layers, 2, 1, vocab_n, seq) + weights))
    put("llama2c", "huge_header", pair(hdr(1 << 30, 1 << 30, 1 << 20, 1, 1, vocab_n, seq) + weights[:64]))
    put("llama2c", "short_tokenizer", pair(hdr(dim, hidden, layers, heads, kv, vocab_n, seq) + weights, tok[:100]))

    # gguf: the committed fixtures (small quantized Llama, SentencePiece vocabulary) and hand-made
    # files around the reader's checks.
    put("gguf", "tiny_smollm", read("tests", "data", "gguf", "tiny-smollm.gguf"))
    put("gguf", "stories_spm", read("tests", "data", "gguf", "stories-spm.gguf"))
    put("gguf", "types", read("tests", "data", "gguf", "types.gguf"))
    gs = lambda b: struct.pack("<Q", len(b)) + b
    kv_str = lambda k, v: gs(k.encode()) + struct.pack("<I", 8) + gs(v.encode())
    kv_u32 = lambda k, v: gs(k.encode()) + struct.pack("<II", 4, v)

    def gguf(kvs, tensors, data, version=3, align=32):
        out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
        for name, ne, typ, off in tensors:
            out += gs(name.encode()) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            out += struct.pack("<IQ", typ, off)
        return out + b"\0" * (-len(out) % align) + data
    q8 = struct.pack("<e", 0.5) + bytes(range(32))
    put("gguf", "mini", gguf([kv_str("general.architecture", "llama")], [("w", [32, 2], 8, 0)], q8 * 2))
    put("gguf", "mini_v2", gguf([], [("a", [4], 0, 0), ("b", [4], 1, 32)], f32(1, 2, 3, 4) + b"\0" * 16 + b"\1\2" * 4, 2))
    put("gguf", "aligned64", gguf([kv_u32("general.alignment", 64)], [("w", [16], 0, 0)], f32(*range(16)), align=64))
    put("gguf", "overlap", gguf([], [("a", [8], 0, 0), ("b", [8], 0, 0)], f32(*range(8))))
    put("gguf", "truncated", gguf([], [("w", [32, 2], 8, 0)], q8))
    put("gguf", "version1", b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    put("gguf", "bad_type", gguf([], [("w", [16], 99, 0)], f32(*range(16))))
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab", "\u0120", "\u0120a"]
    arr = lambda typ, items: struct.pack("<IIQ", 9, typ, len(items)) + items_bytes(typ, items)
    def items_bytes(typ, items):
        if typ == 8:
            return b"".join(gs(t.encode()) for t in items)
        return b"".join(struct.pack("<i", t) for t in items)
    vocab = [kv_str("tokenizer.ggml.model", "gpt2"), kv_str("tokenizer.ggml.pre", "smollm"),
             gs(b"tokenizer.ggml.tokens") + arr(8, tokens),
             gs(b"tokenizer.ggml.token_type") + arr(5, [3, 3, 3, 1, 1, 1, 1, 1]),
             gs(b"tokenizer.ggml.merges") + arr(8, ["a b", "\u0120 a"]),
             kv_str("tokenizer.chat_template", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                    "'<|im_start|>assistant\\n' }}{% endif %}")]
    put("gguf", "vocab_bpe", gguf(vocab, [], b""))


if __name__ == "__main__":
    main()
