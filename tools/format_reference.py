"""Reference models for every lowbit weight format, as transformers + bitsandbytes users run them.

Used by tools/make_fixture_models.py (--quant-goldens) to make the model-level goldens that
tests/test_quant_model.cpp holds lowbit to. Given a transformers model loaded in fp32, each
`reference_model(model, fmt)` returns a copy whose decoder linears carry the format:

  * every nn.Linear / FalconLinear weight is quantized ON ITS OWN, in the checkpoint's layout
    (q_proj, k_proj, v_proj, gate_proj, up_proj, Falcon's fused query_key_value as stored), as
    transformers' bitsandbytes integration replaces each nn.Linear;
  * nf4 / fp4 (-dq): bitsandbytes.functional.quantize_4bit(W, blocksize=64, quant_type,
    compress_statistics) -- the shipped quantizer (its CPU path: the torch "default" kernel for
    the codes, libbitsandbytes_cpu's quantize_blockwise for the -dq absmax) -- dequantized with
    bitsandbytes' pure-torch path (backends/default/ops.py _dequantize_4bit_compute and
    _dequantize_blockwise_compute, called uncompiled): bitsandbytes 0.50.2's native CPU
    dequantize_4bit is wrong for 96- and 160-column tensors and its AVX512 repack crashes when
    in_features % 64 != 0, so neither is used. The layer then runs F.linear in fp32 on the
    dequantized weight (bnb's compute dtype fp32);
  * int8: LLM.int8 as bitsandbytes.nn.Linear8bitLt runs in an fp16 model: CB, SCB =
    int8_vectorwise_quant(W.half()), then bnb.matmul(x.half(), CB, threshold 6.0, bias=b.half()),
    whose fp16 output is widened back to fp32;
  * bf16: W.to(bfloat16) widened back to fp32;
  * W4A16 and W8A8 have no library reference; they are written here from their definitions
    (lowbit's src/formats/format_w4a16.cpp and format_w8a8.cpp) in numpy fp32, independently of
    lowbit's code;
  * W8A8-fp8: llm-compressor's FP8_DYNAMIC scheme, the weights and the per-token activations
    quantized by compressed-tensors itself (calculate_qparams on each row's min/max, quantize to
    float8_e4m3fn), the e4m3 products summed exactly (float64: exact for these shapes) and
    rounded once to fp32, times fp32(w_scale * x_scale) (format_w8a8_fp8.cpp's definition).

Everything outside the linears stays as lowbit runs it: fp32 norms, fp32 attention; the token
embedding and the output head rounded to bf16 under every format but f32 (lowbit's defaults:
embeddings bf16, --keep-head true).
"""
import copy

import numpy as np
import torch

FORMATS = ["f32", "bf16", "int8", "nf4", "fp4", "nf4-dq", "fp4-dq", "W4A16", "W8A8", "W8A8-fp8"]
BLOCK_SIZE = 64
INT8_THRESHOLD = 6.0
W4_GROUP = 128


def _bnb():
    import bitsandbytes  # noqa: F401  (imported lazily: only the quantized goldens need it)
    import bitsandbytes.functional as F
    from bitsandbytes.backends.default import ops as default_ops
    from bitsandbytes.backends.utils import _get_4bit_code
    return bitsandbytes, F, default_ops, _get_4bit_code


def _uncompiled(fn):
    return getattr(fn, "__wrapped__", fn)  # bnb wraps these in torch.compile; use the plain torch


def four_bit_dequantized(w, quant_type, double_quant):
    """quantize_4bit on the fp32 weight as stored, dequantized by bnb's pure-torch path."""
    _, F, default_ops, get_code = _bnb()
    packed, state = F.quantize_4bit(w.float().contiguous(), blocksize=BLOCK_SIZE, quant_type=quant_type,
                                    compress_statistics=double_quant)
    absmax = state.absmax
    if state.nested:
        nested = state.state2
        absmax = _uncompiled(default_ops._dequantize_blockwise_compute)(
            absmax.reshape(-1), nested.absmax, nested.code, nested.blocksize, torch.float32)
        absmax = absmax + state.offset
    code = get_code(quant_type, packed.device)
    return _uncompiled(default_ops._dequantize_4bit_compute)(
        packed.view(torch.uint8).reshape(-1), absmax, code, BLOCK_SIZE, tuple(w.shape), torch.float32)


