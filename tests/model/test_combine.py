"""How the glimpse network joins its "what" and "where" paths."""

from __future__ import annotations

import pytest
import torch

from wsi_dram.model.modules import GlimpseNetwork


def _by_hand(net: GlimpseNetwork, x: torch.Tensor, l: torch.Tensor) -> tuple:  # noqa: E741
    """Both paths' pre-activations, computed from the layers' weights directly."""
    fc = net.conv[1]  # Flatten, Linear, ReLU
    h_what = torch.relu(x.flatten(1) @ fc.weight.T + fc.bias)
    what = h_what @ net.what.weight.T + net.what.bias
    w1, w2 = net.where[0], net.where[2]
    where = torch.relu(l @ w1.weight.T + w1.bias) @ w2.weight.T + w2.bias
    return what, where


def test_sum_is_mnih_and_product_is_ba() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, 1, 8, 8)
    l = torch.rand(3, 2) * 2 - 1  # noqa: E741
    for combine in ("sum", "product"):
        torch.manual_seed(1)
        net = GlimpseNetwork(1, 8, 1, [], 16, 8, 12, combine=combine)
        what, where = _by_hand(net, x, l)
        want = (
            torch.relu(what + where)
            if combine == "sum"
            else torch.relu(what) * torch.relu(where)
        )
        assert torch.allclose(net(x, l), want, atol=1e-6)


def test_unknown_combine_is_refused() -> None:
    with pytest.raises(ValueError, match="combine"):
        GlimpseNetwork(1, 8, 1, [], 16, 8, 12, combine="concat")
