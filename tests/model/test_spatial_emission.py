"""The spatial (categorical) emission: cell arithmetic, no revisits, REINFORCE."""

from __future__ import annotations

import math

import pytest
import torch

from wsi_dram.errors import ConfigError
from wsi_dram.glimpse.sensor import PyramidSensor
from wsi_dram.model.dram import DRAM, ModelConfig
from wsi_dram.model.modules import SpatialLocationNetwork, context_feature_side
from wsi_dram.training.config import read_train_config


def _picker(channels: int = 1) -> SpatialLocationNetwork:
    """A network whose cell score is the cell's first feature (h ignored)."""
    net = SpatialLocationNetwork(hidden=4, feature_channels=channels, attention=1)
    with torch.no_grad():
        net.feature.weight.zero_()
        net.feature.weight[0, 0] = 1.0
        net.feature.bias.zero_()
        net.state.weight.zero_()
        net.score.weight.fill_(10.0)
        net.score.bias.zero_()
    return net


def test_mean_path_takes_the_best_cell_centre_then_the_next() -> None:
    # s = 4: cells are 0.5 wide in [-1, 1]; the best cell is row 2, col 1.
    features = torch.zeros(1, 1, 4, 4)
    features[0, 0, 2, 1] = 1.0
    features[0, 0, 0, 3] = 0.5
    net, h = _picker(), torch.zeros(1, 4)
    visited = torch.zeros(1, 16, dtype=torch.bool)
    l, log_pi, cell = net(h, features, visited, sample=False)  # noqa: E741
    assert int(cell) == 2 * 4 + 1
    # centre x = -1 + (1 + 0.5) * 0.5, y = -1 + (2 + 0.5) * 0.5
    torch.testing.assert_close(l, torch.tensor([[-0.25, 0.25]]))
    assert float(log_pi) == 0.0
    # inhibition of return: with that cell visited, the runner-up (row 0, col 3)
    visited[0, 9] = True
    l, _, cell = net(h, features, visited, sample=False)  # noqa: E741
    assert int(cell) == 3
    torch.testing.assert_close(l, torch.tensor([[0.75, -0.75]]))


def test_sampling_is_uniform_over_unvisited_cells_when_scores_are_equal() -> None:
    net, h = _picker(), torch.zeros(4000, 4)
    features = torch.zeros(4000, 1, 2, 2)
    visited = torch.zeros(4000, 4, dtype=torch.bool)
    visited[:, 0] = True
    gen = torch.Generator().manual_seed(0)
    loc, log_pi, cell = net(h, features, visited, sample=True, generator=gen)
    # three cells left, each with probability 1/3
    torch.testing.assert_close(log_pi, torch.full((4000,), math.log(1 / 3)))
    counts = torch.bincount(cell, minlength=4)
    assert int(counts[0]) == 0
    assert all(abs(int(c) - 4000 / 3) < 150 for c in counts[1:])  # ~6 sd
    # each location lies inside its cell: col = floor((x + 1) / 1), row likewise
    col = ((loc[:, 0] + 1) / 1.0).floor().clamp(max=1).long()
    row = ((loc[:, 1] + 1) / 1.0).floor().clamp(max=1).long()
    assert torch.equal(row * 2 + col, cell)
    assert float(loc.std(dim=0).min()) > 0.4  # jittered within cells, not centres


def _model(glimpses: int) -> DRAM:
    config = ModelConfig(
        glimpses=glimpses,
        glimpse_size=4,
        scales=2,
        context_size=8,  # one conv layer: 8 -> 4, 16 cells
        hidden=16,
        hidden_what=8,
        hidden_where=8,
        conv_channels=[4],
        context_channels=[4],
        emission="spatial",
        detach_core=True,
    )
    return DRAM(config, 1, 2)


def _sensor(b: int = 5) -> PyramidSensor:
    images = torch.rand(b, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return PyramidSensor(images, 4, 2, context_size=8)


def test_a_field_is_never_read_twice_in_the_same_cell() -> None:
    torch.manual_seed(0)
    model = _model(glimpses=16)
    for sample in (True, False):
        out = model(_sensor(), sample=sample, generator=torch.Generator())
        cells = ((out.locations + 1) / 0.5).floor().clamp(max=3).long()  # (B, T, 2)
        index = cells[..., 1] * 4 + cells[..., 0]  # (B, T)
        for row in index:
            assert sorted(row.tolist()) == list(range(16))


def test_reinforce_teaches_the_policy_to_go_where_the_context_is_bright() -> None:
    # Each image is dark but for one bright 4 x 4 px block, one cell of the 4 x 4
    # grid, at a random place; reward 1 when the glimpse lands in that cell. At
    # the start the sampled policy hits it about 1 time in 16; REINFORCE must
    # teach it to go there on new images (a local rule, so it transfers).
    torch.manual_seed(0)
    model = _model(glimpses=1)
    gen = torch.Generator().manual_seed(1)

    def batch(n: int) -> tuple[PyramidSensor, torch.Tensor]:
        target = torch.randint(0, 16, (n,), generator=gen)
        images = 0.2 * torch.rand(n, 1, 16, 16, generator=gen)
        for i, t in enumerate(target.tolist()):
            r, c = divmod(t, 4)
            images[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 1.0
        return PyramidSensor(images, 4, 2, context_size=8), target

    def hits(out_locations: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cell = ((out_locations[:, 0] + 1) / 0.5).floor().clamp(max=3).long()
        return ((cell[:, 1] * 4 + cell[:, 0]) == target).float()

    def sampled_hit_rate() -> float:
        sensor, target = batch(400)
        with torch.no_grad():
            out = model(sensor, sample=True, generator=gen)
        return float(hits(out.locations, target).mean())

    assert sampled_hit_rate() < 0.2
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        sensor, target = batch(32)
        out = model(sensor, generator=gen)
        reward = hits(out.locations, target)
        loss = -(out.log_pi[:, 0] * (reward - reward.mean())).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sampled_hit_rate() > 0.9


def test_config_refuses_more_glimpses_than_cells(tmp_path: object) -> None:
    assert context_feature_side(32, 2) == 8
    assert context_feature_side(8, 3) == 4  # 8 -> 4, then no more halving
    with pytest.raises(ConfigError, match="exceeds the cells"):
        read_train_config(
            None,
            [
                "model.emission=spatial",
                "model.context_size=8",
                "model.context_channels=[4]",
                "model.glimpses=17",
            ],
        )
    with pytest.raises(ConfigError, match="needs model.context"):
        read_train_config(
            None,
            ["model.emission=spatial", "model.context=false", "model.first=random"],
        )
