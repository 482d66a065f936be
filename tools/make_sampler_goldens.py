#!/usr/bin/env python3
"""Writes tests/data/sampler/goldens.json: sampling distributions computed by transformers' own
logits processors, for lowbit's sampler test.

The processors are chained in the order and with the skip conditions of
GenerationMixin._get_logits_processor (transformers 4.4x-5.x): RepetitionPenaltyLogitsProcessor
(if penalty != 1), then, when sampling, TemperatureLogitsWarper (if != 1), TopKLogitsWarper
(if != 0), TopPLogitsWarper (if < 1), MinPLogitsWarper (if set). Greedy cases (temperature 0)
apply only the repetition penalty and take the argmax, as generate(do_sample=False) does.

JSON: {"transformers_version", "torch_version", "cases": [{"name", "logits": [float32 values],
"history": [ids], "params": {temperature, top_k, top_p, min_p, repetition_penalty},
"probs": [float per token]}]}. Logits are float32 values written exactly (as doubles).

Cases whose cumulative top-p sum or min-p ratio lies within 1e-5 of its threshold are redrawn,
so float-vs-double rounding cannot change which tokens survive.
Usage: python3 tools/make_sampler_goldens.py [--out tests/data/sampler/goldens.json]
"""
import argparse
import json
import os

import torch
import transformers
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARGIN = 1e-5

# (name, vocab, logit std, tie-rounding step or None, history length, params)
CASES = [
    ("plain", 16, 2.0, None, 0, dict()),
    ("temperature", 64, 2.0, None, 0, dict(temperature=0.7)),
    ("hot", 64, 2.0, None, 0, dict(temperature=1.8)),
    ("top_k", 64, 2.0, None, 0, dict(top_k=5)),
    ("top_k_ties", 32, 2.0, 0.5, 0, dict(top_k=6)),
    ("top_p", 64, 2.0, None, 0, dict(top_p=0.8)),
    ("top_p_small", 1000, 1.0, None, 0, dict(top_p=0.3)),
    ("min_p", 64, 2.0, None, 0, dict(min_p=0.1)),
    ("repetition", 32, 2.0, None, 12, dict(repetition_penalty=1.5)),
    ("repetition_below_one", 32, 2.0, None, 12, dict(repetition_penalty=0.7)),
    ("combined", 1000, 3.0, None, 40, dict(repetition_penalty=1.2, temperature=0.8, top_k=40,
                                            top_p=0.9, min_p=0.02)),
    ("combined_large_k", 1000, 2.0, None, 20, dict(temperature=1.3, top_k=300, top_p=0.95,
                                                    min_p=0.05)),
    ("greedy_repetition", 32, 2.0, None, 8, dict(temperature=0.0, repetition_penalty=2.0)),
]


def processors(params, sampling):
    chain = LogitsProcessorList()
    if params["repetition_penalty"] != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(float(params["repetition_penalty"])))
    if not sampling:
        return chain
    if params["temperature"] != 1.0:
        chain.append(TemperatureLogitsWarper(float(params["temperature"])))
    if params["top_k"] != 0:
        chain.append(TopKLogitsWarper(top_k=params["top_k"], min_tokens_to_keep=1))
    if params["top_p"] < 1.0:
        chain.append(TopPLogitsWarper(top_p=params["top_p"], min_tokens_to_keep=1))
    if params["min_p"] > 0.0:
        chain.append(MinPLogitsWarper(min_p=params["min_p"], min_tokens_to_keep=1))
    return chain


def near_threshold(scores_before_top_p, scores_before_min_p, params):
    """True when a top-p cumulative sum or min-p ratio sits within MARGIN of its threshold."""
    if params["top_p"] < 1.0:
        cumsum = scores_before_top_p.sort().values.softmax(-1).cumsum(-1).double()
        if ((cumsum - (1.0 - params["top_p"])).abs() < MARGIN).any():
            return True
    if params["min_p"] > 0.0:
        probs = scores_before_min_p.softmax(-1).double()
        ratio = probs / probs.max()
        if ((ratio - params["min_p"]).abs() < MARGIN).any():
            return True
    return False


def make_case(name, vocab, std, tie_step, history_len, overrides, generator):
    params = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0)
    params.update(overrides)
    sampling = params["temperature"] > 0.0
    for _ in range(100):
        logits = torch.randn(vocab, generator=generator) * std
        if tie_step:
            logits = torch.round(logits / tie_step) * tie_step
        history = torch.randint(0, vocab, (history_len,), generator=generator)
        input_ids = history.unsqueeze(0)
        scores = logits.unsqueeze(0).clone()
        # Run the chain step by step to inspect the scores each threshold filter sees.
        before = {}
        for proc in processors(params, sampling):
            before[type(proc).__name__] = scores.clone()
            scores = proc(input_ids, scores)
        if sampling and near_threshold(before.get("TopPLogitsWarper", scores)[0],
                                       before.get("MinPLogitsWarper", scores)[0], params):
            continue
        if sampling:
            probs = torch.softmax(scores[0], dim=-1)
        else:
            probs = torch.zeros(vocab)
            probs[torch.argmax(scores[0])] = 1.0
        return {
            "name": name,
            "logits": [float(x) for x in logits.tolist()],
            "history": history.tolist(),
            "params": params,
            "probs": [float(x) for x in probs.tolist()],
        }
    raise RuntimeError(f"{name}: every draw was near a threshold")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "data", "sampler",
                                                      "goldens.json"))
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(20240611)
    cases = [make_case(*case, generator) for case in CASES]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"transformers_version": transformers.__version__,
                   "torch_version": torch.__version__, "cases": cases}, f)
        f.write("\n")
    for case in cases:
        kept = sum(1 for p in case["probs"] if p > 0)
        print(f"{case['name']}: vocab {len(case['probs'])}, {kept} tokens kept")


if __name__ == "__main__":
    main()
