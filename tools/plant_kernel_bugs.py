#!/usr/bin/env python3
"""Plants one bug at a time in a kernel and checks that a test under the emulated GPU catches it.

Dev-time tool (not run by CI): for each plant it edits the kernel source, rebuilds the test binary
(the emulated flavour in build/, or in build-fuzz/ for plants only AddressSanitizer can see), runs the named test in the
forward, reverse and random orders until one fails, then restores the file. Prints a table of
plant -> caught by (test, order) or MISSED. A missed plant means a test is missing.

    tools/plant_kernel_bugs.py            # every plant
    tools/plant_kernel_bugs.py 1 3        # plants 1 and 3
"""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (what, file, old text, new text, build dir, test binary, Catch2 test filter)
PLANTS = [
    ("removed __syncthreads in block_sum (block reduction)", "kernels/common.cuh",
     "  if (lane == 0) scratch[warp] = v;\n  __syncthreads();\n  T total",
     "  if (lane == 0) scratch[warp] = v;\n  T total",
     "build", "test_gpu_kernels_emu", "RMSNorm and LayerNorm match the CPU*"),
    ("off-by-one in the GEMV template's chunk loop (each lane's last chunk skipped)", "kernels/gemv_template.cuh",
     "  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {",
     "  for (int c0 = lane; c0 + 1 < chunks; c0 += 32 * kUnroll) {",
     "build", "test_gpu_kernels_emu", "matmul (GEMV*"),
    ("wrong shuffle offset in warp_sum (offsets 8..1, lanes 16 apart never meet)", "kernels/common.cuh",
     "__device__ __forceinline__ float warp_sum(float v) {\n#pragma unroll\n  for (int offset = 16;",
     "__device__ __forceinline__ float warp_sum(float v) {\n#pragma unroll\n  for (int offset = 8;",
     "build", "test_gpu_kernels_emu", "matmul (GEMV*"),
    ("missing bounds check on a partial key tile in prefill attention", "kernels/attention_prefill.cu",
     "const bool valid = key < key_end;",
     "const bool valid = true;",
     "build-fuzz", "test_gpu_kernels_emu", "attention over a long context*"),
    ("missing row bounds check on the last rows of a GEMV block (partial row group)", "kernels/gemv_template.cuh",
     "        raw[u][r] = c < chunks && row0 + r < w.rows ? F::load(w, row0 + r, c) : make_uint4(0, 0, 0, 0);",
     "        raw[u][r] = c < chunks ? F::load(w, row0 + r, c) : make_uint4(0, 0, 0, 0);",
     "build-fuzz", "test_gpu_kernels_emu", "matmul (GEMV*"),
    ("wrong nibble order in the NF4/FP4 GEMV's word decoder", "kernels/gemv_nf4_fp4.cu",
     "for (int i = 0; i < kSub; ++i) v[i] = s.table[four_bit_word_code(word, i)];",
     "for (int i = 0; i < kSub; ++i) v[i] = s.table[four_bit_word_code(word, i ^ 1)];",
     "build", "test_gpu_formats_emu", "quantized matmul on the GPU*"),
    ("wrong nibble order in W4A16's word decoder", "kernels/gemv_w4a16.cu",
     "for (int i = 0; i < kSub; ++i) v[i] = float(w4a16_word_code(word, i) - c.zero);",
     "for (int i = 0; i < kSub; ++i) v[i] = float(w4a16_word_code(word, i ^ 1) - c.zero);",
     "build", "test_gpu_formats_emu", "quantized matmul on the GPU*"),
    ("removed __syncthreads after loading a K/V tile in prefill attention (race)", "kernels/attention_prefill.cu",
     "      v_tile[j * head_dim + d] = valid ? widen(v_base[size_t(key) * kv_dim + d]) : 0.0f;\n    }\n    __syncthreads();",
     "      v_tile[j * head_dim + d] = valid ? widen(v_base[size_t(key) * kv_dim + d]) : 0.0f;\n    }",
     "build", "test_gpu_kernels_emu", "attention: prefill and decode*"),
    ("top-k radix select reads the wrong digit (shift 8 bits off)", "kernels/sampling.cu",
     "        if ((key & mask) == prefix) bin = int((key >> shift) & 0xffu);",
     "        if ((key & mask) == prefix) bin = int((key >> (shift ^ 8)) & 0xffu);",
     "build", "test_gpu_kernels_emu", "GPU sampling draws the CPU sampler*"),
    ("a thread leaves before the warp reduction (return inside the GEMV epilogue)", "kernels/gemv_template.cuh",
     "    for (int t = 0; t < kTokens; ++t) {\n      const float total = warp_sum(acc[t][r]);",
     "    for (int t = 0; t < kTokens; ++t) {\n      if (lane == 31 && cols == 1024) return;\n      const float total = warp_sum(acc[t][r]);",
     "build", "test_gpu_kernels_emu", "matmul (GEMV*"),
    ("decode attention: the split merge skips the last split", "kernels/attention_decode.cu",
     "    for (int s = 0; s < active; ++s) global_m = fmaxf(global_m, stats[2 * s]);",
     "    for (int s = 0; s + 1 < active; ++s) global_m = fmaxf(global_m, stats[2 * s]);",
     "build", "test_gpu_kernels_emu", "attention: prefill and decode*"),
    ("decode attention: the key's lanes reduce with one shuffle too few", "kernels/attention_decode.cu",
     "      for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(kFullWarp, dot, o);",
     "      for (int o = kLanes / 2; o > 1; o >>= 1) dot += __shfl_xor_sync(kFullWarp, dot, o);",
     "build", "test_gpu_kernels_emu", "attention: prefill and decode*"),
]


