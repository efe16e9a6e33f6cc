"""XLA's own cost model, read from a compiled program: the TPU stopwatch without a TPU.

XLA:TPU compiles deviceless on any machine (`targets.topology_devices`), and every instruction
of its optimized HLO (`compiled.as_text()`) carries an `estimated_cycles` figure in its backend
config. This module parses that text into computations and instructions, follows the loops
(`while` with a trip count read from its condition, or one given by its role), and sums the
cycles of one iteration of the optimizer's loop, broken down by kind of work.

The loop of a run (`solver.run_one` inside `solver.each`) nests data-dependent loops whose trip
counts the program cannot show: the batch loop, the iteration loop and, for L-BFGS, the line
search. They are found as the chain of `while` loops with no constant trip count; one iteration
is one trip of the iteration loop's body, with the line search run `evaluations` times.

Where no cost model exists (GPU targets), `roofline` gives an estimate per instruction from its
FLOPs and bytes instead: labelled an estimate, never a measurement.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

# Kinds of work, in the order a breakdown is printed. An instruction's kind is decided by the
# first rule that matches (see `kind_of`).
KINDS = ("convolutions", "pooling", "gram", "fft", "lbfgs", "line search", "copies and pads", "elementwise")

# Named scopes the code puts around its parts (`jax.named_scope`), found in each instruction's
# op_name metadata: the part an instruction belongs to, whatever XLA fused it into.
SCOPES = (("pool", "pooling"), ("gram", "gram"), ("pc,pd->cd", "gram"), ("fft", "fft"),
          ("precondition", "fft"), ("lbfgs", "lbfgs"), ("linesearch", "line search"))
COPY_OPS = frozenset({"copy", "copy-start", "copy-done", "pad", "transpose", "slice", "concatenate",
                      "dynamic-slice", "dynamic-update-slice", "reshape", "broadcast", "reverse"})
FREE_OPS = frozenset({"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all",
                      "opt-barrier", "partition-id", "replica-id"})

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT )?%([\w.\-]+) = (.*?) ([a-z][a-z0-9\-]*)\((.*)$")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLED = re.compile(r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_OPERANDS = re.compile(r"%([\w.\-]+)")


@dataclass(frozen=True)
class Instruction:
    """One instruction of a computation, as far as the cost model needs it."""

    name: str
    opcode: str
    shape: str
    cycles: int  # XLA's estimate (0 where none is given)
    op_name: str  # the JAX source path from the metadata ("" if none)
    operands: tuple[str, ...]
    calls: Mapping[str, tuple[str, ...]]  # attribute -> called computations
    root: bool = False
    arguments: str = ""  # the text between the opcode's parentheses (a constant's value)
    attributes: str = ""  # the text after them, up to the metadata (direction=LT, window=...)


@dataclass(frozen=True)
class Computation:
    name: str
    instructions: tuple[Instruction, ...]
    entry: bool = False

    @property
    def root(self) -> Instruction:
        return next((i for i in self.instructions if i.root), self.instructions[-1])

    def get(self, name: str) -> Instruction | None:
        return next((i for i in self.instructions if i.name == name), None)


@dataclass(frozen=True)
class Module:
    computations: Mapping[str, Computation]
    entry: str

    def fused(self, inst: Instruction) -> Computation | None:
        """The computation a fusion instruction runs (None for other instructions)."""
        if inst.opcode != "fusion":
            return None
        names = inst.calls.get("calls", ())
        return self.computations.get(names[0]) if names else None


def parse(text: str) -> Module:
    """The computations of an optimized HLO module's text (`compiled.as_text()`)."""
    computations: dict[str, Computation] = {}
    entry = ""
    name, entry_flag, body = None, False, []
    for line in text.splitlines():
        if name is None:
            m = _HEADER.match(line)
            if m:
                name, entry_flag, body = m.group(2), bool(m.group(1)), []
            continue
        if line.strip() == "}":
            computations[name] = Computation(name, tuple(body), entry_flag)
            if entry_flag:
                entry = name
            name = None
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        rest = m.group(5)
        calls: dict[str, tuple[str, ...]] = {}
        for attr, called in _CALLED.findall(rest):
            calls[attr] = calls.get(attr, ()) + (called,)
        branches = _BRANCHES.search(rest)
        if branches:
            calls["branches"] = tuple(_OPERANDS.findall(branches.group(1)))
        cycles = _CYCLES.search(rest)
        op_name = _OP_NAME.search(rest)
        args, _, after = rest.partition(")")
        after = re.split(r", (?:metadata|backend_config)=", after, maxsplit=1)[0]
        body.append(Instruction(m.group(2), m.group(4), m.group(3), int(cycles.group(1)) if cycles else 0,
                                op_name.group(1) if op_name else "", tuple(_OPERANDS.findall(args)),
                                calls, bool(m.group(1)), args, after))
    if not entry:
        raise ValueError("no ENTRY computation in this HLO text")
    return Module(computations, entry)


