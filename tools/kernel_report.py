#!/usr/bin/env python3
"""Static report of the CUDA kernels as the compiler builds them (dev-time tool; not part of the
build or of CI, needs only nvcc, and nvdisasm for SASS).

Compiles every kernels/*.cu for one architecture with the flags of kernels/meson.build, one file
at a time, and prints two markdown tables:

 1. every kernel instantiation: registers, spill stores / loads, stack frame, static shared
    memory and barriers, from ptxas' `-Xptxas -v` report (names demangled with c++filt and
    shortened to their template form), spills flagged;
 2. the inner loop of every decode GEMV at batch 1 (kernels in gemv*.cu whose name contains
    "gemv" and whose first integer template argument, the token count, is 1): the width of its
    global weight loads and its instructions per weight byte.

Table 2 reads SASS (nvdisasm on the cubin) when an nvdisasm can be found, else PTX (and says
so). Definitions: a loop is a back edge of the control-flow graph (a branch to a block on the
depth-first stack: the backward branch and the label it jumps to) with its natural loop (the
blocks that reach that branch without passing the label; for every fast path this is exactly
the instructions from the label to the branch, and the table marks any loop where it is not).
A load is a weight load when one of the source lines it was compiled from (line info from
-lineinfo, inlined-at frames included) belongs to a statement naming the weight plane `codes`
(--weight-pattern changes that). The inner loop is the innermost loop holding a weight load (if
several, the one loading the most weight bytes). For it the table gives every instruction of its
body, and the longest path from the label to the backward branch with back edges left out: the
most instructions one pass can execute, each nested loop's body counted once (nested loops are
listed with their source line, since they run more than once). Loads are counted on that path;
instructions per weight byte = longest path / the weight bytes loaded on it. All figures are
static, from the compiler: nothing here ran on a GPU.

    python3 tools/kernel_report.py                    # sm_90a, every kernels/*.cu
    python3 tools/kernel_report.py --only gemv --out /tmp/report.md
    NVDISASM=/path/to/nvdisasm python3 tools/kernel_report.py

nvdisasm is not in every CUDA toolkit; PyPI's nvidia-cuda-nvdisasm wheel has it (install it in a
venv outside the repository, e.g. ~/.cache/lowbit-kernel-tools; the script looks there, in the
running interpreter's site-packages, next to nvcc, on PATH and in $NVDISASM).
"""
import argparse
import datetime
import glob
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- tools ---------------------------------------------------------------------------------------

