#!/usr/bin/env python3
"""Bit-exact reference fixtures for W8A8-fp8 (src/formats/format_w8a8_fp8.cpp), made by torch and
compressed-tensors (the library llm-compressor writes FP8_DYNAMIC checkpoints with and vLLM reads).

Writes tests/data/formats/fp8.{json,bin} in the container layout of make_format_fixtures.py
(index "arrays": name -> dtype, shape, byte offset, nbytes; raw little-endian arrays).

  * cast.*: fp32 -> float8_e4m3fn bytes of every e4m3 value, every midpoint between neighbours
    (the ties) and the fp32 values on either side of each, subnormals, values at and past 448,
    +-0, +-inf, +-NaN and random values: `raw` is torch's x.to(torch.float8_e4m3fn), `scheme` is
    compressed-tensors' round_to_quantized_type_args (torch.clamp(x, -448, 448) then the cast).
    `decoded` is torch's e4m3 -> fp32 of the 256 bytes.
  * weights.<case>.*: the FP8_DYNAMIC weight (strategy channel, symmetric): scale per output row
    from compressed-tensors' calculate_qparams on the row's min/max (absmax / 448, a zero scale
    replaced by fp32 eps), codes = compressed_tensors quantize(w, scale, dtype=e4m3) bytes.
  * tokens.<case>.*: the FP8_DYNAMIC input activations (strategy token, dynamic):
    compute_dynamic_scales_and_zp on x [1, tokens, hidden], then quantize.
  * matmul.<case>.y: y[t, r] = fp32(sum_c e4m3(xq[t, c]) * e4m3(wq[r, c])) * fp32(w_scale[r] * x_scale[t])
    with the sum in float64, which is exact here (each product is a multiple of 2^-18 below 2^18,
    |sum| < 2^35), so any correct implementation of "sum the products, round once" matches bit
    for bit; an fp32 accumulator in some order differs from it by its summation rounding only.

Checked with torch 2.15.0 and compressed-tensors 0.20.0 (pip install --no-deps compressed-tensors
loguru pydantic). torch 2.15's cast saturates: finite values past 448 and +-inf become +-448
(bytes 0x7e / 0xfe); NaN becomes 0x7f, -NaN 0xff; ties round to the even mantissa.
Run: python3 tools/make_fp8_fixtures.py  (from the repository root)
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_container import Container  # noqa: E402
import torch
import compressed_tensors
from compressed_tensors.quantization import preset_name_to_scheme
from compressed_tensors.quantization.lifecycle.forward import quantize
from compressed_tensors.quantization.quant_args import round_to_quantized_type_args
from compressed_tensors.quantization.utils import calculate_qparams, calculate_range, compute_dynamic_scales_and_zp

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "formats")
E4M3 = torch.float8_e4m3fn
SCHEME = preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])


def e4m3_bytes(t):
    return t.view(torch.uint8).numpy().copy()


def cast_inputs(g):
    finite = torch.arange(0, 127, dtype=torch.uint8).view(E4M3).float()  # 0 .. 448, increasing
    mids = (finite[:-1].double() + finite[1:].double()) / 2  # exact in fp32 (one more mantissa bit)
    mids = mids.float()
    up = torch.nextafter(mids, torch.full_like(mids, float("inf")))
    down = torch.nextafter(mids, torch.full_like(mids, 0.0))
    special = torch.tensor([448.0, 449.0, 463.99997, 464.0, 464.00003, 479.99997, 480.0, 480.00003, 500.0,
                            1e6, 3.4028235e38, float("inf"), 2.0 ** -10, 2.0 ** -10 * 1.0000001, 2.0 ** -10 * 0.9999999,
                            2.0 ** -11, 1e-45, 1e-40, 2.0 ** -9 * 1.5, 2.0 ** -9 * 2.5, 0.0])
    rand = torch.cat([torch.randn(2000, generator=g) * s for s in (1e-3, 0.1, 1.0, 30.0, 300.0)])
    pos = torch.cat([finite, mids, up, down, special, rand.abs()])
    values = torch.cat([pos, -pos, torch.tensor([-0.0, float("nan"), -float("nan")])])
    return values


def weight_scale(w):
    """FP8_DYNAMIC weights: per output row, calculate_qparams on the row's min / max."""
    scale, zero = calculate_qparams(w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True), SCHEME.weights)
    return scale, zero


