"""jaxlinear._xla: reading optimized HLO and deciding, by computation, whether programs are
the same up to names, and what differs when they are not."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlinear
from jaxlinear import _xla
from jaxlinear._registry import TITLES

# A module as XLA:CPU prints it: a header, debug tables, a called computation, metadata.
HLO = """\
HloModule jit_f, is_scheduled=true, entry_computation_layout={(f32[3]{0}, s32[])->(f32[3]{0})}

FileNames
1 "/tmp/f.py"

FunctionNames
1 "f"

%add_computation (p0: s32[], p1: s32[]) -> s32[] {
  %p0 = s32[] parameter(0)
  %p1 = s32[] parameter(1)
  ROOT %sum = s32[] add(%p0, %p1), metadata={op_name="jit(f)/add" stack_frame_id=1}
}

ENTRY %main.3 (w: f32[3], count: s32[]) -> (f32[3], s32[]) {
  %w = f32[3]{0} parameter(0), metadata={op_name="w"}
  %count = s32[] parameter(1), metadata={op_name="count"}
  %half = f32[] constant(0.5)
  %one = s32[] constant(1)
  %scale = f32[3]{0} broadcast(%half), dimensions={}
  %w2 = f32[3]{0} multiply(%w, /*index=1*/%scale), metadata={op_name="jit(f)/mul {a, b}"}
  %next = s32[] fusion(%count, %one), kind=kLoop, calls=%add_computation
  ROOT %out = (f32[3]{0}, s32[]) tuple(%w2, %next)
}
"""


def _step(label, function, *args, names):
    return _xla.compile_jitted(label, jax.jit(function), args, input_names=names)


def test_the_module_examples_run():
    failures, tried = doctest.testmod(_xla, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_parse_reads_computations_and_skips_debug_tables():
    program = _xla.Program.parse(HLO)
    assert program.entry == "main.3"
    assert list(program.computations) == ["add_computation", "main.3"]
    assert [i.name for i in program.inputs] == ["w", "count"]
    multiply = next(i for i in program.instructions if i.opcode == "multiply")
    # The comment and the metadata (braces inside quotes) are gone; operands are kept.
    assert multiply.operands == ("%w", "%scale") and multiply.attributes == ""
    assert next(i for i in program.instructions if i.opcode == "broadcast").attributes == (
        "dimensions={}"
    )
    root = next(i for i in program.computations["main.3"] if i.root)
    assert root.type == "(f32[3]{0}, s32[])" and root.opcode == "tuple"
    assert program.op_counts == {
        "add": 1,
        "constant": 2,
        "broadcast": 1,
        "multiply": 1,
        "fusion": 1,
        "tuple": 1,
    }
    with pytest.raises(ValueError, match="no ENTRY"):
        _xla.Program.parse("HloModule empty\n")


def test_the_fingerprint_ignores_names_and_argument_order_only():
    program = _xla.Program.parse(HLO)
    renamed = HLO.replace("%w2", "%scaled").replace("%add_computation", "%plus")
    # Swap the two parameters' numbers and the result's order: the leaf order of a pytree.
    reordered = (
        HLO.replace("%w = f32[3]{0} parameter(0)", "%w = f32[3]{0} parameter(1)")
        .replace("%count = s32[] parameter(1)", "%count = s32[] parameter(0)")
        .replace("(f32[3]{0}, s32[]) tuple(%w2, %next)", "(s32[], f32[3]{0}) tuple(%next, %w2)")
    )
    assert reordered.count("parameter(0)") == reordered.count("parameter(1)") == 2
    assert _xla.Program.parse(renamed).fingerprint == program.fingerprint
    assert _xla.Program.parse(reordered).fingerprint == program.fingerprint
    # What is computed does count: another constant, another opcode.
    assert _xla.Program.parse(HLO.replace("constant(0.5)", "constant(2)")).fingerprint != (
        program.fingerprint
    )
    assert _xla.Program.parse(HLO.replace("multiply(%w", "add(%w")).fingerprint != (
        program.fingerprint
    )


def test_a_counter_that_only_updates_itself_is_found_and_removed():
    program = _xla.Program.parse(HLO)
    assert program.self_contained_inputs() == [1]
    core = program.without_inputs([1])
    assert [i.name for i in core.inputs] == ["w"]
    assert "add_computation" not in core.computations  # no longer called
    assert core.op_counts == {"constant": 1, "broadcast": 1, "multiply": 1}
    # The one array left is the result, as if the program returned it alone.
    (root,) = [i for i in core.computations["main.3"] if i.root]
    assert root.name == "w2" and root.type == "f32[3]{0}"


def test_two_compilations_of_one_computation_are_the_same():
    w, b = np.ones((4, 3), np.float32), np.ones((1, 3), np.float32)

    def first(w, b):
        return jnp.tanh(w * 2.0 + b)

    def second(bias, weight):  # other names, other argument order
        return jnp.tanh(weight * 2.0 + bias)

    steps = {
        "one": _step("one", first, w, b, names=("w", "b")),
        "two": _step("two", second, b, w, names=("bias", "weight")),
    }
    verdict = _xla.compare_programs(steps)
    assert verdict.same and verdict.groups == [["one", "two"]]
    assert verdict.differences == []
    statement = verdict.statement()
    assert statement[0].startswith("The compiled train steps of one and two are the same program")
    assert statement[-1].startswith("The cost analysis is the same for all")


def test_different_programs_are_told_apart_and_the_difference_named():
    w = np.ones((4, 3), np.float32)
    steps = {
        "times": _step("times", lambda w: w * 3.0, w, names=("w",)),
        "plus": _step("plus", lambda w: w + 3.0, w, names=("w",)),
    }
    verdict = _xla.compare_programs(steps)
    assert not verdict.same and not verdict.same_core
    assert verdict.groups == [["times"], ["plus"]]
    (difference,) = verdict.differences
    assert difference.op_counts == [("add", 0, 1), ("multiply", 1, 0)]
    assert any(s.startswith("multiply(") for s in difference.instructions_only_in_reference)
    assert any(s.startswith("add(") for s in difference.instructions_only_in_other)
    text = " ".join(verdict.statement())
    assert "2 different programs" in text
    assert "plus against times" in text and "add 0 vs 1, multiply 1 vs 0" in text


def test_a_step_counter_is_set_apart_and_the_rest_compared():
    w, x = np.ones((3, 2), np.float32), np.ones((5, 3), np.float32)

    def with_counter(w, count, x):
        return w - 0.1 * (x.T @ (x @ w)), count + 1

    def without(w, x):
        return w - 0.1 * (x.T @ (x @ w))

    steps = {
        "counting": _step("counting", with_counter, w, np.int32(0), x, names=("w", "count", "x")),
        "plain": _step("plain", without, w, x, names=("w", "x")),
    }
    verdict = _xla.compare_programs(steps)
    assert not verdict.same and verdict.same_core
    assert steps["counting"].self_contained_inputs() == [("count", "s32[]")]
    text = " ".join(verdict.statement())
    assert "counting's `count` (s32[])" in text and "plain keeps no such array" in text
    assert "Without them, the programs are the same up to names." in text


def test_a_transposed_layout_is_recognised():
    x = np.ones((5, 3), np.float32)

    def rows(w, x):  # w: [in, out]
        return w - 0.1 * (x.T @ (x @ w))

    def columns(w, x):  # w: [out, in], equinox's layout
        return w - 0.1 * (x @ w.T).T @ x

    steps = {
        "rows": _step("rows", rows, np.ones((3, 2), np.float32), x, names=("W", "x")),
        "columns": _step("columns", columns, np.ones((2, 3), np.float32), x, names=("V", "x")),
    }
    verdict = _xla.compare_programs(steps)
    assert not verdict.same
    (difference,) = verdict.differences
    assert difference.transposed == [(("W", "f32[3,2]{1,0}"), ("V", "f32[2,3]{1,0}"))]
    assert difference.inputs_only_in_reference == difference.inputs_only_in_other == []
    assert "columns stores 1 arrays transposed: `V` f32[2,3] where rows has `W` f32[3,2]" in (
        " ".join(verdict.statement())
    )


def test_readable_hlo_drops_the_debug_information():
    text = _xla.readable_hlo(HLO)
    assert "metadata" not in text and "FileNames" not in text and '"/tmp/f.py"' not in text
    assert "%w2 = f32[3]{0} multiply(%w, /*index=1*/%scale)" in text
    assert _xla.Program.parse(text).fingerprint == _xla.Program.parse(HLO).fingerprint


@pytest.fixture(scope="module")
def four_steps(diabetes):
    comparison = jaxlinear.compare(diabetes, jaxlinear.TrainConfig(epochs=4))
    return _xla.compiled_steps(comparison)


def test_the_four_libraries_compile_one_model(four_steps):
    """What the four compiled train steps are, as this comparison finds it (jax 0.10.2).

    linen's `TrainState.step` and nnx's `Optimizer.step` count updates and feed nothing
    else; equinox stores W as [out, in]. Apart from those, it is one program.
    """
    verdict = _xla.compare_programs(four_steps)
    assert not verdict.same  # the step counters and equinox's layout differ
    counters = {name: step.self_contained_inputs() for name, step in four_steps.items()}
    assert counters == {
        "linen": [(".step", "s32[]")],
        "nnx": [("[1]['step'].value", "u32[]")],
        "equinox": [],
        "penzai": [],
    }
    assert verdict.core_groups == [["linen", "nnx", "penzai"], ["equinox"]]
    (difference,) = verdict.differences
    assert (difference.reference, difference.other) == ("linen", "equinox")
    assert difference.op_counts == []  # the same operations...
    assert [(a[0], b[0]) for a, b in difference.transposed] == [  # ... on W transposed
        (".params['dense']['kernel']", ".model.linear.weight"),
        (".opt_state[0].mu['dense']['kernel']", ".opt_state[0].mu.linear.weight"),
        (".opt_state[0].nu['dense']['kernel']", ".opt_state[0].nu.linear.weight"),
    ]
    assert [a[1] for a, _ in difference.transposed] == ["f32[10,1]{1,0}"] * 3
    # Every program computes the prediction and the gradient: two products with the data.
    for step in four_steps.values():
        assert step.program.op_counts["dot"] == 2
        assert step.cost["flops"] > 2 * 2 * 353 * 10
    text = " ".join(verdict.statement(TITLES))
    assert "Without them, these are the same up to names: flax.linen, flax.nnx and penzai." in (
        text
    )
    assert "equinox stores 3 arrays transposed" in text


def test_one_program_alone_is_described_not_compared():
    w = np.ones((4, 3), np.float32)
    verdict = _xla.compare_programs({"only": _step("only", lambda w: w * 3.0, w, names=("w",))})
    assert verdict.same and verdict.differences == []
    assert verdict.statement()[0].startswith("Only only was run, so there is no other program")
    with pytest.raises(ValueError, match="no compiled steps"):
        _xla.compare_programs({})
