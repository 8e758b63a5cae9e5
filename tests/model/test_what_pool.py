"""The "global" end of the glimpse network's conv "what" path."""

from __future__ import annotations

import torch

from wsi_dram.model.modules import GlimpseNetwork


def test_global_pool_sees_a_dark_spot_wherever_it_is() -> None:
    torch.manual_seed(0)
    net = GlimpseNetwork(3, 32, 2, [4, 8], 16, 8, 12, what_pool="global")
    l = torch.zeros(2, 2)  # noqa: E741
    # The same 4 x 4 dark spot at two places of an otherwise white window: the
    # global max and mean over positions see the same texture in both, up to
    # the borders of the 2x2 pooling grid, so g_t matches closely; a flattened
    # path would map the two to unrelated features.
    x = torch.ones(2, 2, 3, 32, 32)
    x[0, :, :, 8:12, 8:12] = 0.0
    x[1, :, :, 20:24, 16:20] = 0.0
    g = net(x, l)
    assert g.shape == (2, 12)
    assert torch.allclose(g[0], g[1], atol=1e-5)


def test_global_pool_trains_its_convolutions() -> None:
    torch.manual_seed(0)
    net = GlimpseNetwork(3, 32, 3, [4, 8, 8], 16, 8, 12, what_pool="global")
    x = torch.rand(4, 3, 3, 32, 32)
    net(x, torch.rand(4, 2) * 2 - 1).sum().backward()
    first_conv = net.conv[0]
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0
    # Three conv layers with a 2x2 max-pool between them: 32 -> 16 -> 8.
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.conv) == 2


def test_global_without_convolutions_falls_back_to_flatten() -> None:
    net = GlimpseNetwork(1, 8, 1, [], 16, 8, 12, what_pool="global")
    assert not net.global_pool
    assert net(torch.rand(3, 1, 1, 8, 8), torch.zeros(3, 2)).shape == (3, 12)
