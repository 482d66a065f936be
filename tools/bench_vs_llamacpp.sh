#!/usr/bin/env bash
# Dev-time benchmark (not run by CI): lowbit's CPU backend against llama.cpp on the same cores,
# side by side in one run, on a 2-layer Llama-2-7B-shaped model with every linear (the output
# head too) in the format. Prints the table of docs/cpu-bench.md.
#
#   tools/bench_vs_llamacpp.sh [--pairs N] [--threads T] [--rows bf16:BF16,nf4:Q4_0,...] [--work DIR]
#
# A row is lowbit-format:llama.cpp-type; the format bf16+bf16act runs bf16 with
# --cpu-bf16-activations (the opt-in mode, not the oracle's arithmetic).
#
# 1. Builds llama.cpp from the sdist of the PyPI package llama-cpp-python 0.3.36 (its
#    vendor/llama.cpp; cmake, native CPU flags, llama-bench + llama-quantize) under the work
#    folder (default ${XDG_CACHE_HOME:-~/.cache}/lowbit-vs-llamacpp). Nothing of it enters the repo.
# 2. lowbit make-model --arch llama --preset llama2-7b --layers 2 (random weights, bf16), then
#    llama.cpp's convert_hf_to_gguf.py to a BF16 GGUF and llama-quantize --pure to F16, Q8_0 and
#    Q4_0 (--pure: every tensor in the type, the output head included). The converter does not
#    know the pre-tokenizer of make-model's byte-level BPE vocabulary; text plays no part in a
#    speed test, so it is told "gpt-2".
# 3. N pairs per row: `lowbit bench` (prompt 128, then 128 generated tokens, --keep-head false)
#    and `llama-bench -p 128 -n 128 -r 1`, alternately, the order swapped every pair; prints
#    medians with [min-max] ranges, and the median of the per-pair ratios. The load average is
#    printed before and after: the machine may be shared, so read the ratios.
# Needs: cmake, a C++ compiler, python3, lowbit built in build/ (LOWBIT=path overrides), and a
# python for the converter: CONVERT_PYTHON=path, or a venv made in the work folder with the
# PyPI packages it imports (numpy, torch, transformers, sentencepiece, safetensors, protobuf).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

pairs=4
threads=2
rows="bf16:BF16,bf16:F16,int8:Q8_0,W8A8:Q8_0,nf4:Q4_0,W4A16:Q4_0,bf16+bf16act:BF16"
work="${XDG_CACHE_HOME:-$HOME/.cache}/lowbit-vs-llamacpp"
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) pairs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$pairs" in ''|*[!0-9]*|0) echo "error: --pairs must be a positive whole number, got '$pairs'" >&2; exit 2 ;; esac
case "$threads" in ''|*[!0-9]*|0) echo "error: --threads must be a positive whole number, got '$threads'" >&2; exit 2 ;; esac
lowbit=${LOWBIT:-$root/build/lowbit}
[ -x "$lowbit" ] || { echo "error: $lowbit not found: build lowbit first (meson setup build && ninja -C build)" >&2; exit 1; }
for tool in cmake python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
mkdir -p "$work"
log() { echo "[bench] $*" >&2; }

version=0.3.36
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
bin="$src/build/bin"
py=${CONVERT_PYTHON:-$work/venv/bin/python}
if [ -z "${CONVERT_PYTHON:-}" ] && [ ! -x "$py" ]; then
  log "python venv for the converter: $work/venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q numpy torch transformers sentencepiece safetensors protobuf
fi
if [ ! -f "$src/CMakeLists.txt" ]; then
  log "fetching the llama-cpp-python $version sdist"
  "$py" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$work"
  tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
fi
if [ ! -x "$bin/llama-bench" ] || [ ! -x "$bin/llama-quantize" ]; then
  log "building llama.cpp (native CPU flags) in $src/build"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$work/cmake.log" 2>&1 ||
    { tail -20 "$work/cmake.log" >&2; echo "error: cmake configure of llama.cpp failed (log: $work/cmake.log)" >&2; exit 1; }
  cmake --build "$src/build" -j "$(nproc)" --target llama-bench llama-quantize >"$work/build.log" 2>&1 ||
    { tail -20 "$work/build.log" >&2; echo "error: building llama.cpp failed (log: $work/build.log)" >&2; exit 1; }
fi

model="$work/l7b2"
if [ ! -f "$model/model.safetensors" ]; then
  log "lowbit make-model: 2 layers of Llama-2-7B's shapes in $model"
  "$lowbit" make-model --arch llama --preset llama2-7b --layers 2 --out "$model" --seed 1 >&2
fi
if [ ! -f "$work/l7b2-BF16.gguf" ]; then
  log "convert_hf_to_gguf.py -> BF16"
  "$py" - "$src" "$model" "$work/l7b2-BF16.gguf" <<'PY'
