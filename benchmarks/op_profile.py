"""Where the train step's time goes: an XLA profile of the compiled step, each executed HLO
op (thunk) put in one class (attention, dense, elementwise, data movement) from the optimized
HLO, with its time and, for the matmul classes, the fraction of the matmul peak it runs at.

Classes: "attention" = every op that comes from the attention function (its products, its
softmax and, factorized, the token grid's gathers: the HLO's stack frames name `attention`,
`factorized_attention` and its parts, `_grid_attention`, `query_attention`,
`joint_query_attention` or `dot_product_attention`);
"dense" = other ops with a dot or convolution (the linear layers); "data movement" = ops made
only of copies, transposes, gathers, slices, concatenations, pads, broadcasts, reshapes;
"elementwise" = the rest (LayerNorm, GELU, the optimizer, losses, reductions). Times are per-thread op times
summed over the timed steps (XLA:CPU runs independent ops on several threads at once, so they
can add up to more than the wall time). On a GPU or TPU the ops are the device's kernels (its
profile plane's events), and a library GEMM (cuBLAS: a custom call with dot dimension numbers
in its backend config) is a dot like any other.
"""

from __future__ import annotations

import collections
import glob
import math
import re
import tempfile

import jax

ATTENTION_FUNCTIONS = ("attention", "dot_product_attention", "_dot_product_attention_xla",
                       "_dot_product_attention_core", "factorized_attention",
                       "factorized_parts", "across_joints", "_grid_attention",
                       "query_attention", "joint_query_attention")
MOVEMENT = {"copy", "transpose", "gather", "scatter", "dynamic-slice", "dynamic-update-slice",
            "concatenate", "pad", "slice", "reverse", "bitcast", "broadcast", "reshape",
            "copy-start", "copy-done"}
TRIVIAL = {"parameter", "tuple", "get-tuple-element", "constant", "iota"}
CLASSES = ("attention", "dense", "elementwise", "data movement", "other")

_HEADER = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$")
_DIMS = re.compile(r"\[([\d,]*)\]")
_DOT_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
_GEMM_CONTRACT = re.compile(r'"lhs_contracting_dimensions":\[([\d",]*)\]')  # GPU GEMM calls


def _dims(shape: str) -> list[int]:
    """The dimensions of an array shape string (f32[2,3]{1,0} -> [2, 3])."""
    m = _DIMS.search(shape)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def _frames(hlo: str) -> dict[int, set[str]]:
    """Stack frame id -> the function names on its stack (the HLO text's frame tables)."""
    def table(title: str, pattern: str) -> dict[int, tuple]:
        block = hlo.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0] if f"\n{title}\n" in hlo \
            else ""
        return {int(m.group(1)): m.groups()[1:] for m in re.finditer(pattern, block)}
    names = {k: v[0] for k, v in table("FunctionNames", r'(\d+) "(.*)"').items()}
    locs = {k: int(v[0]) for k, v in table(
        "FileLocations", r"(\d+) \{file_name_id=\d+ function_name_id=(\d+)").items()}
    frames = {k: (int(a), int(b)) for k, (a, b) in table(
        "StackFrames", r"(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)").items()}
    out = {}
    for fid in frames:
        seen, f = set(), fid
        while f in frames and f not in seen and len(seen) < 200:
            seen.add(f)
            loc, parent = frames[f]
            out.setdefault(fid, set()).add(names.get(locs.get(loc), ""))
            f = parent
    return out


