"""The TPU stopwatch (`costmodel`): cycles summed over a hand-built program whose sum is known,
loops multiplied by their trip counts, and a breakdown that adds up to the total."""
from __future__ import annotations

import pytest

from jaxstyle.platform import costmodel

# A batch loop around an iteration loop, whose body holds a line search (data-dependent trip
# count) and a 5-trip counted loop (as optax's history loops), with cycles on each instruction.
HAND_BUILT = """HloModule hand_built, entry_computation_layout={()->f32[8]{0}}

%fused_pad (param_0: f32[8]) -> f32[10] {
  %param_0 = f32[8]{0} parameter(0)
  %zero = f32[] constant(0)
  ROOT %pad.1 = f32[10]{0} pad(%param_0, %zero), padding=1_1
}

%fused_conv (param_0.1: f32[1,8,8,3], param_1: f32[3,3,3,4]) -> f32[1,8,8,4] {
  %param_0.1 = f32[1,8,8,3]{3,2,1,0} parameter(0)
  %param_1 = f32[3,3,3,4]{3,2,1,0} parameter(1)
  ROOT %convolution.1 = f32[1,8,8,4]{3,2,1,0} convolution(%param_0.1, %param_1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%search_cond (p.1: (f32[], f32[])) -> pred[] {
  %p.1 = (f32[], f32[]) parameter(0)
  %a = f32[] get-tuple-element(%p.1), index=0
  %b = f32[] get-tuple-element(%p.1), index=1
  ROOT %lt.1 = pred[] compare(%a, %b), direction=LT, backend_config={"estimated_cycles":"3"}
}

%search_body (p.2: (f32[], f32[])) -> (f32[], f32[]) {
  %p.2 = (f32[], f32[]) parameter(0)
  %x = f32[1,8,8,3]{3,2,1,0} constant({...})
  %k = f32[3,3,3,4]{3,2,1,0} constant({...})
  %fusion.conv = f32[1,8,8,4]{3,2,1,0} fusion(%x, %k), kind=kOutput, calls=%fused_conv, metadata={op_name="jit(_chunk)/while/body/jvp(VGG16Features)/block1_conv1/conv_general_dilated"}, backend_config={"flag_configs":[],"window_config":{"estimated_cycles":"100"}}
  %pooled = f32[1,4,4,4]{3,2,1,0} reduce-window(%fusion.conv, %x), metadata={op_name="jit(_chunk)/while/body/jvp(VGG16Features)/pool/reduce_window_max"}, backend_config={"estimated_cycles":"20"}
  ROOT %t.2 = (f32[], f32[]) tuple(%a2, %b2)
}

%history_cond (p.3: (s32[], f32[8])) -> pred[] {
  %p.3 = (s32[], f32[8]) parameter(0)
  %i.3 = s32[] get-tuple-element(%p.3), index=0
  %five = s32[] constant(5)
  ROOT %lt.3 = pred[] compare(%i.3, %five), direction=LT, backend_config={"estimated_cycles":"1"}
}

%history_body (p.4: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p.4 = (s32[], f32[8]) parameter(0)
  %v = f32[8]{0} get-tuple-element(%p.4), index=1
  %mul.4 = f32[8]{0} multiply(%v, %v), metadata={op_name="jit(_chunk)/while/body/while/body/lbfgs/mul"}, backend_config={"estimated_cycles":"7"}
  ROOT %t.4 = (s32[], f32[8]) tuple(%i.4, %mul.4)
}

%iteration_cond (p.5: (s32[], s32[])) -> pred[] {
  %p.5 = (s32[], s32[]) parameter(0)
  %i.5 = s32[] get-tuple-element(%p.5), index=0
  %n.5 = s32[] get-tuple-element(%p.5), index=1
  ROOT %lt.5 = pred[] compare(%i.5, %n.5), direction=LT, backend_config={"estimated_cycles":"2"}
}

%iteration_body (p.6: (s32[], s32[])) -> (s32[], s32[]) {
  %p.6 = (s32[], s32[]) parameter(0)
  %while.search = (f32[], f32[]) while(%init.s), condition=%search_cond, body=%search_body, metadata={op_name="jit(_chunk)/while/body/while/body/while"}
  %while.history = (s32[], f32[8]) while(%init.h), condition=%history_cond, body=%history_body
  %v.6 = f32[8]{0} constant({...})
  %fusion.pad = f32[10]{0} fusion(%v.6), kind=kLoop, calls=%fused_pad, backend_config={"estimated_cycles":"30"}
  ROOT %t.6 = (s32[], s32[]) tuple(%i.6, %n.6)
}

%batch_cond (p.7: (s32[], s32[])) -> pred[] {
  %p.7 = (s32[], s32[]) parameter(0)
  %i.7 = s32[] get-tuple-element(%p.7), index=0
  %n.7 = s32[] get-tuple-element(%p.7), index=1
  ROOT %lt.7 = pred[] compare(%i.7, %n.7), direction=LT, backend_config={"estimated_cycles":"1000"}
}

%batch_body (p.8: (s32[], s32[])) -> (s32[], s32[]) {
  %p.8 = (s32[], s32[]) parameter(0)
  ROOT %while.iteration = (s32[], s32[]) while(%p.8), condition=%iteration_cond, body=%iteration_body, metadata={op_name="jit(_chunk)/while/body/while"}
}

ENTRY %main (arg: (s32[], s32[])) -> (s32[], s32[]) {
  %arg = (s32[], s32[]) parameter(0)
  %outside = f32[8]{0} add(%v, %v), backend_config={"estimated_cycles":"5000"}
  ROOT %while.batch = (s32[], s32[]) while(%arg), condition=%batch_cond, body=%batch_body, metadata={op_name="jit(_chunk)/while"}
}
"""


