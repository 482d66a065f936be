#!/usr/bin/env python3
"""Bit-exact reference fixtures for lowbit's weight formats, made by bitsandbytes on the CPU.

Writes tests/data/formats/{index.json, arrays.bin}. arrays.bin is the concatenation of raw
little-endian arrays; index.json maps each array name to {"dtype": "f32"|"u8"|"i8",
"shape": [...], "offset": bytes, "nbytes": bytes} and lists the cases under "four_bit" and
"int8" (what was quantized, with which settings, and the names of its arrays).

Checked with torch 2.15.0 (CPU) and bitsandbytes 0.50.2 (pip). On CPU that version runs:
  * quantize_4bit: the torch "default" kernel (bucketize against fp32 midpoints of the sorted
    code, full blocks x * (1/absmax.clamp(1e-38)), the partial last block x / absmax.clamp(1e-38)),
  * dequantize_4bit / quantize_blockwise / dequantize_blockwise: libbitsandbytes_cpu.so
    (quantize_blockwise uses a 65536-entry nearest-code lookup table),
  * int8_vectorwise_quant / int8_mm_dequant / int8_mixed_scaled_mm: torch "default" kernels,
    int8_linear_matmul: torch._int_mm (exact int32) on AVX-512 machines.
Run: python3 tools/make_format_fixtures.py  (from the repository root)
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_container import Container  # noqa: E402
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from bitsandbytes.autograd._functions import MatmulLtState

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "formats")


def np32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def weight_cases():
    g = torch.Generator().manual_seed(1234)
    cases = {}
    cases["normal"] = torch.randn(72, 256, generator=g) * 0.02  # 288 blocks of 64: two dq blocks
    t = torch.distributions.StudentT(torch.tensor(3.0)).sample((40, 200))  # heavy tails, 200 % 64 != 0
    cases["student_t"] = t.float()
    w = torch.randn(32, 128, generator=g)
    idx = torch.randint(0, w.numel(), (12,), generator=g)
    w.view(-1)[idx] *= 40.0
    cases["outliers"] = w
    w = torch.randn(7, 50, generator=g)
    w.view(-1)[128:256] = 0.0  # full zero blocks at 64 and 128
    w.view(-1)[320:350] = 0.0  # an all-zero partial last block at 64
    cases["zero_blocks"] = w
    cases["odd_count"] = torch.randn(3, 51, generator=g)  # 153 values: the last byte has one code
    # Exact ties: absmax 1 and values on the fp32 midpoints of both code tables, +-0, tiny values.
    vals = [1.0]
    for qt in ("nf4", "fp4"):
        code = F.get_4bit_type(qt, device="cpu")
        s = torch.sort(code).values
        vals += ((s[:-1] + s[1:]) / 2).tolist()
    vals += [0.0, -0.0, 1e-4, -1e-4, 0.002, -0.002, 0.0026041667442768812, -0.0026041667442768812, -1.0]
    row = torch.tensor(vals, dtype=torch.float32)
    row = torch.cat([row, torch.linspace(-1, 1, 128 - row.numel())])
    cases["ties"] = torch.stack([row, -row])  # 2 x 128
    cases["cases_3x50"] = torch.randn(3, 50, generator=g)
    return cases


def make_four_bit(c):
    entries = []
    for name, w in weight_cases().items():
        c.add(f"{name}/input", np32(w))
        for bs in (64, 128):
            for qt in ("nf4", "fp4"):
                key = f"{name}/{qt}/bs{bs}"
                packed, st = F.quantize_4bit(w, blocksize=bs, quant_type=qt, compress_statistics=False)
                deq = F.dequantize_4bit(packed, st)
                packed_dq, st_dq = F.quantize_4bit(w, blocksize=bs, quant_type=qt, compress_statistics=True)
                assert torch.equal(packed, packed_dq)
                deq_dq = F.dequantize_4bit(packed_dq, st_dq)
                # absmax as bnb reconstructs it for the double-quantized state
                absmax_dq = F.dequantize_blockwise(st_dq.absmax, st_dq.state2) + st_dq.offset
                entries.append({
                    "name": name, "quant_type": qt, "block_size": bs, "shape": list(w.shape),
                    "input": f"{name}/input",
                    "packed": c.add(f"{key}/packed", packed.view(torch.uint8).reshape(-1).numpy()),
                    "absmax": c.add(f"{key}/absmax", np32(st.absmax)),
                    "dequant": c.add(f"{key}/dequant", np32(deq).reshape(w.shape)),
                    "dq_offset": float(st_dq.offset.item()),
                    "dq_scale_codes": c.add(f"{key}/dq_scale_codes", st_dq.absmax.numpy().astype(np.uint8)),
                    "dq_absmax2": c.add(f"{key}/dq_absmax2", np32(st_dq.state2.absmax)),
                    "dq_absmax": c.add(f"{key}/dq_absmax", np32(absmax_dq)),
                    "dq_dequant": c.add(f"{key}/dq_dequant", np32(deq_dq).reshape(w.shape)),
                })
                if name == "normal" and bs == 64 and qt == "nf4":
                    c.add("dynamic_map_code", np32(st_dq.state2.code))
    return entries


def make_int8(c):
    g = torch.Generator().manual_seed(99)
    entries = []
    weights = {
        "w_normal": torch.randn(48, 128, generator=g) * 0.05,
        "w_heavy": torch.distributions.StudentT(torch.tensor(2.5)).sample((40, 96)).float() * 0.1,
    }
    for wname, w in weights.items():
        w16 = w.to(torch.float16)  # Int8Params casts the weight to fp16 before quantizing
        CB, SCB, _ = F.int8_vectorwise_quant(w16.clone())
        c.add(f"int8/{wname}/input", np32(w))
        c.add(f"int8/{wname}/CB", CB.numpy())
        c.add(f"int8/{wname}/SCB", np32(SCB))
        cols = w.shape[1]
        xs = {}
        xs["x_plain"] = (torch.randn(4, cols, generator=g)).clamp(-5.5, 5.5)
        x = torch.randn(5, cols, generator=g).clamp(-5.5, 5.5)
        x[0, 3] = 8.0
        x[2, 3] = -1.5
        x[3, 17] = -12.5
        x[4, cols - 1] = 6.0  # exactly the threshold counts as an outlier (>=)
        xs["x_outliers"] = x
        x1 = torch.randn(1, cols, generator=g).clamp(-5.5, 5.5)
        x1[0, 5] = 20.0
        xs["x_single"] = x1
        xs["x_zero_row"] = torch.cat([torch.zeros(1, cols), torch.randn(1, cols, generator=g)])
        for xname, x in xs.items():
            c.add(f"int8/{wname}/{xname}/input", np32(x))
            for threshold in (0.0, 6.0):
                state = MatmulLtState()
                state.is_training = False
                state.has_fp16_weights = False
                state.CB = CB
                state.SCB = SCB
                state.threshold = threshold
                with torch.no_grad():
                    out = bnb.matmul(x.to(torch.float16), CB, state=state, threshold=threshold)
                assert out.dtype == torch.float16
                key = f"int8/{wname}/{xname}/t{threshold:g}"
                entries.append({
                    "weight": wname, "x": xname, "threshold": threshold, "rows": w.shape[0], "cols": cols,
                    "n_tokens": x.shape[0],
                    "input_w": f"int8/{wname}/input", "CB": f"int8/{wname}/CB", "SCB": f"int8/{wname}/SCB",
                    "input_x": f"int8/{wname}/{xname}/input",
                    "out": c.add(f"{key}/out", np32(out)),
                })
    return entries


def bnb_int8_matmul(x, CB, SCB, threshold, bias=None):
    """Linear8bitLt's forward in an fp16 model: fp16 activations (and fp16 bias), fp16 output."""
    state = MatmulLtState()
    state.is_training = False
    state.has_fp16_weights = False
    state.CB = CB
    state.SCB = SCB
    state.threshold = threshold
    with torch.no_grad():
        out = bnb.matmul(x.to(torch.float16), CB, state=state, threshold=threshold,
                         bias=None if bias is None else bias.to(torch.float16))
    assert out.dtype == torch.float16
    return out


