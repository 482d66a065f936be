#!/usr/bin/env python3
"""Writes tiny random-weight Hugging Face models and their reference outputs to tests/data/models/.

Each fixture folder holds what a real model folder holds (config.json, model.safetensors,
generation_config.json, tokenizer.json when available) plus the goldens that lowbit's forward
pass is tested against:

  golden.safetensors  F32 tensors "logits.<i>" of shape [len(prompts[i]), vocab]: the logits at
                      every position of prompt i, computed by transformers in fp32 (weights
                      stored in bf16/fp16 are upcast exactly) with eager attention.
  golden.json         {"prompts": [[ids]], "greedy": [[20 new ids]], "greedy_min_margin": [..],
                      "transformers_version": "...", "torch_version": "..."}

The weights are drawn with a larger spread than transformers' default so that logits are not
flat and greedy continuations are not one repeated token. The seed is retried until every
greedy step's top-1/top-2 logit margin is comfortable, so an engine with ordinary fp32 rounding
differences still reproduces the greedy ids exactly.

The fixtures in QUANT_GOLDEN_FIXTURES also get the goldens of every weight format:

  golden-quant.safetensors  F32 tensors "<format>.logits.<j>" of shape [len(prompt j), vocab] for
                            the prompts listed in golden-quant.json, from the reference model of
                            that format (tools/format_reference.py: each checkpoint tensor
                            quantized on its own by bitsandbytes, dequantized by its pure-torch
                            path, run in transformers; LLM.int8 through bnb.matmul), the whole
                            prompt in one forward; "int8.decode_logits.<j>": the same positions
                            one cached token at a time (LLM.int8's outlier columns depend on the
                            tokens in the matmul). Greedy ids from generate() (KV cache).
  golden-quant.json         {"prompts": [[ids]], "formats": {format: {"greedy": [[20 ids]],
                            "greedy_min_margin": [..]}}, "bitsandbytes_version": ..., ...}

A seed is also rejected when a format's greedy continuation has a top-2 margin below
QUANT_MIN_GREEDY_MARGIN, so 1e-4 logit differences cannot flip a token.

Usage: python3 tools/make_fixture_models.py [--out tests/data/models] [--only NAME]
Needs torch and transformers (CPU is enough); bitsandbytes 0.50.2 for the quantized goldens.
"""
import argparse
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import FalconConfig, FalconForCausalLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import format_reference  # noqa: E402  (tools/format_reference.py; bitsandbytes imported lazily)

VOCAB = 512
BOS = 1
EOS = 2
PROMPT_LENGTHS = [1, 5, 17, 40]
NEW_TOKENS = 20
# A greedy step whose top-2 margin is below this makes the fixture fragile; retry another seed.
MIN_GREEDY_MARGIN = 0.02
QUANT_MIN_GREEDY_MARGIN = 0.005
# Prompts (indices into the fixture's prompts) the per-format goldens cover.
QUANT_PROMPTS = [2, 3]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_SOURCE = os.path.join(REPO_ROOT, "models", "stories260K", "tokenizer.json")


def llama_config(**overrides):
    fields = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=160, rms_norm_eps=1e-5,
        max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=BOS,
        eos_token_id=EOS,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def falcon_config(**overrides):
    fields = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
        layer_norm_epsilon=1e-5, max_position_embeddings=256, bos_token_id=BOS,
        eos_token_id=EOS, alibi=False,
    )
    fields.update(overrides)
    return FalconConfig(**fields)