def trip_count(module: Module, loop: Instruction) -> int | None:
    """A `while` loop's trip count when its condition compares a counter with a constant
    (`i < N`, counting from 0 as lax's fori_loop and scan do); None when it is data-dependent."""
    cond = module.computations[loop.calls["condition"][0]]
    root = cond.root
    if root.opcode != "compare" or len(root.operands) != 2 or "direction=LT" not in root.attributes:
        return None
    bound = cond.get(root.operands[1])
    if bound is None or bound.opcode != "constant" or not re.fullmatch(r"-?\d+", bound.arguments.strip()):
        return None
    return int(bound.arguments)


def kind_of(module: Module, inst: Instruction) -> str:
    """The kind of work an instruction does (one of KINDS)."""
    path = inst.op_name
    for key, kind in SCOPES:
        if key in path:
            return kind
    fused = module.fused(inst)
    ops = {i.opcode for i in fused.instructions} if fused is not None else {inst.opcode}
    root = fused.root.opcode if fused is not None else inst.opcode
    if ops & {"convolution", "dot"}:
        return "convolutions"
    if root in COPY_OPS or ops <= COPY_OPS | FREE_OPS:
        return "copies and pads"
    return "elementwise"


@dataclass
class Tally:
    """A cost (cycles, or seconds for a roofline) by kind, loop multiplicities applied, and how
    each loop was counted."""

    by_kind: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in KINDS})
    loops: list[tuple[str, float, str]] = field(default_factory=list)  # (loop, trips, how known)

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())


def loop_chain(module: Module, computation: str | None = None) -> list[Instruction]:
    """The nested `while` loops with data-dependent trip counts, outermost first, starting in
    `computation` (default: the entry): the first such loop of each body (its `call`s and
    conditionals included)."""
    chain: list[Instruction] = []
    comp = module.computations[computation or module.entry]
    while True:
        found = _first_unknown_loop(module, comp, set())
        if found is None:
            return chain
        chain.append(found)
        comp = module.computations[found.calls["body"][0]]


def _first_unknown_loop(module: Module, comp: Computation, seen: set[str]) -> Instruction | None:
    seen.add(comp.name)
    for inst in comp.instructions:
        if inst.opcode == "while" and trip_count(module, inst) is None:
            return inst
        if inst.opcode in ("call", "conditional"):
            for names in inst.calls.values():
                for name in names:
                    if name not in seen and name in module.computations:
                        found = _first_unknown_loop(module, module.computations[name], seen)
                        if found is not None:
                            return found
    return None


Cost = Callable[[Module, Computation, Instruction], float]


def cycles(module: Module, computation: Computation, inst: Instruction) -> float:
    """XLA's estimate for one instruction (the TPU cost model's `estimated_cycles`)."""
    return float(inst.cycles)


def tally(module: Module, computation: str, trips: Mapping[str, float], cost: Cost = cycles,
          weight: float = 1.0, into: Tally | None = None) -> Tally:
    """The cost of one execution of `computation`, loops included: a loop's trips from its
    condition, or from `trips` (by loop instruction name) for data-dependent ones (counted once
    if absent). A loop's condition runs once more than its body; a conditional counts its most
    expensive branch."""
    out = into if into is not None else Tally()
    comp = module.computations[computation]
    for inst in comp.instructions:
        if inst.opcode == "while":
            known = trip_count(module, inst)
            n = float(known) if known is not None else float(trips.get(inst.name, 1.0))
            out.loops.append((inst.name, n, "constant" if known is not None else
                              ("given" if inst.name in trips else "assumed 1")))
            tally(module, inst.calls["body"][0], trips, cost, weight * n, out)
            tally(module, inst.calls["condition"][0], trips, cost, weight * (n + 1), out)
        elif inst.opcode == "conditional":
            branches = inst.calls.get("branches") or (inst.calls.get("true_computation", ()) +
                                                      inst.calls.get("false_computation", ()))
            costs = [(tally(module, b, trips, cost).total, b) for b in branches]
            if costs:
                tally(module, max(costs)[1], trips, cost, weight, out)
        elif inst.opcode == "call":
            for name in inst.calls.get("to_apply", ()) + inst.calls.get("calls", ()):
                tally(module, name, trips, cost, weight, out)
        else:
            c = cost(module, comp, inst)
            if c:
                out.by_kind[kind_of(module, inst)] += weight * c
    return out