def parse_hlo(hlo: str) -> dict[str, dict]:
    """Instruction name -> {op, calls, flops (its dots'), attention (from the attention
    function)} for every instruction of the optimized HLO text."""
    frames = _frames(hlo)
    comps: dict[str, list[str]] = {}
    instrs: dict[str, dict] = {}
    current, shapes = None, {}
    for line in hlo.splitlines():
        if (h := _HEADER.match(line)) and "=" not in line.split("(")[0]:
            current, shapes = h.group(1), {}
            comps[current] = []
            continue
        m = _INSTR.match(line)
        if m is None or current is None:
            continue
        name, shape, op, rest = m.groups()
        shapes[name] = shape
        flops = 0
        contract = (_GEMM_CONTRACT.search(rest) if op == "custom-call" else
                    _DOT_CONTRACT.search(rest) if op in ("dot", "convolution") else None)
        if op in ("dot", "convolution") or contract:
            args = re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])
            lhs = _dims(shapes.get(args[0], "")) if args else []
            k = math.prod(lhs[int(c)] for c in re.findall(r"\d+", contract.group(1))) \
                if contract and lhs else 1
            flops = 2 * math.prod(_dims(shape)) * k  # a tuple's first shape: the result
        frame = re.search(r"stack_frame_id=(\d+)", rest)
        on_stack = frames.get(int(frame.group(1)), set()) if frame else set()
        instrs[name] = dict(op=op, flops=flops, calls=re.findall(
            r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", rest),
            attention=bool(on_stack & set(ATTENTION_FUNCTIONS)) or "attention" in rest)
        comps[current].append(name)
    for info in instrs.values():  # a fusion: what its called computations hold
        inner, todo, seen = [], list(info["calls"]), set()
        while todo:
            c = todo.pop()
            if c in seen or c not in comps:
                continue
            seen.add(c)
            for n in comps[c]:
                inner.append(instrs[n])
                todo += instrs[n]["calls"]
        info["inner"] = inner
    return instrs


def op_class(info: dict) -> str:
    """The class of one executed op (see the module docstring)."""
    parts = [info] + info["inner"]
    if any(p["attention"] for p in parts):
        return "attention"
    ops = {p["op"] for p in parts} - TRIVIAL - {"fusion"}
    if ops & {"dot", "convolution"} or info["op"] == "custom-call" and info["flops"]:
        return "dense"
    if not ops:
        return "data movement" if info["op"] == "fusion" else "other"
    return "data movement" if ops <= MOVEMENT else "elementwise"


def op_planes(planes) -> list:
    """The profile planes whose events are the executed ops: a GPU's or TPU's device planes
    where they carry ops (their kernels), else all (XLA:CPU's ops run on host threads)."""
    def has_ops(plane) -> bool:
        return any("hlo_op" in dict(ev.stats) for line in plane.lines for ev in line.events)
    planes = list(planes)  # ProfileData.planes is an iterator
    device = [p for p in planes if p.name.startswith("/device:") and has_ops(p)]
    return device or planes


def profile(compiled, run_step, steps: int, peak_gflops: float) -> dict:
    """Runs `run_step` `steps` times under the profiler; time, share, GFLOP and fraction of
    peak per class for one step of `compiled`, or {"error": why} where the profile holds no
    op (a GPU whose CUPTI the process may not use): the rest of a benchmark still runs."""
    instrs = parse_hlo(compiled.as_text())
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(steps):
                run_step()
        paths = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)
        if not paths:
            return {"error": "the profiler wrote no trace"}
        data = jax.profiler.ProfileData.from_file(paths[-1])
    time_ns, unknown, executed = collections.Counter(), collections.Counter(), set()
    for plane in op_planes(data.planes):
        for line in plane.lines:
            for ev in line.events:
                stats = dict(ev.stats)
                name = stats.get("hlo_op")
                if name is None:
                    continue
                info = instrs.get(name)
                if info is None:
                    unknown[name] += ev.duration_ns
                    time_ns["other"] += ev.duration_ns
                else:
                    time_ns[op_class(info)] += ev.duration_ns
                    executed.add(name)
    if not executed:
        return {"error": "no op of the program in the profile (on a GPU: CUPTI unavailable "
                         "or not permitted to this process?)"}
    flops = collections.Counter()  # each executed op once per step: its own and inner dots
    for name in executed:
        info = instrs[name]
        flops[op_class(info)] += info["flops"] + sum(p["flops"] for p in info["inner"])
    total = sum(time_ns.values()) or 1
    out = {}
    for c in CLASSES:
        t = time_ns[c] / steps / 1e9
        out[c] = dict(time_ms=t * 1e3, share=time_ns[c] / total, gflop=flops[c] / 1e9,
                      fraction_of_peak=(flops[c] / 1e9 / t / peak_gflops) if t and flops[c]
                      else None)
    return dict(classes=out, op_time_ms_per_step=total / steps / 1e6,
                unclassified_ops=len(unknown))