# name -> (model class, config, storage dtype, legacy rope fields for config.json, description)
FIXTURES = {
    "llama-gqa-tied": (
        LlamaForCausalLM,
        lambda: llama_config(),
        torch.float32,
        {"rope_theta": 10000.0, "rope_scaling": None},
        "Llama, GQA (4 query heads, 2 KV heads), tied embeddings, default RoPE, fp32.",
    ),
    "llama3-rope": (
        LlamaForCausalLM,
        lambda: llama_config(
            tie_word_embeddings=False, head_dim=32, attention_bias=True,
            rope_parameters={
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
                "rope_theta": 500000.0,
            },
        ),
        torch.float32,
        {
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
            },
        },
        "Llama, untied, head_dim 32 != hidden/heads (16), q/k/v/o biases, llama3 RoPE scaling.",
    ),
    "llama-linear-rope-bf16": (
        LlamaForCausalLM,
        lambda: llama_config(
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
        ),
        torch.bfloat16,
        {"rope_theta": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        "Llama, untied, linear RoPE scaling (factor 2), weights stored in bfloat16.",
    ),
    "falcon-7b-style": (
        FalconForCausalLM,
        lambda: falcon_config(multi_query=True, parallel_attn=True,
                              new_decoder_architecture=False, bias=False),
        torch.float32,
        {"rope_theta": 10000.0},
        "Falcon-7B layout: multi-query (1 KV head), parallel attention+MLP, one LayerNorm, no biases.",
    ),
    "falcon-40b-style": (
        FalconForCausalLM,
        lambda: falcon_config(new_decoder_architecture=True, num_kv_heads=2, parallel_attn=True,
                              num_ln_in_parallel_attn=2, bias=False),
        torch.float32,
        {"rope_theta": 10000.0},
        "Falcon-40B layout: new decoder architecture, 2 KV groups in the fused QKV, ln_attn + ln_mlp.",
    ),
    "falcon-mha-bias": (
        FalconForCausalLM,
        lambda: falcon_config(multi_query=False, new_decoder_architecture=False, bias=True,
                              parallel_attn=False),
        torch.float16,
        {"rope_theta": 10000.0},
        "Falcon, full multi-head attention, biases on every Linear, sequential attention then MLP "
        "(input_layernorm, post_attention_layernorm), weights stored in float16.",
    ),
    # Shapes that are untidy on purpose for the 4-bit formats: k/v (60 x 72 = 67.5 blocks of 64),
    # gate/up/down (236 x 72 = 265.5 blocks: more than one -dq group of 256) are not whole blocks,
    # in_features 72 is not a multiple of 64.
    "llama-untidy": (
        LlamaForCausalLM,
        lambda: llama_config(
            hidden_size=72, num_attention_heads=6, num_key_value_heads=3, head_dim=20,
            intermediate_size=236, tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
        ),
        torch.float32,
        {"rope_theta": 10000.0, "rope_scaling": None},
        "Llama, head_dim 20, 6 query / 3 KV heads, q/k/v/o and MLP biases, untied, hidden 72.",
    ),
    # Falcon-40B's layout with one shared LayerNorm: fused QKV [200, 120] in per-group order
    # (3 q heads, k, v), rows of 120 values so 64-blocks straddle rows and heads.
    "falcon-untidy": (
        FalconForCausalLM,
        lambda: falcon_config(
            hidden_size=120, num_attention_heads=6, num_kv_heads=2, new_decoder_architecture=True,
            parallel_attn=True, num_ln_in_parallel_attn=1, bias=True, ffn_hidden_size=200,
        ),
        torch.float32,
        {"rope_theta": 10000.0},
        "Falcon new_decoder_architecture, 2 KV groups, num_ln_in_parallel_attn 1, head_dim 20, biases.",
    ),
}

QUANT_GOLDEN_FIXTURES = {"llama-untidy", "falcon-untidy"}


def randomize_weights(model, generator):
    """Spreads weights wider than the default init so the tiny model has peaked logits."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name:
                if name.endswith("weight"):
                    param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
                else:
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif "embed" in name or "word_embeddings" in name or "lm_head" in name:
                # Tied models score with the embedding: std 0.4 over 64 dims gives logits of std ~3.
                param.copy_(0.4 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.15 * torch.randn(param.shape, generator=generator))


def make_prompts(generator):
    prompts = []
    for length in PROMPT_LENGTHS:
        # Ids 3.. avoid BOS/EOS inside the prompt; the first id is always BOS.
        rest = torch.randint(3, VOCAB, (length - 1,), generator=generator).tolist()
        prompts.append([BOS] + rest)
    return prompts


def greedy_reference(model, prompt):
    """Plain argmax loop over full forwards; returns new ids and the smallest top-2 margin."""
    ids = list(prompt)
    margins = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], min(margins)


def greedy_generate(model, prompt):
    """transformers' generate() with no EOS, so exactly NEW_TOKENS ids come back."""
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
        bos_token_id=BOS,
    )
    return out[0, len(prompt):].tolist()


