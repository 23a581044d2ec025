"""What XLA compiles: each library's train step as one optimized program, and whether the
programs of the four libraries are the same.

The driver's fast and fused paths compile `state_step` over the flat list of a library's
arrays (`training.jit_over_leaves` over `module.split(training)`); `compile_state_step` does
exactly that on one batch and keeps what the compiler reports: the cost analysis (flops,
bytes accessed) and the optimized HLO text. `Program.parse` reads that text into
computations and instructions, and `compare_programs` decides, by computation, whether the
programs are the same up to names, and if not, what differs.

"The same up to names" means equal after dropping every instruction and computation name,
the debug metadata (source lines, op names), and the order of the program's arguments and
results, which is only the order in which each library's pytree flattens its arrays (by
attribute and key names). Each instruction is identified by what it computes: its opcode,
its result type (with layout), its attributes, its literal operands and, recursively, the
identities of its operands and of the computations it calls.

Where programs differ, the comparison goes one level further. An input that is computed
from itself and constants alone, and read by nothing else (a step counter one library keeps
and another does not), cannot change the model; the *core* of a program is the program
without such inputs. Cores are compared the same way, and the differences of cores are put
in words: operation counts, arrays stored in a transposed layout, and the instructions left
different once those layouts are matched.

>>> text = '''HloModule m
... ENTRY %main (a: f32[2], b: f32[2]) -> f32[2] {
...   %a = f32[2]{0} parameter(0)
...   %b = f32[2]{0} parameter(1)
...   ROOT %sum = f32[2]{0} add(%a, %b), metadata={op_name="add"}
... }'''
>>> renamed = text.replace("%sum", "%total").replace('"add"', '"plus"')
>>> Program.parse(text).fingerprint == Program.parse(renamed).fingerprint
True
>>> Program.parse(text).op_counts
Counter({'add': 1})
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# The cost-analysis entries kept, in this order.
COST_KEYS = ("flops", "bytes accessed", "transcendentals")

# Attributes that say nothing about what is computed (debug information).
_DEBUG_ATTRIBUTES = frozenset({"metadata", "frontend_attributes", "statistics_viz"})
_COMPUTATION_HEADER = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_COMMENT = re.compile(r"/\*.*?\*/")
_REFERENCE = re.compile(r"%([\w.\-]+)")
_ARRAY_TYPE = re.compile(r"^([a-z]+\d*)\[([\d,]*)\](\{[\d,]*\})?$")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One HLO instruction, without its debug metadata.

    Attributes:
      name: its name in the program (`dot.2`).
      opcode: `dot`, `add`, `fusion`, `parameter`, ...
      type: the result type with its layout, e.g. `f32[353,1]{1,0}`, or a tuple type.
      operands: `%name` references to instructions of the same computation, or literals
        (`constant(0.5)`'s `0.5`, `parameter(3)`'s `3`).
      attributes: the text after the operands (`kind=kLoop, calls=%fused_computation.1`).
      root: whether it is its computation's result.
    """

    name: str
    opcode: str
    type: str
    operands: tuple[str, ...]
    attributes: str
    root: bool

    @property
    def references(self) -> list[str]:
        """Names of the instructions it reads."""
        return [op[1:] for op in self.operands if op.startswith("%")]

    def signature(self, *, in_entry: bool = False) -> str:
        """What the instruction is, without any name: opcode, literals, type, attributes.

        Operand and computation references become `%`. Parameter numbers are kept inside
        called computations (they say which operand is which) but not in the entry
        computation, where they are only the order of the arrays' leaves.
        """
        if in_entry and self.opcode == "parameter":
            return f"parameter -> {self.type}"
        if in_entry and self.root and self.opcode == "tuple":
            return f"tuple -> {_sorted_tuple_type(self.type)}"
        literals = ", ".join("%" if op.startswith("%") else op for op in self.operands)
        attributes = _REFERENCE.sub("%", self.attributes)
        return f"{self.opcode}({literals}) -> {self.type}" + (
            f" {attributes}" if attributes else ""
        )