def run(cmd, env=None, timeout=None):
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def main():
    chosen = [int(a) for a in sys.argv[1:]] or list(range(1, len(PLANTS) + 1))
    env = dict(os.environ, LOWBIT_TEST_DATA=str(ROOT / "tests/data"), LOWBIT_ROOT=str(ROOT))
    results = []
    for n in chosen:
        what, rel, old, new, build, binary, filt = PLANTS[n - 1]
        path = ROOT / rel
        original = path.read_text()
        if original.count(old) != 1:
            results.append((n, what, "plant text not found once in " + rel))
            continue
        path.write_text(original.replace(old, new))
        try:
            b = run(["ninja", "-C", build, f"tests/{binary}", "lowbit"])
            if b.returncode != 0:
                results.append((n, what, "does not compile: " + b.stdout[-300:]))
                continue
            verdict = "MISSED"
            for order in ("forward", "reverse", "random"):
                e = dict(env, LOWBIT_EMU_ORDER=order, LOWBIT_BIN=str(ROOT / build / "lowbit-emu"),
                         ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1")
                try:
                    r = run([str(ROOT / build / "tests" / binary), filt], env=e, timeout=1200)
                    failed = r.returncode != 0
                    out = r.stdout + r.stderr
                except subprocess.TimeoutExpired:
                    failed, out = True, "timeout"
                if failed:
                    how = "ASan" if "AddressSanitizer" in out else (
                        "emulator fault" if "emulated GPU fault" in out else "assertion")
                    verdict = f"caught by {binary} \"{filt}\" ({order} order, {how})"
                    break
            results.append((n, what, verdict))
        finally:
            path.write_text(original)
    run(["ninja", "-C", "build", "lowbit-emu", "tests/test_gpu_kernels_emu", "tests/test_gpu_formats_emu"])  # leave the builds as the sources are
    for n, what, verdict in results:
        print(f"{n:2d}. {what}: {verdict}")
    return 0 if all(v.startswith("caught") for _, _, v in results) else 1


if __name__ == "__main__":
    sys.exit(main())
