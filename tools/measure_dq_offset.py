#!/usr/bin/env python3
"""What torch's thread count does to bitsandbytes' double-quantization offset on a large tensor.

bitsandbytes' quantize_4bit(compress_statistics=True) takes offset = absmax.mean() in torch. On
the CPU torch splits a reduction of more than 32,768 values across its threads, so the sum's
order -- and the offset's last bit -- depends on torch.get_num_threads(). lowbit reproduces the
single-threaded order (src/formats/format_nf4_fp4.cpp, torch_mean), which is the only one that
does not depend on the machine. This script quantizes one 4096 x 4096 weight (262,144 blocks of
64) with 1, 2 and 4 torch threads (8 and 16 give what 4 gives here) and reports, against the single-threaded result:
the offset (in ulps), the 8-bit absmax codes and second-level scales that change, and what that
does to the dequantized weights (count, largest absolute and relative change).

It also prints the single-threaded offset of the deterministic absmax vector that
tests/test_formats.cpp rebuilds ("double-quant offset of 262,144 blocks ..."), the value that
test pins.

Run: python3 tools/measure_dq_offset.py   (torch, bitsandbytes 0.50.2; a few seconds per setting)
"""
import struct
import sys

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.backends.default import ops as default_ops
from bitsandbytes.backends.utils import _get_4bit_code


def bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def dequantized(packed, state, shape, quant_type):
    nested = state.state2
    absmax = getattr(default_ops._dequantize_blockwise_compute, "__wrapped__", default_ops._dequantize_blockwise_compute)(
        state.absmax.reshape(-1), nested.absmax, nested.code, nested.blocksize, torch.float32) + state.offset
    code = _get_4bit_code(quant_type, packed.device)
    fn = getattr(default_ops._dequantize_4bit_compute, "__wrapped__", default_ops._dequantize_4bit_compute)
    return fn(packed.view(torch.uint8).reshape(-1), absmax, code, 64, shape, torch.float32), absmax


def deterministic_absmax(n):
    """The vector tests/test_formats.cpp builds: ((i * 2654435761) mod 1000003 + 1) / 1e6 in fp32."""
    i = np.arange(n, dtype=np.uint64)
    return ((((i * np.uint64(2654435761)) % np.uint64(1000003)) + np.uint64(1)).astype(np.float32)
            / np.float32(1e6)).astype(np.float32)


def main():
    print(f"torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, "
          f"default threads {torch.get_num_threads()}")
    torch.set_num_threads(1)
    v = torch.from_numpy(deterministic_absmax(262144))
    m = v.mean()
    print(f"test vector: single-threaded mean {float(m):.9g} bits 0x{bits(m):08x}")
    for threads in (2, 4, 8, 16):
        torch.set_num_threads(threads)
        mt = v.mean()
        print(f"  {threads:2d} threads: 0x{bits(mt):08x} ({bits(mt) - bits(m):+d} ulp)")

    g = torch.Generator().manual_seed(7)
    w = torch.randn(4096, 4096, generator=g) * 0.02
    for quant_type in ("nf4", "fp4"):
        results = {}
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            packed, state = F.quantize_4bit(w, blocksize=64, quant_type=quant_type, compress_statistics=True)
            torch.set_num_threads(1)
            deq, absmax = dequantized(packed, state, w.shape, quant_type)
            results[threads] = (packed, state, deq, absmax)
        p1, s1, d1, a1 = results[1]
        print(f"{quant_type}-dq, 4096 x 4096 (262,144 absmax values), against 1 thread: "
              f"offset {float(s1.offset):.9g}")
        for threads in (2, 4):
            p, s, d, a = results[threads]
            assert torch.equal(p, p1), "the 4-bit codes never depend on the offset"
            ulps = bits(s.offset) - bits(s1.offset)
            codes = int((s.absmax != s1.absmax).sum())
            scales2 = int((s.state2.absmax != s1.state2.absmax).sum())
            blocks = int((a != a1).sum())
            changed = d != d1
            diff = (d - d1).abs()
            rel = (diff / d1.abs().clamp(min=1e-30))[changed]
            # Blocks whose 8-bit code stayed: their absmax moves by the offset's ulp and the
            # rescaled second-level scale; blocks whose code flipped move by a dynamic-map step.
            same_code = (s.absmax == s1.absmax).repeat_interleave(64).reshape(d1.shape)
            rel_kept = (diff / d1.abs().clamp(min=1e-30))[changed & same_code]
            rel_flip = (diff / d1.abs().clamp(min=1e-30))[changed & ~same_code]
            print(f"  {threads:2d} threads: offset {ulps:+d} ulp, scale codes {codes}/{s1.absmax.numel()}, "
                  f"absmax2 {scales2}/{s1.state2.absmax.numel()}, absmax {blocks}/{a1.numel()}, "
                  f"dequantized weights {int(changed.sum())}/{d1.numel()}, "
                  f"max |change| {float(diff.max()):.3g} (weight std {float(w.std()):.3g}); relative change: "
                  f"blocks whose code stayed median {float(rel_kept.median()) if rel_kept.numel() else 0:.3g} "
                  f"max {float(rel_kept.max()) if rel_kept.numel() else 0:.3g}, "
                  f"the {codes} blocks whose code flipped max {float(rel_flip.max()) if rel_flip.numel() else 0:.3g}; "
                  f"RMS change / RMS weight {float(diff.pow(2).mean().sqrt() / d1.pow(2).mean().sqrt()):.3g}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