@dataclasses.dataclass(frozen=True)
class Program:
    """An optimized HLO module, read from its text (`compiled.as_text()`).

    Attributes:
      computations: name -> its instructions, in the order written (operands first).
      entry: the name of the entry computation.
    """

    computations: Mapping[str, tuple[Instruction, ...]]
    entry: str

    @classmethod
    def parse(cls, text: str) -> Program:
        """Reads HLO text: computations (`%name (...) -> ... {`, `ENTRY ...`) and their
        instructions; everything else (the module header, debug tables) is skipped.

        Raises:
          ValueError: the text has no entry computation, or an instruction it cannot read.
        """
        computations: dict[str, tuple[Instruction, ...]] = {}
        entry, current, body = None, None, []
        for line in text.splitlines():
            if current is None:
                header = _COMPUTATION_HEADER.match(line)
                if header:
                    current, body = header.group(2), []
                    if header.group(1):
                        entry = current
            elif line.strip() == "}":
                computations[current] = tuple(body)
                current = None
            elif line.strip():
                body.append(_parse_instruction(line))
        if entry is None:
            raise ValueError("not HLO text: no ENTRY computation found")
        return cls(computations, entry)

    @property
    def instructions(self) -> list[Instruction]:
        """Every instruction of every computation."""
        return [i for body in self.computations.values() for i in body]

    @property
    def inputs(self) -> list[Instruction]:
        """The entry computation's parameters, in argument order."""
        parameters = [i for i in self.computations[self.entry] if i.opcode == "parameter"]
        return sorted(parameters, key=_parameter_number)

    @property
    def op_counts(self) -> collections.Counter:
        """How many instructions of each opcode there are in all computations (fusion
        bodies included), parameters left out: they are inputs, not operations."""
        return collections.Counter(i.opcode for i in self.instructions if i.opcode != "parameter")

    def signatures(self) -> collections.Counter:
        """Every instruction's name-free `Instruction.signature`, counted."""
        return collections.Counter(
            i.signature(in_entry=name == self.entry)
            for name, body in self.computations.items()
            for i in body
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of the program's structure: equal for programs that are the same up to
        names and argument/result order (see the module docstring)."""
        return _Fingerprinter(self).computation(self.entry)

    def self_contained_inputs(self) -> list[int]:
        """Numbers of the entry parameters computed from themselves and constants alone
        and read by nothing but the result: they cannot affect any other output."""
        entry = self.computations[self.entry]
        (root,) = [i for i in entry if i.root]
        if root.opcode != "tuple":  # one result: every input is read by it
            return []
        constants = {i.name for i in entry if i.opcode == "constant"}
        found = []
        for parameter in self.inputs:
            derived = _derived_from(entry, parameter.name) - {root.name}
            mixes = any(
                ref not in derived and ref not in constants
                for i in entry
                if i.name in derived
                for ref in i.references
            )
            read_elsewhere = any(
                ref in derived
                for i in entry
                if i.name not in derived and not i.root
                for ref in i.references
            )
            is_result = any(ref in derived for ref in root.references)
            if is_result and not mixes and not read_elsewhere:
                found.append(_parameter_number(parameter))
        return found

    def without_inputs(self, numbers: Sequence[int]) -> Program:
        """This program without the entry parameters `numbers`, everything derived from
        them alone, the constants only they used, and their places in the result.

        Meant for `self_contained_inputs`: the rest of the program is left as it was.
        """
        entry = self.computations[self.entry]
        removed: set[str] = set()
        for parameter in self.inputs:
            if _parameter_number(parameter) in numbers:
                removed |= _derived_from(entry, parameter.name)
        kept = []
        for instruction in entry:
            if instruction.name in removed and not instruction.root:
                continue
            if instruction.root and instruction.opcode == "tuple":
                keep = [ref[1:] not in removed for ref in instruction.operands]
                types = _split_top_level(instruction.type[1:-1])
                instruction = dataclasses.replace(
                    instruction,
                    operands=tuple(
                        op for op, k in zip(instruction.operands, keep, strict=True) if k
                    ),
                    type="("
                    + ", ".join(t.strip() for t, k in zip(types, keep, strict=True) if k)
                    + ")",
                )
            kept.append(instruction)
        (root,) = [i for i in kept if i.root]
        if root.opcode == "tuple" and len(root.operands) == 1:
            # A result of one array is that array, as if the program had returned it alone.
            kept = [
                dataclasses.replace(i, root=True) if i.name == root.operands[0][1:] else i
                for i in kept
                if i is not root
            ]
        used = {ref for i in kept for ref in i.references}
        kept = [i for i in kept if i.opcode != "constant" or i.name in used or i.root]
        return Program(self._reachable({self.entry: tuple(kept)}), self.entry)

    def _reachable(self, computations: dict[str, tuple[Instruction, ...]]):
        """`computations` plus every computation they call, directly or not."""
        pending = list(computations)
        while pending:
            for instruction in computations[pending.pop()]:
                for called in _REFERENCE.findall(instruction.attributes):
                    if called in self.computations and called not in computations:
                        computations[called] = self.computations[called]
                        pending.append(called)
        # In the original order, so that the text and the counts read the same.
        return {name: computations[name] for name in self.computations if name in computations}


def _sorted_tuple_type(type_: str) -> str:
    """`(f32[1]{0}, s32[])` with its element types sorted."""
    return "(" + ", ".join(sorted(t.strip() for t in _split_top_level(type_[1:-1]))) + ")"


def _parameter_number(parameter: Instruction) -> int:
    return int(parameter.operands[0])


def _derived_from(body: Sequence[Instruction], name: str) -> set[str]:
    """`name` and every instruction of `body` that reads it, directly or not."""
    derived = {name}
    for instruction in body:  # operands come first in HLO text
        if any(ref in derived for ref in instruction.references):
            derived.add(instruction.name)
    return derived


def _parse_instruction(line: str) -> Instruction:
    match = _INSTRUCTION.match(_COMMENT.sub("", line))
    if match is None:
        raise ValueError(f"cannot read HLO instruction: {line.strip()}")
    root, name, rest = bool(match.group(1)), match.group(2), match.group(3).strip()
    if rest.startswith("("):  # a tuple type: `(f32[1]{0}, s32[]) tuple(...)`
        end = _closing(rest)
        type_, rest = rest[: end + 1], rest[end + 1 :].lstrip()
    else:
        type_, _, rest = rest.partition(" ")
    opcode, bracket, _ = rest.partition("(")
    if not bracket:
        raise ValueError(f"cannot read HLO instruction: {line.strip()}")
    start = len(opcode)
    end = _closing(rest, start)
    operands = tuple(op.strip() for op in _split_top_level(rest[start + 1 : end]) if op.strip())
    attributes = ", ".join(
        part.strip()
        for part in _split_top_level(rest[end + 1 :].lstrip(", "))
        if part.strip() and part.strip().partition("=")[0] not in _DEBUG_ATTRIBUTES
    )
    return Instruction(name, opcode.strip(), type_, operands, attributes, root)


def _closing(text: str, start: int = 0) -> int:
    """Index of the bracket that closes the one at `text[start]` (quotes respected)."""
    closers = {"(": ")", "{": "}", "[": "]"}
    stack, quoted = [], False
    for index in range(start, len(text)):
        char = text[index]
        if char == '"' and text[index - 1] != "\\":
            quoted = not quoted
        elif quoted:
            continue
        elif char in closers:
            stack.append(closers[char])
        elif stack and char == stack[-1]:
            stack.pop()
            if not stack:
                return index
    raise ValueError(f"unbalanced brackets in HLO text: {text[start : start + 80]}")


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas that are not inside brackets or quotes."""
    parts, current, depth, quoted = [], [], 0, False
    for index, char in enumerate(text):
        if char == '"' and (index == 0 or text[index - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "({[":
            depth += 1
        elif not quoted and char in ")}]":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


class _Fingerprinter:
    """Merkle hashes of instructions and computations (see `Program.fingerprint`)."""

    def __init__(self, program: Program):
        self.program = program
        self.by_name = {
            (computation, i.name): i
            for computation, body in program.computations.items()
            for i in body
        }
        self.hashes: dict[tuple[str, str], str] = {}

    def computation(self, name: str) -> str:
        (root,) = [i for i in self.program.computations[name] if i.root]
        return self.instruction(name, root)

    def instruction(self, computation: str, instruction: Instruction) -> str:
        key = (computation, instruction.name)
        if key not in self.hashes:
            self.hashes[key] = self._hash(computation, instruction)
        return self.hashes[key]

    def _hash(self, computation: str, instruction: Instruction) -> str:
        in_entry = computation == self.program.entry
        operands = [
            self.instruction(computation, self.by_name[(computation, op[1:])])
            if op.startswith("%")
            else op
            for op in instruction.operands
        ]
        if in_entry and instruction.opcode == "parameter":
            operands = []  # the argument order is the leaf order, i.e. names
        type_ = instruction.type
        if in_entry and instruction.root and instruction.opcode == "tuple":
            operands = sorted(operands)  # the result order, likewise
            type_ = _sorted_tuple_type(type_)
        attributes = _REFERENCE.sub(
            lambda m: (
                self.computation(m.group(1)) if m.group(1) in self.program.computations else "%"
            ),
            instruction.attributes,
        )
        text = f"{instruction.opcode}|{type_}|{attributes}|{'|'.join(operands)}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """One library's train step as XLA compiled it.

    Attributes:
      library: registry name.
      cost: the compiler's cost analysis: `flops`, `bytes accessed`, `transcendentals`.
      hlo: the optimized HLO text.
      input_names: the pytree path of each argument, in argument order: the state's
        leaves (e.g. `.params['dense']['kernel']`), then `x` and `y`.
    """

    library: str
    cost: Mapping[str, float]
    hlo: str
    input_names: tuple[str, ...]

    @functools.cached_property
    def program(self) -> Program:
        return Program.parse(self.hlo)

    @functools.cached_property
    def core(self) -> Program:
        """The program without its self-contained inputs (see the module docstring)."""
        return self.program.without_inputs(self.program.self_contained_inputs())

    def inputs(self, program: Program | None = None) -> list[tuple[str, str]]:
        """`(name, type)` of each argument of `program` (by default the whole program)."""
        program = program or self.program
        return [(self.input_names[_parameter_number(p)], p.type) for p in program.inputs]

    def self_contained_inputs(self) -> list[tuple[str, str]]:
        """`(name, type)` of the inputs only the program's result reads."""
        inputs = self.inputs()
        return [inputs[number] for number in self.program.self_contained_inputs()]


def compile_state_step(library: str, training: Any, x: Any, y: Any, *, l2: float) -> CompiledStep:
    """Compiles `library`'s `state_step` the way the driver does, on the batch `x`, `y`.

    Args:
      library: registry name.
      training: the library's own training object (`init_training`'s result, or
        `FitResult.training`); only its structure, shapes and dtypes matter.
      x: `[batch, in_features]`, y: `[batch, out_features]`, float32.
      l2: the ridge penalty of the step.
    """
    import jax

    from jaxlinear._registry import get_library
    from jaxlinear.training import jit_over_leaves

    module = get_library(library).module
    static, arrays = module.split(training)

    def step(arrays, x, y):
        return module.state_step(static, arrays, x, y, l2=l2)

    leaves, compiled, _ = jit_over_leaves(step, arrays)
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree.leaves_with_path(arrays)]
    return compile_jitted(library, compiled, (leaves, x, y), input_names=(*paths, "x", "y"))


def compiled_steps(comparison) -> dict[str, CompiledStep]:
    """Each library's `state_step` in a `jaxlinear.Comparison`, compiled as the driver
    compiles it, on the first batch of the run's first epoch, from the training object the
    run ended with."""
    import numpy as np

    from jaxlinear.training import epoch_order, take_batch

    config, dataset = comparison.config, comparison.dataset
    x = dataset.x_train.astype(np.float32)
    y = dataset.y_train.astype(np.float32)
    indices = epoch_order(len(x), config.batch_size, config.seed, 0)[0]
    x, y = take_batch(x, y, indices)
    return {
        name: compile_state_step(name, run.fit.training, x, y, l2=config.l2)
        for name, run in comparison.runs.items()
    }


def compile_jitted(
    label: str, jitted: Any, args: Sequence[Any], *, input_names: Sequence[str]
) -> CompiledStep:
    """Compiles `jitted(*args)` (a `jax.jit` function) and keeps its cost and HLO.

    `input_names` name the arguments' array leaves, in order (they name the inputs in the
    comparison's sentences).
    """
    executable = jitted.lower(*args).compile()
    cost = executable.cost_analysis()
    if isinstance(cost, Sequence):  # older jax: one dict per device program
        cost = cost[0]
    return CompiledStep(
        library=label,
        cost={key: float(cost.get(key, 0.0)) for key in COST_KEYS},
        hlo=executable.as_text(),
        input_names=tuple(input_names),
    )


@dataclasses.dataclass(frozen=True)
class Difference:
    """How the core of program `other` differs from the core of program `reference`.

    Attributes:
      op_counts: `(opcode, count in reference, count in other)` where the counts differ.
      transposed: `(reference input, other input)` pairs, each `(name, type)`, whose
        shapes are each other's reverse (e.g. `f32[10,1]` and `f32[1,10]`).
      inputs_only_in_reference, inputs_only_in_other: other unmatched inputs.
      instructions_only_in_reference, instructions_only_in_other: name-free signatures
        of the instructions left unmatched once the transposed shapes are matched.
    """

    reference: str
    other: str
    op_counts: list[tuple[str, int, int]]
    transposed: list[tuple[tuple[str, str], tuple[str, str]]]
    inputs_only_in_reference: list[tuple[str, str]]
    inputs_only_in_other: list[tuple[str, str]]
    instructions_only_in_reference: list[str]
    instructions_only_in_other: list[str]


def difference(reference: CompiledStep, other: CompiledStep) -> Difference:
    """How `other`'s core differs from `reference`'s (see `Difference`)."""
    counts_a, counts_b = reference.core.op_counts, other.core.op_counts
    op_counts = [
        (opcode, counts_a[opcode], counts_b[opcode])
        for opcode in sorted(counts_a.keys() | counts_b.keys())
        if counts_a[opcode] != counts_b[opcode]
    ]
    only_a, only_b = _unmatched(reference.inputs(reference.core), other.inputs(other.core))
    transposed = []
    for a in list(only_a):
        match = next((b for b in only_b if _is_transpose(a[1], b[1])), None)
        if match is not None:
            transposed.append((a, match))
            only_a.remove(a)
            only_b.remove(match)
    only_in_a, only_in_b = _unmatched_instructions(
        reference.core.signatures(),
        other.core.signatures(),
        {_dims(b[1]): _dims(a[1]) for a, b in transposed},
    )
    return Difference(
        reference=reference.library,
        other=other.library,
        op_counts=op_counts,
        transposed=transposed,
        inputs_only_in_reference=only_a,
        inputs_only_in_other=only_b,
        instructions_only_in_reference=only_in_a,
        instructions_only_in_other=only_in_b,
    )


def _unmatched_instructions(
    a: collections.Counter, b: collections.Counter, renames: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """The signatures of `a` and of `b` left unmatched: first matched as they are, then
    with `b`'s transposed shapes read as `a`'s (`renames`), so that an instruction that
    only works on the other layout is not counted as a difference."""
    left_a, left_b = a - b, b - a
    originals: dict[str, list[str]] = {}
    for signature in sorted(left_b.elements()):
        originals.setdefault(_renamed(signature, renames), []).append(signature)
    renamed_b = collections.Counter({key: len(value) for key, value in originals.items()})
    only_a = sorted((left_a - renamed_b).elements())
    only_b = sorted(originals[key].pop() for key in (renamed_b - left_a).elements())
    return only_a, only_b


def _unmatched(a: list[tuple[str, str]], b: list[tuple[str, str]]):
    """The `(name, type)` inputs of `a` and of `b` whose types the other has fewer of."""
    surplus_a = collections.Counter(t for _, t in a) - collections.Counter(t for _, t in b)
    surplus_b = collections.Counter(t for _, t in b) - collections.Counter(t for _, t in a)

    def pick(inputs, surplus):
        picked = []
        for name, type_ in inputs:
            if surplus[type_] > 0:
                surplus[type_] -= 1
                picked.append((name, type_))
        return picked

    return pick(a, surplus_a), pick(b, surplus_b)


def _dims(type_: str) -> str:
    """`f32[10,1]{1,0}` -> `f32[10,1]`."""
    return type_.partition("{")[0]


def _is_transpose(a: str, b: str) -> bool:
    match_a, match_b = _ARRAY_TYPE.match(a), _ARRAY_TYPE.match(b)
    if not (match_a and match_b) or match_a.group(1) != match_b.group(1):
        return False
    dims_a, dims_b = match_a.group(2).split(","), match_b.group(2).split(",")
    return len(dims_a) > 1 and dims_a != dims_b and dims_a == dims_b[::-1]


def _renamed(signature: str, renames: Mapping[str, str]) -> str:
    for old, new in renames.items():
        signature = re.sub(rf"{re.escape(old)}(?![\d,])", new, signature)
    return signature


@dataclasses.dataclass(frozen=True)
class ProgramComparison:
    """The verdict on a set of compiled steps.

    Attributes:
      steps: the compiled steps, by library, in the order given.
      groups: libraries whose programs are the same up to names; one group when all are.
      core_groups: the same for the programs' cores (see the module docstring).
      differences: for the first library of each core group after the first, how its
        core differs from the first library's core.
    """

    steps: Mapping[str, CompiledStep]
    groups: list[list[str]]
    core_groups: list[list[str]]
    differences: list[Difference]

    @property
    def same(self) -> bool:
        """Whether every program is the same up to names."""
        return len(self.groups) == 1

    @property
    def same_core(self) -> bool:
        """Whether every program is the same up to names once self-contained inputs go."""
        return len(self.core_groups) == 1

    def statement(self, titles: Mapping[str, str] | None = None) -> list[str]:
        """The verdict in sentences: whether the programs are the same up to names, what
        is different if not, and what the cost analysis says. Text in backticks is code."""
        titles = titles or {}

        def title(name: str) -> str:
            return titles.get(name, name)

        everyone = _join([title(n) for n in self.steps])
        first = next(iter(self.steps.values())).program
        if len(self.steps) == 1:
            return [
                f"Only {everyone} was run, so there is no other program to compare with: "
                f"{len(first.instructions)} instructions in {len(first.computations)} "
                f"computations, {len(first.inputs)} inputs.",
                _cost_sentence(self.steps, title),
            ]
        if self.same:
            sentences = [
                f"The compiled train steps of {everyone} are the same program up to names: "
                f"{len(first.instructions)} instructions in {len(first.computations)} "
                f"computations, {len(first.inputs)} inputs."
            ]
        else:
            sentences = [
                f"Up to names, XLA compiled {len(self.groups)} different programs for "
                f"{everyone}." + _grouping(self.groups, title)
            ]
            sentences += _self_contained_sentence(self.steps, title)
            if self.same_core:
                if any(step.self_contained_inputs() for step in self.steps.values()):
                    sentences.append("Without them, the programs are the same up to names.")
            else:
                if any(len(group) > 1 for group in self.core_groups):
                    joined = "; ".join(
                        _join([title(n) for n in g]) for g in self.core_groups if len(g) > 1
                    )
                    sentences.append(f"Without them, these are the same up to names: {joined}.")
                sentences += [_describe(d, title) for d in self.differences]
        sentences.append(_cost_sentence(self.steps, title))
        return sentences


def compare_programs(steps: Mapping[str, CompiledStep]) -> ProgramComparison:
    """Groups `steps` by program and by core, and describes how each core differs from the
    first library's."""
    if not steps:
        raise ValueError("no compiled steps to compare")
    groups = _group(steps, lambda step: step.program.fingerprint)
    core_groups = _group(steps, lambda step: step.core.fingerprint)
    reference = steps[core_groups[0][0]]
    differences = [difference(reference, steps[group[0]]) for group in core_groups[1:]]
    return ProgramComparison(dict(steps), groups, core_groups, differences)


def _group(steps: Mapping[str, CompiledStep], key: Callable[[CompiledStep], str]):
    groups: dict[str, list[str]] = {}
    for name, step in steps.items():
        groups.setdefault(key(step), []).append(name)
    return list(groups.values())


def _grouping(groups: list[list[str]], title) -> str:
    together = [g for g in groups if len(g) > 1]
    if not together:
        return ""
    return (
        " The same up to names: " + "; ".join(_join([title(n) for n in g]) for g in together) + "."
    )


def _self_contained_sentence(steps: Mapping[str, CompiledStep], title) -> list[str]:
    found = {name: step.self_contained_inputs() for name, step in steps.items()}
    keepers = [name for name, inputs in found.items() if inputs]
    if not keepers:
        return []
    listed = "; ".join(
        f"{title(name)}'s " + ", ".join(f"`{n}` ({_dims(t)})" for n, t in found[name])
        for name in keepers
    )
    others = [title(name) for name in steps if name not in keepers]
    verb = "keeps" if len(others) == 1 else "keep"
    tail = f" {_join(others)} {verb} no such array." if others else ""
    return [
        f"Arrays computed from themselves and constants alone, and read by nothing else, "
        f"so that they cannot change the model: {listed}.{tail}"
    ]


# At most this many differing instructions are quoted per side; the rest are counted.
_QUOTED = 3


def _describe(difference: Difference, title) -> str:
    a, b = title(difference.reference), title(difference.other)
    parts = []
    if difference.op_counts:
        counts = ", ".join(f"{op} {x} vs {y}" for op, x, y in difference.op_counts)
        parts.append(f"operations ({a} vs {b}): {counts}")
    else:
        parts.append("the same number of operations of each kind")
    if difference.transposed:
        pairs = ", ".join(
            f"`{nb}` {_dims(tb)} where {a} has `{na}` {_dims(ta)}"
            for (na, ta), (nb, tb) in difference.transposed
        )
        parts.append(f"{b} stores {len(difference.transposed)} arrays transposed: {pairs}")
    if difference.inputs_only_in_reference or difference.inputs_only_in_other:
        parts.append(
            f"inputs only in {a}: {_inputs(difference.inputs_only_in_reference)}; "
            f"only in {b}: {_inputs(difference.inputs_only_in_other)}"
        )
    matched = " once those layouts are matched" if difference.transposed else ""
    parts.append(
        f"instructions that differ{matched}: {_quoted(difference.instructions_only_in_reference)}"
        f" in {a}, {_quoted(difference.instructions_only_in_other)} in {b}"
    )
    return f"{b} against {a}: " + "; ".join(parts) + "."


def _cost_sentence(steps: Mapping[str, CompiledStep], title) -> str:
    groups = _group(steps, lambda step: tuple(step.cost[key] for key in COST_KEYS))

    def figures(step: CompiledStep) -> str:
        return ", ".join(f"{_number(step.cost[key])} {key}" for key in COST_KEYS)

    if len(groups) == 1:
        return f"The cost analysis is the same for all: {figures(next(iter(steps.values())))}."
    return (
        "The cost analysis: "
        + "; ".join(
            f"{_join([title(n) for n in group])}: {figures(steps[group[0]])}" for group in groups
        )
        + "."
    )


def _inputs(inputs: list[tuple[str, str]]) -> str:
    return ", ".join(f"`{name}` {_dims(type_)}" for name, type_ in inputs) or "none"


# Opcodes that only move, name or group values: quoted after the ones that compute.
_PLUMBING = ("parameter", "bitcast", "copy", "constant", "tuple", "get-tuple-element", "fusion")


def _quoted(signatures: list[str]) -> str:
    if not signatures:
        return "none"
    signatures = sorted(signatures, key=lambda s: (s.split("(")[0] in _PLUMBING, s))
    shown = ", ".join(f"`{s}`" for s in signatures[:_QUOTED])
    rest = len(signatures) - _QUOTED
    return shown + (f" and {rest} more" if rest > 0 else "")


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


_METADATA = re.compile(r',\s*metadata=\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}')
_DEBUG_TABLES = re.compile(r"^(FileNames|FunctionNames|FileLocations|StackFrames)$")


def readable_hlo(text: str) -> str:
    """The HLO text without its debug metadata (source locations, op names) and without the
    tables they index: the program alone."""
    lines, skipping = [], False
    for line in text.splitlines():
        if _DEBUG_TABLES.match(line):
            skipping = True
        elif skipping and not line.strip():
            skipping = False
            continue
        if not skipping:
            lines.append(_METADATA.sub("", line))
    return "\n".join(lines).strip() + "\n"