class Int8Linear(torch.nn.Module):
    """Linear8bitLt's forward in an fp16 model (has_fp16_weights=False, threshold 6.0)."""

    def __init__(self, weight, bias):
        super().__init__()
        bnb, F, _, _ = _bnb()
        self.bnb = bnb
        self.CB, self.SCB, _ = F.int8_vectorwise_quant(weight.detach().to(torch.float16).clone())
        self.bias16 = None if bias is None else bias.detach().to(torch.float16)

    def forward(self, x):
        from bitsandbytes.autograd._functions import MatmulLtState
        state = MatmulLtState()
        state.is_training = False
        state.has_fp16_weights = False
        state.CB, state.SCB, state.threshold = self.CB, self.SCB, INT8_THRESHOLD
        shape = x.shape
        with torch.no_grad():
            out = self.bnb.matmul(x.reshape(-1, shape[-1]).to(torch.float16), self.CB, state=state,
                                  threshold=INT8_THRESHOLD, bias=self.bias16)
        return out.float().reshape(*shape[:-1], -1)


def _f16(a):
    return a.astype(np.float16).astype(np.float32)


def w4a16_dequantized(w, symmetric=False):
    """RTN int4, groups of 128 along each row, fp16 scales (format_w4a16.cpp's definition)."""
    w = w.detach().float().numpy()
    rows, cols = w.shape
    out = np.zeros_like(w)
    for g0 in range(0, cols, W4_GROUP):
        g = w[:, g0:g0 + W4_GROUP]
        if symmetric:
            scale = _f16(np.abs(g).max(axis=1) / np.float32(7))
            zero = np.full(rows, 8, dtype=np.float32)
        else:
            lo = np.minimum(g.min(axis=1), np.float32(0))
            hi = np.maximum(g.max(axis=1), np.float32(0))
            scale = _f16((hi - lo) / np.float32(15))
            with np.errstate(divide="ignore", invalid="ignore"):
                zero = np.where(scale > 0, np.clip(np.rint(-lo / scale), 0, 15), 0).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(scale[:, None] > 0, np.clip(np.rint(g / scale[:, None]) + zero[:, None], 0, 15),
                         zero[:, None])
        out[:, g0:g0 + W4_GROUP] = (q - zero[:, None]) * scale[:, None]
    return torch.from_numpy(out)


class W4A16Linear(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight_dq = w4a16_dequantized(weight)
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x):
        x16 = x.to(torch.float16).float()  # 16-bit activations, fp32 accumulation
        return torch.nn.functional.linear(x16, self.weight_dq, self.bias)


