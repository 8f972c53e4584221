"""The ControlNet layer's rules, on a stand-in ControlNet whose residuals are easy to predict."""

from __future__ import annotations

import pytest
import torch

from animdiff.sampling.controlnet import (
    CONTROL_MORE_IMPORTANT,
    PROMPT_MORE_IMPORTANT,
    ControlLayer,
    ControlUnit,
)


class FakeControlNet(torch.nn.Module):
    """Residual i of 13 (12 down, then mid) is the hint's mean per row plus i: each is traceable."""

    def __init__(self, pooled: bool = False) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"global_pool_conditions": pooled})()
        self.rows_seen: list[int] = []

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, return_dict=False):
        self.rows_seen.append(sample.shape[0])
        base = controlnet_cond.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1) + sample[:, :1, :1, :1] * 0
        down = [base + i for i in range(12)]
        return down, base + 12


def run(unit: ControlUnit, guided: bool = True, step: int = 0):
    rows = 4 if guided else 2
    sample = torch.zeros(rows, 4, 2, 2)
    hints = unit.hints[:2]
    return ControlLayer([unit]).residuals(
        sample, torch.tensor(10), torch.zeros(rows, 3, 8), [hints], step=step, guided=guided
    )


def hints() -> torch.Tensor:
    return torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)  # mean 1.0 once scaled to [0, 1]


def test_balanced_scales_every_residual_on_cond_and_uncond_rows() -> None:
    out = run(ControlUnit(FakeControlNet(), hints(), weight=0.5))
    assert [float(d[0]) for d in out.down] == [0.5 * (1 + i) for i in range(12)]
    assert torch.equal(out.down[3][:2], out.down[3][2:])  # cond and uncond alike
    assert float(out.mid[0]) == 0.5 * 13


def test_my_prompt_is_more_important_uses_the_soft_weights() -> None:
    out = run(ControlUnit(FakeControlNet(), hints(), weight=1.0, control_mode=PROMPT_MORE_IMPORTANT))
    for i, residual in enumerate(out.down):
        assert float(residual[0]) == pytest.approx((1 + i) * 0.825 ** (12 - i), rel=1e-6)
    assert float(out.mid[0]) == 13.0  # the mid block keeps the full weight


def test_controlnet_is_more_important_acts_on_the_cond_rows_only() -> None:
    net = FakeControlNet()
    out = run(ControlUnit(net, hints(), weight=2.0, control_mode=CONTROL_MORE_IMPORTANT))
    assert net.rows_seen == [2]  # the ControlNet runs on the cond rows only
    assert all(float(d[:2].min()) > 0 and float(d[2:].abs().max()) == 0 for d in out.down)
    assert float(out.mid[2:].abs().max()) == 0
    unguided = run(
        ControlUnit(FakeControlNet(), hints(), weight=2.0, control_mode=CONTROL_MORE_IMPORTANT), False
    )
    assert float(unguided.mid[0]) == 26.0 and unguided.mid.shape[0] == 2


def test_pooled_controlnets_act_on_the_cond_rows_only() -> None:
    net = FakeControlNet(pooled=True)
    run(ControlUnit(net, hints()))
    assert net.rows_seen == [2]


def test_units_outside_their_range_add_nothing_and_units_add_up() -> None:
    early = ControlUnit(FakeControlNet(), hints(), applies=lambda step: step < 2)
    assert run(early, step=2) is None
    both = ControlLayer(
        [ControlUnit(FakeControlNet(), hints()), ControlUnit(FakeControlNet(), hints(), weight=2)]
    )
    out = both.residuals(
        torch.zeros(2, 4, 2, 2), torch.tensor(1), torch.zeros(2, 3, 8), both.hints, step=0, guided=False
    )
    assert float(out.mid[0]) == 3 * 13