import sys
src, model, out = sys.argv[1:4]
sys.path[:0] = [src, src + "/gguf-py"]
import convert_hf_to_gguf
from conversion import base
# make-model's vocabulary is a byte-level BPE the converter has no hash for; speed does not
# depend on it.
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = ["convert_hf_to_gguf.py", model, "--outtype", "bf16", "--outfile", out]
convert_hf_to_gguf.main()
PY
fi
for type in F16 Q8_0 Q4_0; do
  if [ ! -f "$work/l7b2-$type.gguf" ]; then
    log "llama-quantize --pure -> $type"
    "$bin/llama-quantize" --pure "$work/l7b2-BF16.gguf" "$work/l7b2-$type.gguf" "$type" "$threads" >"$work/quantize-$type.log" 2>&1 ||
      { tail -5 "$work/quantize-$type.log" >&2; echo "error: llama-quantize $type failed" >&2; exit 1; }
  fi
done

python3 - "$lowbit" "$bin/llama-bench" "$model" "$work" "$rows" "$pairs" "$threads" <<'PY'
import json, os, statistics, subprocess, sys
lowbit, llama_bench, model, work, rows, pairs, threads = sys.argv[1:8]
pairs, threads = int(pairs), int(threads)
rows = [tuple(r.split(":")) for r in rows.split(",")]
for fmt, typ in rows:
    if not os.path.exists(f"{work}/l7b2-{typ}.gguf"):
        sys.exit(f"error: no GGUF for llama.cpp type '{typ}' (have BF16, F16, Q8_0, Q4_0)")

def run_lowbit(fmt):
    extra = []
    if fmt.endswith("+bf16act"):
        fmt, extra = fmt[: -len("+bf16act")], ["--cpu-bf16-activations"]
    out = subprocess.run([lowbit, "bench", "-m", model, "--device", "cpu", "--quant", fmt, "--prompt-len", "128",
                          "--gen", "128", "--repeats", "1", "--ctx", "512", "--keep-head", "false", "-t", str(threads),
                          "--json"] + extra, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)["rows"][0]
    return r["decode_tokens_per_s"], r["prefill_tokens_per_s"]

def run_llama(typ):
    out = subprocess.run([llama_bench, "-m", f"{work}/l7b2-{typ}.gguf", "-p", "128", "-n", "128", "-t", str(threads),
                          "-r", "1", "-o", "json"], check=True, capture_output=True, text=True).stdout
    tests = json.loads(out)
    tg = next(t["avg_ts"] for t in tests if t["n_gen"] > 0)
    pp = next(t["avg_ts"] for t in tests if t["n_prompt"] > 0)
    return tg, pp

def load():
    return os.getloadavg()[0]

print(f"load average before: {load():.2f}", file=sys.stderr)
results = {r: {"lb": [], "ll": []} for r in rows}
for p in range(pairs):
    for fmt, typ in rows:
        order = [("lb", lambda: run_lowbit(fmt)), ("ll", lambda: run_llama(typ))]
        if p % 2 == 1:
            order.reverse()
        for who, fn in order:
            results[(fmt, typ)][who].append(fn())
        lb, ll = results[(fmt, typ)]["lb"][-1], results[(fmt, typ)]["ll"][-1]
        print(f"pair {p + 1}/{pairs} {fmt} vs {typ}: decode {lb[0]:.1f} vs {ll[0]:.1f}, prompt {lb[1]:.1f} vs {ll[1]:.1f} tok/s",
              file=sys.stderr)
print(f"load average after: {load():.2f}", file=sys.stderr)

def med(v):
    return statistics.median(v)

def span(v):
    return f"{min(v):.1f}-{max(v):.1f}"

print(f"\n{threads} threads, {pairs} interleaved pairs per row (order swapped each pair); medians [ranges]; "
      "ratio = median of the per-pair ratios [range]\n")
print("| lowbit format vs llama.cpp type | decode tok/s, lowbit vs llama.cpp | decode ratio | prompt (128) tok/s, lowbit vs llama.cpp | prompt ratio |")
print("|---|---|---|---|---|")
for fmt, typ in rows:
    lb, ll = results[(fmt, typ)]["lb"], results[(fmt, typ)]["ll"]
    cells = []
    for k in (0, 1):
        a, b = [x[k] for x in lb], [x[k] for x in ll]
        ratios = [x / y for x, y in zip(a, b)]
        cells.append(f"{med(a):.1f} [{span(a)}] vs {med(b):.1f} [{span(b)}]")
        cells.append(f"{med(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
    print(f"| {fmt} vs {typ} | " + " | ".join(cells) + " |")
PY