def iteration(module: Module, evaluations: float = 1.0, batch_trips: float = 1.0,
              cost: Cost = cycles, line_search: bool = True) -> Tally:
    """The cost of one iteration of the chunk program: the iteration loop's body and condition,
    `batch_trips` times (the images of a device's share that run one after another), with the
    line search (L-BFGS: the innermost data-dependent loop) run `evaluations` times."""
    chain = loop_chain(module)
    need = 2 if line_search else 1
    if len(chain) < need:
        raise ValueError(f"expected the iteration loop{' and the line search' if line_search else ''}, "
                         f"found {len(chain)} data-dependent loops")
    loop = chain[-need]
    trips = {chain[-1].name: evaluations} if line_search else {}
    out = tally(module, loop.calls["body"][0], trips, cost, batch_trips)
    tally(module, loop.calls["condition"][0], trips, cost, batch_trips, out)
    out.loops.insert(0, (loop.name, batch_trips, "the iteration loop"))
    return out


# Roofline: the time of an instruction if it ran at the device's peak for its FLOPs or its
# memory bandwidth for its bytes, whichever is longer (an estimate, not a cost model).
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string (a tuple's elements summed)."""
    return sum(math.prod(int(d) for d in filter(None, dims.split(","))) * _DTYPE_BYTES.get(dtype, 4)
               for dtype, dims in _ARRAY.findall(shape))


def _dims(shape: str) -> list[int]:
    m = _ARRAY.search(shape)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def flops(computation: Computation, inst: Instruction) -> float:
    """Multiply-add FLOPs of a convolution or dot (0 for other instructions)."""
    out = _dims(inst.shape)
    size = math.prod(out)
    if inst.opcode == "convolution" and len(inst.operands) == 2:
        kernel = computation.get(inst.operands[1])
        labels = re.search(r"dim_labels=\w+_(\w+)->(\w+)", inst.attributes)
        if kernel is None or not labels or not out:
            return 0.0
        kernel_size = math.prod(_dims(kernel.shape))
        out_features = out[labels.group(2).index("f")] if "f" in labels.group(2) else 1
        # each output element: one multiply-add per kernel element feeding its output feature
        return 2.0 * size * kernel_size / max(out_features, 1)
    if inst.opcode == "dot" and inst.operands:
        lhs = computation.get(inst.operands[0])
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", inst.attributes)
        if lhs is None or not contracting:
            return 0.0
        dims = _dims(lhs.shape)
        return 2.0 * size * math.prod(dims[int(i)] for i in filter(None, contracting.group(1).split(",")))
    return 0.0


def module_flops(module: Module, inst: Instruction, computation: Computation) -> tuple[float, bool]:
    """FLOPs of an instruction (a fusion's convolutions and dots included) and whether any of
    them runs at the highest precision (float32 off the tensor cores)."""
    fused = module.fused(inst)
    parts = [(fused, i) for i in fused.instructions] if fused is not None else [(computation, inst)]
    total, highest = 0.0, False
    for comp, i in parts:
        f = flops(comp, i)
        if f:
            total += f
            highest |= "highest" in i.attributes.lower()
    return total, highest


def roofline_cost(peak_flops: float, peak_flops_highest: float, bandwidth: float) -> Cost:
    """A per-instruction roofline in seconds: FLOPs at the precision's peak, bytes (operands
    and result) at the memory bandwidth, whichever takes longer."""
    def cost(module: Module, computation: Computation, inst: Instruction) -> float:
        if inst.opcode in FREE_OPS or inst.opcode in ("while", "conditional", "call"):
            return 0.0
        f, highest = module_flops(module, inst, computation)
        moved = shape_bytes(inst.shape)
        for name in inst.operands:
            operand = computation.get(name)
            if operand is not None:
                moved += shape_bytes(operand.shape)
        return max(f / (peak_flops_highest if highest else peak_flops), moved / bandwidth)
    return cost


def iteration_flops(module: Module, evaluations: float = 1.0, batch_trips: float = 1.0,
                    line_search: bool = True) -> float:
    """Convolution and dot FLOPs of one iteration (loops counted as in `iteration`)."""
    return iteration(module, evaluations, batch_trips, lambda m, c, i: module_flops(m, i, c)[0],
                     line_search).total