def patch_config_json(folder, legacy_fields, dtype):
    """Adds the pre-v5 fields (rope_theta, rope_scaling, torch_dtype) that real Hub configs carry,
    so a reader of either generation of config.json finds them."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(legacy_fields)
    config["torch_dtype"] = str(dtype).replace("torch.", "")
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def build_fixture(name, out_root):
    model_class, make_config, dtype, legacy_fields, _ = FIXTURES[name]
    folder = os.path.join(out_root, name)
    for attempt in range(50):
        seed = 1234 + 1000 * attempt + sum(map(ord, name))
        generator = torch.Generator().manual_seed(seed)
        config = make_config()
        model = model_class(config)
        randomize_weights(model, generator)
        model.generation_config.eos_token_id = None
        model.to(dtype)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        model.save_pretrained(folder, safe_serialization=True)
        patch_config_json(folder, legacy_fields, dtype)

        # The goldens come from the files as saved, loaded in fp32: what lowbit will read.
        reloaded = model_class.from_pretrained(folder, dtype=torch.float32,
                                               attn_implementation="eager")
        reloaded.eval()
        reloaded.generation_config.eos_token_id = None
        prompts = make_prompts(generator)
        logits, greedy, margins = {}, [], []
        with torch.no_grad():
            for i, prompt in enumerate(prompts):
                logits[f"logits.{i}"] = reloaded(torch.tensor([prompt])).logits[0].float().contiguous()
        for prompt in prompts:
            generated = greedy_generate(reloaded, prompt)
            reference, margin = greedy_reference(reloaded, prompt)
            if generated != reference or len(generated) != NEW_TOKENS:
                raise RuntimeError(f"{name}: generate() {generated} != argmax loop {reference}")
            greedy.append(generated)
            margins.append(margin)
        distinct = min(len(set(g)) for g in greedy)
        quant = None
        if min(margins) >= MIN_GREEDY_MARGIN and distinct >= 4 and name in QUANT_GOLDEN_FIXTURES:
            quant = quant_goldens(reloaded, [prompts[j] for j in QUANT_PROMPTS])
            worst = min(min(q["greedy_min_margin"]) for q in quant["formats"].values())
            if worst < QUANT_MIN_GREEDY_MARGIN:
                print(f"{name}: seed {seed} rejected (a format's greedy margin {worst:.4f})", file=sys.stderr)
                continue
        if min(margins) >= MIN_GREEDY_MARGIN and distinct >= 4:
            break
        print(f"{name}: seed {seed} rejected (min margin {min(margins):.4f}, "
              f"distinct {distinct})", file=sys.stderr)
    else:
        raise RuntimeError(f"{name}: no seed gave a robust greedy continuation")

    save_file(logits, os.path.join(folder, "golden.safetensors"))
    golden = {
        "prompts": prompts,
        "greedy": greedy,
        "greedy_min_margin": [round(m, 6) for m in margins],
        "seed": seed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    with open(os.path.join(folder, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")
    if quant is not None:
        write_quant_goldens(folder, quant)
    copy_tokenizer(folder)
    print(f"{name}: seed {seed}, min greedy margin {min(margins):.4f}, greedy[0] {greedy[0]}")


def write_quant_goldens(folder, quant):
    save_file(quant.pop("logits"), os.path.join(folder, "golden-quant.safetensors"))
    with open(os.path.join(folder, "golden-quant.json"), "w") as f:
        json.dump(quant, f)
        f.write("\n")


def rebuild_quant_goldens(name, out_root):
    """The per-format goldens of an existing fixture folder (same weights, same prompts)."""
    folder = os.path.join(out_root, name)
    model = FIXTURES[name][0].from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    model.generation_config.eos_token_id = None
    with open(os.path.join(folder, "golden.json")) as f:
        prompts = json.load(f)["prompts"]
    write_quant_goldens(folder, quant_goldens(model, [prompts[j] for j in QUANT_PROMPTS]))
    print(f"{name}: per-format goldens rewritten")


def nudge_sensitivity(model, prompts, draws=5):
    """How far the logits move when every linear layer's fp32 input is moved by one ulp (up or
    down at random, per element): the spread that fp32 rounding differences upstream -- another
    engine's summation order -- can cause once a format rounds its activations (fp16 for int8
    and W4A16, int8 per token for W8A8, e4m3 per token for W8A8-fp8). Largest |change| over `draws` draws and the prompts."""
    g = torch.Generator().manual_seed(0)

    def nudge(module, args):
        x = args[0]
        up = torch.nextafter(x, torch.full_like(x, float("inf")))
        down = torch.nextafter(x, torch.full_like(x, float("-inf")))
        return (torch.where(torch.rand(x.shape, generator=g) < 0.5, up, down),)

    with torch.no_grad():
        base = [model(torch.tensor([p])).logits[0] for p in prompts]
        hooks = [m.register_forward_pre_hook(nudge) for m in format_reference.decoder_linears(model)]
        worst = 0.0
        for _ in range(draws):
            for p, b in zip(prompts, base):
                worst = max(worst, float((model(torch.tensor([p])).logits[0] - b).abs().max()))
        for h in hooks:
            h.remove()
    return worst


def decode_logits(model, prompt):
    """Logits of each position computed one token at a time through transformers' KV cache."""
    rows, past = [], None
    with torch.no_grad():
        for i in range(len(prompt)):
            out = model(torch.tensor([prompt[i:i + 1]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows).contiguous()


def greedy_with_margin(model, prompt):
    """generate() (prefill, then one cached token per step) and the smallest top-2 margin of its
    steps. LLM.int8's outlier columns depend on which tokens share a matmul, so its continuation
    is defined by this prefill-then-decode schedule, the one lowbit's generate runs."""
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
        bos_token_id=BOS, output_scores=True, return_dict_in_generate=True,
    )
    margins = [float(torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]) for s in out.scores]
    return out.sequences[0, len(prompt):].tolist(), min(margins)