def find_nvcc():
    for cand in (os.environ.get("NVCC"),
                 os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else None,
                 shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    sys.exit("kernel_report: nvcc not found (set NVCC or CUDA_HOME)")


def find_nvdisasm(nvcc, explicit):
    cands = [explicit, os.environ.get("NVDISASM"), os.path.join(os.path.dirname(nvcc), "nvdisasm"),
             shutil.which("nvdisasm")]
    sites = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    sites += glob.glob(os.path.expanduser("~/.cache/lowbit-kernel-tools/lib/python3*/site-packages"))
    for s in sites:
        if s and os.path.isdir(s):
            cands += sorted(glob.glob(os.path.join(s, "nvidia", "cu*", "bin", "nvdisasm")), reverse=True)
            cands += glob.glob(os.path.join(s, "nvidia", "cuda_nvdisasm", "bin", "nvdisasm"))
    for cand in cands:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def tool_version(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    m = re.search(r"release [^\n]*", out)
    return m.group(0) if m else out.strip().splitlines()[-1] if out.strip() else "?"


def nvcc_flags(arch):
    # kernels/meson.build's cuda_args for one architecture, the include directories of the
    # top-level meson.build ('.', 'src') and of meson's own target (kernels/), -DNDEBUG of the
    # release build. Host-only flags (-Xcompiler) do not change device code and are left out.
    return ["-DNDEBUG", "-I" + ROOT, "-I" + os.path.join(ROOT, "src"), "-I" + os.path.join(ROOT, "kernels"),
            "-gencode", "arch=compute_%s,code=sm_%s" % (arch, arch), "-O3", "--expt-relaxed-constexpr",
            "-std=c++20", "-lineinfo"]


# --- names ---------------------------------------------------------------------------------------

def demangle(names):
    names = list(names)
    if not names:
        return {}
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True).stdout
    lines = out.splitlines()
    return {n: (lines[i] if i < len(lines) else n) for i, n in enumerate(names)}


def shorten(demangled):
    """`void lowbit::kernels::gemv::f<lowbit::kernels::(anonymous namespace)::X<true>, 1, 4>(args)`
    -> `f<X<true>, 1, 4>`."""
    s = demangled.strip()
    if s.endswith(")"):  # drop the parameter list: the last top-level (...)
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(s[i], 0)
            if depth == 0:
                s = s[:i]
                break
    s = re.sub(r"^void\s+", "", s)
    s = s.replace("(anonymous namespace)::", "")
    s = re.sub(r"\b[A-Za-z_]\w*::", "", s)
    return s


def template_args(short):
    """Top-level template arguments of `name<a, b<c, d>, e>` as strings."""
    start = short.find("<")
    if start < 0 or not short.endswith(">"):
        return []
    args, depth, cur = [], 0, ""
    for ch in short[start + 1:-1]:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    args.append(cur.strip())
    return args


def token_count(short):
    """The first integer template argument (the token count of every GEMV template)."""
    for a in template_args(short):
        if re.fullmatch(r"-?\d+", a):
            return int(a)
    return None


def sort_key(short):
    base = short.split("<", 1)[0]
    return (base, [(0, int(a)) if re.fullmatch(r"-?\d+", a) else (1, a) for a in template_args(short)])


# Which format each decode GEMV serves (display only; an unknown kernel shows "?").
FORMATS = [
    (r"^gemv_fast_kernel<F32Format,", "f32", "fast"),
    (r"^gemv_fast_kernel<Bf16Format,", "bf16", "fast"),
    (r"^gemv_fast_kernel<FourBitFormat<false>,", "nf4, fp4", "fast"),
    (r"^gemv_fast_kernel<FourBitFormat<true>,", "nf4-dq, fp4-dq", "fast"),
    (r"^gemv_fast_kernel<W4a16Format,", "W4A16", "fast"),
    (r"^gemv_slow_kernel<F32Format,", "f32", "fallback"),
    (r"^gemv_slow_kernel<Bf16Format,", "bf16", "fallback"),
    (r"^gemv_slow_kernel<FourBitFormat<false>,", "nf4, fp4", "fallback"),
    (r"^gemv_slow_kernel<FourBitFormat<true>,", "nf4-dq, fp4-dq", "fallback"),
    (r"^gemv_slow_kernel<W4a16Format,", "W4A16", "fallback"),
    (r"^gemv_int8_kernel<\d+, \d+, true, true>", "int8 (LLM.int8)", "fast"),
    (r"^gemv_int8_kernel<\d+, \d+, false, true>", "W8A8", "fast"),
    (r"^gemv_int8_kernel<\d+, \d+, true, false>", "int8 (LLM.int8)", "fallback"),
    (r"^gemv_int8_kernel<\d+, \d+, false, false>", "W8A8", "fallback"),
    (r"^gemv_fp8_kernel<\d+, \d+, true>", "W8A8-fp8", "fast"),
    (r"^gemv_fp8_kernel<\d+, \d+, false>", "W8A8-fp8", "fallback"),
]


def format_of(short):
    for pattern, fmt, path in FORMATS:
        if re.search(pattern, short):
            return fmt, path
    return "?", ("fallback" if "slow" in short else "?")


# --- ptxas -v ------------------------------------------------------------------------------------

def parse_ptxas(text):
    """{mangled: {regs, barriers, stack, spill_st, spill_ld, smem, cstack, entry}} from ptxas -v."""
    funcs, entries, cur = {}, set(), None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            entries.add(m.group(1))
            continue
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            cur = funcs.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            for key, pat in (("barriers", r"used (\d+) barriers"), ("smem", r"(\d+) bytes smem"),
                             ("cstack", r"(\d+) bytes cumulative stack size")):
                mm = re.search(pat, line)
                cur[key] = int(mm.group(1)) if mm else 0
            cur = None
    for name, f in funcs.items():
        f["entry"] = name in entries
    return funcs


# --- disassembly ---------------------------------------------------------------------------------

class Instr:
    __slots__ = ("text", "opcode", "pred", "target", "locs", "kind", "width")

    def __init__(self, text, opcode, pred, target, locs, kind, width):
        self.text, self.opcode, self.pred, self.target, self.locs = text, opcode, pred, target, locs
        self.kind, self.width = kind, width  # kind: global/shared/const/local/store-local/None


def sass_load(opcode):
    op = opcode.split(".")
    if op[0] not in ("LDG", "LDS", "LDC", "LDL", "STL", "LD"):
        return None, 0
    kind = {"LDG": "global", "LDS": "shared", "LDC": "const", "LDL": "local", "STL": "spill-store",
            "LD": "generic"}[op[0]]
    width = 32
    for part in op[1:]:
        if part in ("128", "64"):
            width = int(part)
        elif part in ("U8", "S8"):
            width = 8
        elif part in ("U16", "S16"):
            width = 16
    return kind, width


def parse_sass(text):
    """{mangled: [Instr]} plus {mangled: {label: index}} from `nvdisasm -c -gi`."""
    funcs, labels = {}, {}
    cur, name = None, None
    locs, pending, fresh = (), [], False
    pending_labels = []
    for line in text.splitlines():
        m = re.match(r"^\.text\.(\S+):\s*$", line)
        if m:
            name = m.group(1)
            cur = funcs.setdefault(name, [])
            labels.setdefault(name, {})
            locs, pending, fresh, pending_labels = (), [], False, []
            continue
        if cur is None:
            continue
        if line.lstrip().startswith("//##"):
            if not fresh:
                pending, fresh = [], True
            pending += [(os.path.normpath(f), int(n)) for f, n in re.findall(r'"([^"]+)", line (\d+)', line)]
            continue
        m = re.match(r"^(\.L_x_\d+):", line)
        if m:
            pending_labels.append(m.group(1))
            continue
        m = re.match(r"^\s*/\*[0-9a-f]+\*/\s+(.*?)\s*;", line)
        if not m:
            continue
        if fresh:
            locs, fresh = tuple(pending), False
        body = m.group(1)
        pred = None
        pm = re.match(r"^(@!?U?P\w+)\s+(.*)$", body)
        if pm:
            pred, body = pm.group(1), pm.group(2)
        opcode = body.split()[0] if body.split() else ""
        tm = re.search(r"`\((\.L_x_\d+)\)", body)
        target = tm.group(1) if tm and opcode.startswith(("BRA", "JMP")) else None
        kind, width = sass_load(opcode)
        for lab in pending_labels:
            labels[name][lab] = len(cur)
        pending_labels = []
        cur.append(Instr(body, opcode, pred, target, locs, kind, width))
    return funcs, labels


PTX_TYPE_BITS = {"8": 8, "16": 16, "32": 32, "64": 64, "128": 128}


def ptx_load(opcode):
    op = opcode.split(".")
    if op[0] != "ld":
        return None, 0
    space = next((p for p in op[1:] if p in ("global", "shared", "const", "local", "param")), "generic")
    if space == "param":
        return None, 0
    vec = 1
    for p in op[1:]:
        if p in ("v2", "v4", "v8"):
            vec = int(p[1:])
    bits = 32
    m = re.match(r"^[a-z]+(\d+)$", op[-1])
    if m and m.group(1) in PTX_TYPE_BITS:
        bits = int(m.group(1))
    kind = {"local": "local"}.get(space, space)
    return kind, vec * bits


def parse_ptx(text):
    files = {int(n): os.path.normpath(p) for n, p in re.findall(r'^\s*\.file\s+(\d+)\s+"([^"]+)"', text, re.M)}
    funcs, labels = {}, {}
    cur, name, locs = None, None, ()
    for line in text.splitlines():
        m = re.match(r"^(?:\.(?:visible|weak|extern)\s+)?\.entry\s+([\w$]+)\s*\(", line) or \
            re.match(r"^(?:\.(?:visible|weak|extern)\s+)?\.func\s+(?:\([^)]*\)\s*)?([\w$]+)\s*\(", line)
        if m:
            name = m.group(1)
            cur, locs = funcs.setdefault(name, []), ()
            labels.setdefault(name, {})
            continue
        if cur is None:
            continue
        s = line.strip()
        if line.startswith("}"):
            cur = None
            continue
        if s.startswith(".loc"):
            m = re.match(r"\.loc\s+(\d+)\s+(\d+)\s+\d+(.*)$", s)
            if m:
                chain = [(files.get(int(m.group(1)), "?"), int(m.group(2)))]
                im = re.search(r"inlined_at\s+(\d+)\s+(\d+)", m.group(3))
                if im:
                    chain.append((files.get(int(im.group(1)), "?"), int(im.group(2))))
                locs = tuple(c for c in chain if c[1] > 0)
            continue
        m = re.match(r"^(\$L__\w+):", s)
        if m:
            labels[name][m.group(1)] = len(cur)
            continue
        if not s.endswith(";") or s.startswith((".", "//", "{", "}")):
            continue
        body = s[:-1].strip()
        pred = None
        pm = re.match(r"^(@!?%\w+)\s+(.*)$", body)
        if pm:
            pred, body = pm.group(1), pm.group(2)
        opcode = body.split()[0]
        target = None
        if opcode.startswith("bra"):
            tm = re.search(r"(\$L__\w+)", body)
            target = tm.group(1) if tm else None
        kind, width = ptx_load(opcode)
        cur.append(Instr(body, opcode, pred, target, locs, kind, width))
    return funcs, labels


# --- source statements ---------------------------------------------------------------------------

_sources = {}


def source_lines(path):
    if path not in _sources:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                _sources[path] = f.read().splitlines()
        except OSError:
            _sources[path] = []
    return _sources[path]


def code_part(line):
    return line.split("//", 1)[0].rstrip()


def statement(path, lineno):
    """The C++ statement around a line: back to the previous line ending a statement or opening a
    block, forward to the line ending with `;` (at most 6 lines each way)."""
    lines = source_lines(path)
    if not 1 <= lineno <= len(lines):
        return ""
    i = lineno - 1
    start = i
    while start > 0 and i - start < 6:
        prev = code_part(lines[start - 1]).strip()
        if not prev or prev.endswith((";", "{", "}")) or prev.startswith("#"):
            break
        start -= 1
    end = i
    while end < len(lines) - 1 and end - i < 6 and not code_part(lines[end]).strip().endswith((";", "{", "}")):
        end += 1
    return " ".join(code_part(l) for l in lines[start:end + 1])


def is_weight_load(ins, weight_re):
    return ins.kind in ("global", "generic") and any(weight_re.search(statement(f, n)) for f, n in ins.locs)


# --- loops ---------------------------------------------------------------------------------------

EXITS = ("EXIT", "RET", "exit", "ret", "BRX", "JMX", "trap")


class Cfg:
    """Basic blocks of one function, their successors, the back edges of a depth-first walk from
    the entry, and the natural loop of every loop head."""

    def __init__(self, instrs, labels):
        n = len(instrs)
        self.instrs = instrs
        leaders = {0} if n else set()
        for i, ins in enumerate(instrs):
            if ins.target in labels:
                leaders.add(labels[ins.target])
            if (ins.target is not None or ins.opcode.startswith(EXITS)) and i + 1 < n:
                leaders.add(i + 1)
        starts = sorted(l for l in leaders if l < n)
        self.blocks = [(s, starts[k + 1] if k + 1 < len(starts) else n) for k, s in enumerate(starts)]
        self.block_of = {}
        for b, (s, e) in enumerate(self.blocks):
            for i in range(s, e):
                self.block_of[i] = b
        self.succ = {b: [] for b in range(len(self.blocks))}
        for b, (s, e) in enumerate(self.blocks):
            last = instrs[e - 1]
            if last.target in labels and labels[last.target] < n:
                self.succ[b].append(self.block_of[labels[last.target]])
            ends = last.pred is None and (last.target is not None or last.opcode.startswith(EXITS))
            if not ends and e < n and self.block_of[e] not in self.succ[b]:
                self.succ[b].append(self.block_of[e])
        self.pred = {b: [] for b in self.succ}
        for b, ss in self.succ.items():
            for t in ss:
                self.pred[t].append(b)
        # Back edges: edges into a block on the depth-first stack.
        self.back = set()
        if self.blocks:
            state, stack = {0: 1}, [(0, iter(self.succ[0]))]
            while stack:
                b, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[b] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    self.back.add((b, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(self.succ[nxt])))
        self.loops = {}  # head block -> (set of blocks, latch blocks)
        for latch, head in self.back:
            body, latches = self.loops.get(head, ({head}, set()))
            latches.add(latch)
            work = [latch] if latch != head else []  # the walk stops at the head
            body.add(latch)
            while work:
                b = work.pop()
                for p in self.pred[b]:
                    if p not in body:
                        body.add(p)
                        work.append(p)
            self.loops[head] = (body, latches)

    def indices(self, body):
        return [i for b in sorted(body) for i in range(*self.blocks[b])]

    def is_range(self, body):
        """True when the loop is exactly the instructions from its label to its backward branch."""
        idx = self.indices(body)
        return idx == list(range(idx[0], idx[-1] + 1))

    def longest_path(self, head, body):
        """The path from the head to a latch with the most instructions, back edges left out (so a
        nested loop counts once): (instruction indices on it)."""
        order, seen = [], set()
        stack = [(head, iter(self.succ[head]))]
        seen.add(head)
        while stack:  # reverse post-order of the loop's acyclic part
            b, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                order.append(b)
                stack.pop()
            elif nxt in body and nxt not in seen and (b, nxt) not in self.back:
                seen.add(nxt)
                stack.append((nxt, iter(self.succ[nxt])))
        order.reverse()
        size = lambda b: self.blocks[b][1] - self.blocks[b][0]
        best, came = {head: size(head)}, {head: None}
        for b in order:
            if b not in best:
                continue
            for t in self.succ[b]:
                if t in body and (b, t) not in self.back and best[b] + size(t) > best.get(t, -1):
                    best[t], came[t] = best[b] + size(t), b
        latches = self.loops[head][1]
        end = max((b for b in latches if b in best), key=lambda b: best[b], default=None)
        path = []
        while end is not None:
            path.append(end)
            end = came[end]
        return self.indices(path)

    def nested(self, head, body):
        """Loops inside this one (their heads), as source locations of their backward branches."""
        out = []
        for h, (b2, latches) in self.loops.items():
            if h != head and h in body and b2 <= body:
                last = self.instrs[self.blocks[max(latches)][1] - 1]
                out.append((where(last), len(self.indices(b2))))
        return out


def where(ins):
    """file:line of the innermost source frame an instruction comes from."""
    loc = ins.locs[0] if ins.locs else ("?", 0)
    return "%s:%d" % (os.path.basename(loc[0]), loc[1])


def inner_loop(cfg, weight_re):
    """The innermost loop holding a weight load (the one loading the most weight bytes if several):
    (head block, body blocks, weight load indices), and how many such loops there are."""
    cands = []
    for head, (body, _) in cfg.loops.items():
        wl = [i for i in cfg.indices(body) if is_weight_load(cfg.instrs[i], weight_re)]
        if wl:
            cands.append((head, body, wl))
    inner = [c for c in cands if not any(o is not c and o[1] < c[1] for o in cands)]
    if not inner:
        return None, 0
    return max(inner, key=lambda c: (sum(cfg.instrs[i].width for i in c[2]), -cfg.blocks[c[0]][0])), len(inner)


def widths(items, sass):
    counts = {}
    for ins in items:
        counts[ins.width] = counts.get(ins.width, 0) + 1
    return ", ".join("%d×%d-bit" % (counts[w], w) for w in sorted(counts, reverse=True)) or "none"


def weight_op_name(wl, sass):
    ops = sorted({re.sub(r"^@\S+\s+", "", i.opcode) for i in wl})
    return ", ".join("`%s`" % o for o in ops)


# --- main ----------------------------------------------------------------------------------------

def compile_one(nvcc, arch, src, tmp):
    stem = os.path.splitext(os.path.basename(src))[0]
    keep = os.path.join(tmp, stem)
    os.makedirs(keep, exist_ok=True)
    cubin = os.path.join(keep, stem + ".cubin")
    cmd = [nvcc, "-cubin", "-keep", "-keep-dir", keep] + nvcc_flags(arch) + ["-Xptxas", "-v", "-o", cubin, src]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=keep)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        sys.exit("kernel_report: nvcc failed on %s" % src)
    ptx = glob.glob(os.path.join(keep, "*.ptx"))
    return cubin, (ptx[0] if ptx else None), r.stdout + r.stderr, cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="90a", help="compute capability as in -gencode, e.g. 90a, 89, 80 (default 90a)")
    ap.add_argument("--out", help="also write the markdown to FILE")
    ap.add_argument("--only", help="only kernels/*.cu files whose name matches this regex (e.g. 'gemv')")
    ap.add_argument("--disasm", choices=("auto", "sass", "ptx"), default="auto",
                    help="table 2 from SASS (nvdisasm) or PTX; auto: SASS when nvdisasm is found")
    ap.add_argument("--nvdisasm", help="path to nvdisasm")
    ap.add_argument("--weight-pattern", default=r"\bcodes\b",
                    help="regex: a load is a weight load if a source statement it comes from matches (default %(default)s)")
    ap.add_argument("--keep", help="keep the cubins, PTX and disassembly in this folder")
    args = ap.parse_args()

    t0 = time.monotonic()
    nvcc = find_nvcc()
    nvdisasm = find_nvdisasm(nvcc, args.nvdisasm) if args.disasm != "ptx" else None
    if args.disasm == "sass" and not nvdisasm:
        sys.exit("kernel_report: --disasm sass but no nvdisasm found (see the module docstring)")
    sass = nvdisasm is not None
    weight_re = re.compile(args.weight_pattern)
    sources = sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))
    if args.only:
        sources = [s for s in sources if re.search(args.only, os.path.basename(s))]
    if not sources:
        sys.exit("kernel_report: no kernels/*.cu matched")

    tmp = args.keep or tempfile.mkdtemp(prefix="kernel_report.")
    os.makedirs(tmp, exist_ok=True)
    kernels = []  # (file, mangled, props)
    code = {}  # mangled -> (instrs, labels)
    spill_code = {}
    cmd_shown = None
    try:
        for src in sources:
            rel = os.path.relpath(src, ROOT)
            sys.stderr.write("kernel_report: %s\n" % rel)
            cubin, ptx, log, cmd = compile_one(nvcc, args.arch, src, tmp)
            if cmd_shown is None:
                cmd_shown = cmd
            props = parse_ptxas(log)
            for name, p in props.items():
                kernels.append((os.path.basename(src), name, p))
            if sass:
                r = subprocess.run([nvdisasm, "-c", "-gi", cubin], capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit("kernel_report: nvdisasm failed on %s: %s" % (cubin, r.stderr.strip()))
                if args.keep:
                    with open(cubin[:-6] + ".sass", "w") as f:
                        f.write(r.stdout)
                funcs, labels = parse_sass(r.stdout)
            else:
                with open(ptx) as f:
                    funcs, labels = parse_ptx(f.read())
            for name, instrs in funcs.items():
                code[name] = (instrs, labels.get(name, {}))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    names = demangle(n for _, n, _ in kernels)
    short = {n: shorten(d) for n, d in names.items()}
    kernels.sort(key=lambda k: (k[0], sort_key(short[k[1]])))
    elapsed = time.monotonic() - t0

    flags = " ".join(a.replace(ROOT, "<repo>") for a in nvcc_flags(args.arch))
    out = []
    w = out.append
    w("Generated by `python3 tools/kernel_report.py%s` on %s (%s, %.0f s), nvcc %s; ptxas flags: `%s -Xptxas -v`."
      % ((" --arch " + args.arch) if args.arch != "90a" else "", datetime.date.today().isoformat(),
         "SASS from nvdisasm " + tool_version(nvdisasm) if sass else
         "PTX (%s)" % ("--disasm ptx" if args.disasm == "ptx" else "no nvdisasm found"),
         elapsed, tool_version(nvcc), flags))
    w("")

    # Table 1.
    w("**Table 1: resources per kernel instantiation (ptxas -v, sm_%s).** Spill = bytes of spill stores / "
      "loads per thread; stack = stack frame bytes; smem = static shared memory (dynamic shared memory is "
      "set at launch and not included)." % args.arch)
    w("")
    w("| file | kernel | regs | spill st / ld (B) | stack (B) | smem (B) | barriers |")
    w("|---|---|---:|---:|---:|---:|---:|")
    spilling = []
    for f, name, p in kernels:
        sp = "%d / %d" % (p.get("spill_st", 0), p.get("spill_ld", 0))
        if p.get("spill_st", 0) or p.get("spill_ld", 0):
            sp = "**%s SPILL**" % sp
            spilling.append((f, name, p))
        label = short[name] + ("" if p.get("entry") else " (device function)")
        w("| %s | `%s` | %s | %s | %d | %d | %d |" % (f, label, p.get("regs", "-"), sp, p.get("stack", 0),
                                                     p.get("smem", 0), p.get("barriers", 0)))
    w("")
    gemvs = [(f, n, p) for f, n, p in kernels if f.startswith("gemv") and "gemv" in short[n].split("<")[0]]
    tokens = sorted({token_count(short[n]) for _, n, _ in gemvs} - {None})
    gemv_spills = [(f, n, p) for f, n, p in gemvs if p.get("spill_st", 0) or p.get("spill_ld", 0)]
    w("%d instantiations, %d with spills. GEMV kernels (gemv*.cu, `gemv` in the name): %d, at token counts %s; "
      "%d with spills%s." % (len(kernels), len(spilling), len(gemvs), ", ".join(map(str, tokens)) or "-",
                             len(gemv_spills),
                             (": " + ", ".join("`%s`" % short[n] for _, n, _ in gemv_spills)) if gemv_spills else ""))
    cfgs = {}

    def cfg_of(name):
        if name not in cfgs:
            cfgs[name] = Cfg(*code.get(name, ([], {})))
        return cfgs[name]

    if spilling:
        w("")
        w("Where the spills are (%s `%s` / `%s` instructions, the source lines they are attributed to):"
          % (("SASS", "STL", "LDL") if sass else ("PTX", "st.local", "ld.local")))
        w("")
        for f, name, p in spilling:
            cfg = cfg_of(name)
            in_loop = set()
            for body, _ in cfg.loops.values():
                in_loop.update(cfg.indices(body))
            if sass:
                st = [i for i, ins in enumerate(cfg.instrs) if ins.kind == "spill-store"]
            else:
                st = [i for i, ins in enumerate(cfg.instrs) if ins.opcode.startswith("st.local")]
            ld = [i for i, ins in enumerate(cfg.instrs) if ins.kind == "local"]
            def listing(ids):
                if not ids:
                    return "none"
                inside = [i for i in ids if i in in_loop]
                locs = sorted({where(cfg.instrs[i]) for i in ids})
                return "%d (%d inside a loop; from %s)" % (len(ids), len(inside), ", ".join(locs))
            w("- `%s`: spill stores %s; spill loads %s." % (short[name], listing(st), listing(ld)))
    w("")

    # Table 2.
    unit = "SASS" if sass else "PTX"
    rows = [(f, n) for f, n, p in kernels if p.get("entry") and f.startswith("gemv")
            and "gemv" in short[n].split("<")[0] and token_count(short[n]) == 1]
    rows.sort(key=lambda r: (r[0], sort_key(short[r[1]])))
    notes = []

    def loop_table(title, selected):
        several = []
        w(title)
        w("")
        w("| format | kernel | weight loads / pass | weight B / pass | other global loads / pass | shared loads "
          "| instr in loop | instr on longest path | nested loops | instr / weight byte |")
        w("|---|---|---|---:|---|---:|---:|---:|---|---:|")
        for f, name in selected:
            fmt, _ = format_of(short[name])
            cfg = cfg_of(name)
            found, n_inner = inner_loop(cfg, weight_re)
            if not found:
                w("| %s | `%s` | no loop with a weight load found | | | | | | | |" % (fmt, short[name]))
                continue
            head, body, wl = found
            idx = cfg.indices(body)
            path = cfg.longest_path(head, body)
            # Loads are counted on the longest path (one version where the compiler made two).
            wset = set(wl)
            wpath = [cfg.instrs[i] for i in path if i in wset]
            wbytes = sum(cfg.instrs[i].width for i in wl) // 8
            path_wbytes = sum(x.width for x in wpath) // 8
            other = [cfg.instrs[i] for i in path if cfg.instrs[i].kind in ("global", "generic") and i not in wset]
            shared = [cfg.instrs[i] for i in path if cfg.instrs[i].kind == "shared"]
            wcell = widths(wpath, sass) + " (" + weight_op_name(wpath, sass) + ")"
            if any(x.width < 128 for x in wpath):
                wcell = "**" + wcell + "**"
            nested = cfg.nested(head, body)
            counts = {}
            for key in nested:
                counts[key] = counts.get(key, 0) + 1
            ncell = ", ".join("**%d × %s** (%d instr)" % (c, loc, size)
                              for (loc, size), c in sorted(counts.items())) or "none"
            mark = "" if cfg.is_range(body) else " †"
            per_byte = "%.2f" % (len(path) / path_wbytes) if path_wbytes else "-"
            if path_wbytes != wbytes:
                notes.append("`%s`: the loop body holds %d weight bytes of loads, its longest path %d."
                             % (short[name], wbytes, path_wbytes))
            w("| %s | `%s` | %s | %d | %s | %d | %d%s | %d | %s | %s |" % (
                fmt, short[name], wcell, path_wbytes, widths(other, sass), len(shared), len(idx), mark, len(path),
                ncell, per_byte))
            if n_inner > 1:
                several.append("`%s` (%d)" % (short[name], n_inner))
            if mark:
                notes.append("† `%s`: the loop's blocks are not one contiguous label..branch range (the compiler "
                             "placed some after the branch); counted over its natural loop." % short[name])
        if several:
            notes.append("Several innermost loops hold weight loads in %s (e.g. the compiler's unrolled copy and "
                         "its remainder loop); the table shows the one loading the most weight bytes."
                         % ", ".join(several))
        w("")

    fast = [r for r in rows if format_of(short[r[1]])[1] != "fallback"]
    slow = [r for r in rows if format_of(short[r[1]])[1] == "fallback"]
    loop_table("**Table 2: the decode GEMVs' inner loop at batch 1, fast paths (%s, sm_%s).** A pass = one trip "
               "round the innermost loop that loads weights; weight loads = global loads compiled from a statement "
               "naming `codes`; other global loads = activations and per-block / per-group scales; shared loads = "
               "code-table lookups; instr in loop = every instruction of the loop body once; longest path = the "
               "most instructions one pass can execute (each nested loop's body counted once), and the loads "
               "columns count the loads on that path; instr / weight byte = longest path / its weight bytes." % (unit, args.arch), fast)
    if slow:
        loop_table("**Table 2b: the same for the fallback instantiations** (shapes the fast path does not take: "
                   "scalar by design).", slow)
    if not sass:
        notes.append("Tables 2 count PTX instructions (%s): the virtual ISA before ptxas schedules, unrolls "
                     "further or removes instructions, a proxy, not the SASS the GPU runs."
                     % ("--disasm ptx" if args.disasm == "ptx" else "no nvdisasm found"))
    for note in notes:
        w("- " + note)
    if notes:
        w("")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stderr.write("kernel_report: %d files, %.1f s\n" % (len(sources), time.monotonic() - t0))


if __name__ == "__main__":
    main()