def test_the_cycles_of_an_iteration_are_summed_over_a_hand_built_program():
    module = costmodel.parse(HAND_BUILT)
    assert module.entry == "main"
    chain = costmodel.loop_chain(module)
    assert [loop.name for loop in chain] == ["while.batch", "while.iteration", "while.search"]
    assert costmodel.trip_count(module, module.computations["iteration_body"].get("while.history")) == 5
    evals = 1.5
    tally = costmodel.iteration(module, evaluations=evals)
    expected = {
        "convolutions": 100 * evals,
        "pooling": 20 * evals,
        "lbfgs": 5 * 7,
        "copies and pads": 30,
        # the loop conditions: the search's runs once more than its body, the history's 6 times,
        # the iteration loop's once per iteration
        "elementwise": 3 * (evals + 1) + 1 * 6 + 2,
    }
    for kind in costmodel.KINDS:
        assert tally.by_kind[kind] == pytest.approx(expected.get(kind, 0.0)), kind
    assert tally.total == pytest.approx(sum(expected.values()))  # the breakdown adds up
    assert tally.total == pytest.approx(sum(tally.by_kind.values()))
    # the batch loop's condition and the instruction outside every loop are not an iteration's
    assert tally.total < 1000
    # two images one after another: twice the cycles
    assert costmodel.iteration(module, evals, batch_trips=2).total == pytest.approx(2 * tally.total)


def test_an_adam_loop_has_no_line_search_to_multiply():
    module = costmodel.parse(HAND_BUILT)
    # Without a line search the innermost data-dependent loop is the iteration loop itself.
    tally = costmodel.iteration(module, evaluations=4.0, line_search=False)
    assert tally.loops[0][0] == "while.search"


def test_the_roofline_counts_convolution_flops_and_bytes():
    module = costmodel.parse(HAND_BUILT)
    body = module.computations["search_body"]
    conv = body.get("fusion.conv")
    flops, highest = costmodel.module_flops(module, conv, body)
    assert flops == 2 * (8 * 8 * 4) * (3 * 3 * 3) and not highest
    assert costmodel.shape_bytes("(f32[2,3]{1,0}, bf16[4])") == 2 * 3 * 4 + 4 * 2
    # 1 FLOP/s and 1 byte/s: each instruction costs the larger of its FLOPs and its bytes
    cost = costmodel.roofline_cost(1.0, 1.0, 1.0)
    assert cost(module, body, conv) == max(flops, 8 * 8 * 4 * 4 + 8 * 8 * 3 * 4 + 3 * 3 * 3 * 4 * 4)
    assert costmodel.iteration_flops(module, evaluations=2.0) == pytest.approx(2 * flops)


def test_text_without_an_entry_is_refused():
    with pytest.raises(ValueError, match="no ENTRY"):
        costmodel.parse("HloModule empty\n")