def _int8_symmetric(a):
    """Per row: scale = absmax / 127, q = clip(rint(a / scale), -128, 127) (0 for a zero row)."""
    scale = (np.abs(a).max(axis=1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scale[:, None] > 0, np.clip(np.rint(a / scale[:, None]), -128, 127), 0)
    return q.astype(np.int64), scale


class W8A8Linear(torch.nn.Module):
    """int8 weights per output channel, int8 activations per token, int32 sums (format_w8a8.cpp)."""

    def __init__(self, weight, bias):
        super().__init__()
        self.wq, self.w_scale = _int8_symmetric(weight.detach().float().numpy())
        self.bias = None if bias is None else bias.detach().float().numpy()

    def forward(self, x):
        shape = x.shape
        a = x.detach().reshape(-1, shape[-1]).float().numpy()
        xq, x_scale = _int8_symmetric(a)
        acc = (xq @ self.wq.T).astype(np.float32)  # exact: |sums| < 2^24 for these shapes
        y = acc * (self.w_scale[None, :] * x_scale[:, None])
        if self.bias is not None:
            y = y + self.bias[None, :]
        return torch.from_numpy(y.astype(np.float32)).reshape(*shape[:-1], -1)


class W8A8Fp8Linear(torch.nn.Module):
    """FP8_DYNAMIC: e4m3 weights per output channel, e4m3 activations per token (compressed-tensors
    0.20's quantizers), exact sums of the e4m3 products rounded once to fp32 (format_w8a8_fp8.cpp)."""

    def __init__(self, weight, bias):
        super().__init__()
        from compressed_tensors.quantization import preset_name_to_scheme
        from compressed_tensors.quantization.lifecycle.forward import quantize
        from compressed_tensors.quantization.utils import calculate_qparams
        self.scheme = preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])
        self.quantize = quantize
        w = weight.detach().float()
        self.w_scale, zero = calculate_qparams(w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True),
                                               self.scheme.weights)
        self.wq = quantize(w, self.w_scale, zero, self.scheme.weights, dtype=torch.float8_e4m3fn).double()
        self.w_scale = self.w_scale.reshape(1, -1)
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x):
        from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp
        shape = x.shape
        a = x.detach().reshape(1, -1, shape[-1]).float()
        x_scale, zero = compute_dynamic_scales_and_zp(a, self.scheme.input_activations, module=None)
        xq = self.quantize(a, x_scale, zero, self.scheme.input_activations, dtype=torch.float8_e4m3fn)[0]
        acc = (xq.double() @ self.wq.T).float()  # exact in float64, then one rounding to fp32
        y = acc * (self.w_scale * x_scale.reshape(-1, 1))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], -1)


def decoder_linears(model):
    """Every linear inside the decoder layers, of any format (the replacements below included)."""
    layers = model.model.layers if hasattr(model, "model") else model.transformer.h
    kinds = (torch.nn.Linear, Int8Linear, W4A16Linear, W8A8Linear, W8A8Fp8Linear)
    return [m for layer in layers for m in layer.modules() if isinstance(m, kinds)]


def _linears(model):
    """(parent, attribute name, module) of every linear inside the decoder layers."""
    layers = model.model.layers if hasattr(model, "model") else model.transformer.h
    found = []
    for layer in layers:
        for parent in layer.modules():
            for name, child in parent.named_children():
                if isinstance(child, torch.nn.Linear):
                    found.append((parent, name, child))
    return found


def reference_model(model, fmt):
    """A copy of `model` (fp32, eval) running format `fmt` as described in the module docstring."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        if fmt != "f32":
            emb = m.get_input_embeddings()
            head = m.get_output_embeddings()
            tied = head.weight.data_ptr() == emb.weight.data_ptr()
            emb.weight.copy_(emb.weight.to(torch.bfloat16).float())
            if not tied:
                head.weight.copy_(head.weight.to(torch.bfloat16).float())
        for parent, name, lin in _linears(m):
            w, b = lin.weight.detach(), lin.bias
            if fmt == "f32":
                continue
            if fmt == "bf16":
                lin.weight.copy_(w.to(torch.bfloat16).float())
            elif fmt in ("nf4", "fp4", "nf4-dq", "fp4-dq"):
                lin.weight.copy_(four_bit_dequantized(w, fmt[:3], fmt.endswith("-dq")))
            elif fmt == "int8":
                setattr(parent, name, Int8Linear(w, b))
            elif fmt == "W4A16":
                setattr(parent, name, W4A16Linear(w, b))
            elif fmt == "W8A8":
                setattr(parent, name, W8A8Linear(w, b))
            elif fmt == "W8A8-fp8":
                setattr(parent, name, W8A8Fp8Linear(w, b))
            else:
                raise ValueError(f"unknown format {fmt}")
    m.eval()
    return m