def make_int8_ties(c):
    """LLM.int8 cases where torch's `127.0 / row_stats` (a reciprocal, then a multiply) and a true
    division round differently: values at half their row's absmax land on .5 and go up. Drawn with
    their own generator, so the older cases above keep their bytes. Some carry a bias."""
    g = torch.Generator().manual_seed(4321)
    entries = []
    tie_row = torch.zeros(128)
    tie_row[0], tie_row[1] = 0.1850586, 0.0925293  # SCB 0.1850586: 63.5 -> 64 (a division: 63)
    w_ties = torch.randn(6, 128, generator=g) * 0.02
    w_ties[0] = tie_row
    w_ties[3, 7], w_ties[3, 8] = 0.5, 0.25  # another exact half of the absmax
    weights = {
        "w_ties": w_ties,
        "w_gauss_256x512": torch.randn(256, 512, generator=g),
        "w_student2_64x1000": torch.distributions.StudentT(torch.tensor(2.0)).sample((64, 1000)).float(),
    }
    for wname, w in weights.items():
        w16 = w.to(torch.float16)
        CB, SCB, _ = F.int8_vectorwise_quant(w16.clone())
        c.add(f"int8/{wname}/input", np32(w))
        c.add(f"int8/{wname}/CB", CB.numpy())
        c.add(f"int8/{wname}/SCB", np32(SCB))
        rows, cols = w.shape
        bias = (torch.randn(rows, generator=g) * 0.3).to(torch.float16).float()
        bias[0] = 0.0003  # below fp16's normal range: rounds to a subnormal step
        c.add(f"int8/{wname}/bias", np32(bias))
        xs = {"x_plain": (torch.randn(3, cols, generator=g)).clamp(-5.5, 5.5)}
        x_ties = torch.zeros(2, cols)
        x_ties[0, 0], x_ties[0, 1] = 0.1850586, 0.0925293  # CA [127, 64] (a division: 63)
        x_ties[1] = torch.randn(cols, generator=g).clamp(-5.5, 5.5)
        x_ties[1, 2] = 9.0  # an outlier column, and a row whose absmax excludes it
        xs["x_ties"] = x_ties
        for xname, x in xs.items():
            c.add(f"int8/{wname}/{xname}/input", np32(x))
            for threshold in (0.0, 6.0):
                for with_bias in (False, True):
                    out = bnb_int8_matmul(x, CB, SCB, threshold, bias if with_bias else None)
                    key = f"int8/{wname}/{xname}/t{threshold:g}" + ("/bias" if with_bias else "")
                    entry = {
                        "weight": wname, "x": xname, "threshold": threshold, "rows": rows, "cols": cols,
                        "n_tokens": x.shape[0],
                        "input_w": f"int8/{wname}/input", "CB": f"int8/{wname}/CB", "SCB": f"int8/{wname}/SCB",
                        "input_x": f"int8/{wname}/{xname}/input",
                        "out": c.add(f"{key}/out", np32(out)),
                    }
                    if with_bias:
                        entry["bias"] = f"int8/{wname}/bias"
                    entries.append(entry)
    return entries


def main():
    torch.manual_seed(0)
    c = Container()
    index = {
        "generator": "tools/make_format_fixtures.py",
        "torch": torch.__version__,
        "bitsandbytes": bnb.__version__,
        "four_bit": make_four_bit(c),
        "int8": make_int8(c),
    }
    index["int8"] += make_int8_ties(c)
    index["arrays"] = c.index
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "arrays.bin"), "wb") as f:
        f.write(bytes(c.blob))
    with open(os.path.join(OUT_DIR, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    print(f"wrote {len(c.blob)} bytes, {len(c.index)} arrays", file=sys.stderr)


if __name__ == "__main__":
    main()