def tie_row(cols, g):
    """A row whose scale is 0.0625 exactly (absmax 28) and whose scaled values are e4m3 midpoints."""
    finite = torch.arange(0, 127, dtype=torch.uint8).view(E4M3).float()
    mids = ((finite[:-1] + finite[1:]) / 2)
    pick = mids[torch.randint(0, len(mids), (cols,), generator=g)] * 0.0625
    pick[0] = 28.0
    signs = torch.where(torch.rand(cols, generator=g) < 0.5, -1.0, 1.0)
    signs[0] = 1.0
    return pick * signs


def overflow_row(cols, g):
    """A row where fl(absmax / fl(absmax / 448)) > 448, so the scheme's clamp to 448 matters."""
    while True:
        a = torch.rand(1, generator=g) * 10 + 0.1
        s = a / 448.0
        if float(a / s) > 448.0:
            break
    row = torch.randn(cols, generator=g) * float(a) / 4
    row = row.clamp(-float(a), float(a))
    row[3] = a
    row[7] = -a
    return row


def weight_cases(g):
    cases = {}
    cases["normal"] = torch.randn(48, 96, generator=g) * 0.02
    cols = 50
    rows = [torch.zeros(cols), tie_row(cols, g), overflow_row(cols, g),
            torch.randn(cols, generator=g) * 1e-5, torch.randn(cols, generator=g).abs().neg(),
            torch.randn(cols, generator=g) * 1e-38, torch.randn(cols, generator=g) * 1e-41]
    single = torch.zeros(cols)
    single[11] = -0.75
    rows.append(single)
    subnormal = torch.randn(cols, generator=g) * 0.002  # scaled: mostly e4m3 subnormals
    subnormal[0] = 1.0
    rows.append(subnormal)
    cases["untidy"] = torch.stack(rows).float()
    return cases


def token_cases(g):
    cases = {}
    x = torch.randn(5, 96, generator=g) * 1.5
    x[2] = 0.0  # an all-zero token
    x[3, 17] = 90.0  # an outlier
    cases["normal"] = x
    cases["untidy"] = torch.randn(3, 50, generator=g) * torch.tensor([[0.01], [3.0], [1e-20]])
    return cases


def main():
    g = torch.Generator().manual_seed(2025)
    c = Container()
    values = cast_inputs(g)
    c.add("cast.input", values.numpy())
    c.add("cast.raw", e4m3_bytes(values.to(E4M3)))
    q_min, q_max = calculate_range(SCHEME.weights, "cpu")
    c.add("cast.scheme", e4m3_bytes(round_to_quantized_type_args(values, SCHEME.weights, q_min, q_max,
                                                                 cast_to_original_dtype=False)))
    c.add("cast.decoded", torch.arange(0, 256, dtype=torch.int32).to(torch.uint8).view(E4M3).float().numpy())

    weights = weight_cases(g)
    tokens = token_cases(g)
    for name, w in weights.items():
        scale, zero = weight_scale(w)
        wq = quantize(w, scale, zero, SCHEME.weights, dtype=E4M3)
        c.add(f"weights.{name}.w", w.numpy())
        c.add(f"weights.{name}.codes", e4m3_bytes(wq))
        c.add(f"weights.{name}.scales", scale.reshape(-1).numpy())

        x = tokens[name]
        x_scale, x_zero = compute_dynamic_scales_and_zp(x.unsqueeze(0), SCHEME.input_activations, module=None)
        xq = quantize(x.unsqueeze(0), x_scale, x_zero, SCHEME.input_activations, dtype=E4M3)[0]
        x_scale = x_scale.reshape(-1)
        c.add(f"tokens.{name}.x", x.numpy())
        c.add(f"tokens.{name}.codes", e4m3_bytes(xq))
        c.add(f"tokens.{name}.scales", x_scale.numpy())

        acc = (xq.double() @ wq.double().T).float()
        y = acc * (scale.reshape(1, -1) * x_scale.reshape(-1, 1))
        c.add(f"matmul.{name}.y", y.numpy())

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "fp8.bin"), "wb") as f:
        f.write(c.blob)
    meta = {"torch_version": torch.__version__, "compressed_tensors_version": compressed_tensors.__version__,
            "weights": sorted(weights), "arrays": c.index}
    with open(os.path.join(OUT_DIR, "fp8.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"fp8 fixtures: {len(c.index)} arrays, {len(c.blob)} bytes")


if __name__ == "__main__":
    main()