def quant_goldens(model, prompts):
    """Logits at every position and greedy continuations of each format's reference model; for
    int8, whose result depends on the batch (outlier columns), also the token-by-token logits."""
    import bitsandbytes
    import compressed_tensors
    out = {"prompts": prompts, "formats": {}, "logits": {},
           "reference": "tools/format_reference.py",
           "bitsandbytes_version": bitsandbytes.__version__,
           "compressed_tensors_version": compressed_tensors.__version__,
           "transformers_version": transformers.__version__, "torch_version": torch.__version__}
    for fmt in format_reference.FORMATS:
        ref = format_reference.reference_model(model, fmt)
        greedy, margins = [], []
        with torch.no_grad():
            for j, prompt in enumerate(prompts):
                out["logits"][f"{fmt}.logits.{j}"] = ref(torch.tensor([prompt])).logits[0].float().contiguous()
                if fmt == "int8":
                    out["logits"][f"{fmt}.decode_logits.{j}"] = decode_logits(ref, prompt)
        for prompt in prompts:
            ids, margin = greedy_with_margin(ref, prompt)
            if fmt != "int8" and ids != greedy_reference(ref, prompt)[0]:
                raise RuntimeError(f"{fmt}: generate() and the argmax loop disagree")
            greedy.append(ids)
            margins.append(round(margin, 6))
        sensitivity = nudge_sensitivity(ref, prompts)
        out["formats"][fmt] = {"greedy": greedy, "greedy_min_margin": margins,
                               "nudge_sensitivity": round(sensitivity, 9)}
        print(f"  {fmt}: min greedy margin {min(margins):.4f}, 1-ulp nudge sensitivity {sensitivity:.3g}",
              file=sys.stderr)
    return out


def copy_tokenizer(folder):
    if os.path.exists(TOKENIZER_SOURCE):
        shutil.copyfile(TOKENIZER_SOURCE, os.path.join(folder, "tokenizer.json"))
    else:
        print(f"note: {TOKENIZER_SOURCE} not there yet; re-run with --tokenizer-only later",
              file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "data", "models"))
    parser.add_argument("--only", choices=sorted(FIXTURES), help="build one fixture")
    parser.add_argument("--tokenizer-only", action="store_true",
                        help="only copy models/stories260K/tokenizer.json into each fixture")
    parser.add_argument("--quant-goldens-only", action="store_true",
                        help="only rewrite golden-quant.* of the existing folders (same weights and prompts)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = [args.only] if args.only else list(FIXTURES)
    for name in names:
        if args.tokenizer_only:
            copy_tokenizer(os.path.join(args.out, name))
        elif args.quant_goldens_only:
            if name in QUANT_GOLDEN_FIXTURES:
                rebuild_quant_goldens(name, args.out)
        else:
            build_fixture(name, args.out)


if __name__ == "__main__":
    main()
