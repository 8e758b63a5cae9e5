"""The sub-networks of DRAM/RAM, one small module each, in the papers' notation.

Mnih et al. (2014), "Recurrent Models of Visual Attention", section 3; Ba et al.
(2015), "Multiple Object Recognition with Visual Attention", section 3:

* ``GlimpseNetwork``  g_t = G_image(x_t) * G_loc(l_t)  ("what" x "where")
* ``CoreNetwork``     h_t = LSTM(g_t, h_{t-1}), one or two layers
* ``ContextNetwork``  h^(2)_0 = G_context(coarse view of the field)
* ``LocationNetwork`` l_{t+1} ~ N(mu(h_t), sigma^2), mu in [-1, 1]
* ``SpatialLocationNetwork`` l_{t+1} ~ softmax over the context's feature map
* ``BaselineNetwork`` b_t = f_b(h_t) (on the detached state)
* ``ActionNetwork``   p(y | h_T) (class logits)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _conv_stack(in_channels: int, channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        in_channels = out_channels
    return nn.Sequential(*layers)


def _pooled_conv_stack(in_channels: int, channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out_channels in enumerate(channels):
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        if i < len(channels) - 1:
            layers.append(nn.MaxPool2d(2))
        in_channels = out_channels
    return nn.Sequential(*layers)


class GlimpseNetwork(nn.Module):
    """g_t: the K stacked windows ("what") times the location ("where").

    Args:
        channels: C of the field.
        size: g.
        scales: K.
        conv_channels: output channels of the 3x3 conv layers of the "what"
            path; empty for a fully connected path (Mnih et al.).
        hidden_what: width of the fully connected "what" feature when no conv.
        hidden_where: width of the "where" MLP.
        hidden: width of g_t.
        what_pool: how the conv "what" path ends: "flatten" (the conv maps,
            max-pooled once when g > 12, flattened into a linear layer) or
            "global" (a 2x2 max-pool after every conv but the last, then the
            global max and mean of each channel: a texture detector that does
            not care where in the window the texture is; inputs centred on 0).
        combine: how "what" and "where" meet: "product" (Ba et al. 2015,
            ``relu(W_what h_what) * relu(W_where h_where)``) or "sum" (Mnih et
            al. 2014, ``relu(W_what h_what + W_where h_where)``).
    """

    def __init__(
        self,
        channels: int,
        size: int,
        scales: int,
        conv_channels: list[int],
        hidden_what: int,
        hidden_where: int,
        hidden: int,
        what_pool: str = "flatten",
        combine: str = "product",
    ) -> None:
        super().__init__()
        if combine not in ("product", "sum"):
            raise ValueError(f'combine must be "product" or "sum", got {combine!r}')
        self.sum = combine == "sum"
        in_channels = channels * scales
        self.global_pool = what_pool == "global" and bool(conv_channels)
        if self.global_pool:
            self.conv = _pooled_conv_stack(in_channels, conv_channels)
            self.pool = False
            self.what = nn.Linear(2 * conv_channels[-1], hidden)
            self.where = nn.Sequential(
                nn.Linear(2, hidden_where), nn.ReLU(), nn.Linear(hidden_where, hidden)
            )
            return
        self.conv = _conv_stack(in_channels, conv_channels)
        self.pool = size > 12
        side = size // 2 if self.pool else size
        features = (conv_channels[-1] if conv_channels else in_channels) * side * side
        if not conv_channels:
            self.conv = nn.Sequential(
                nn.Flatten(), nn.Linear(features, hidden_what), nn.ReLU()
            )
            features = hidden_what
        self.what = nn.Linear(features, hidden)
        self.where = nn.Sequential(
            nn.Linear(2, hidden_where), nn.ReLU(), nn.Linear(hidden_where, hidden)
        )

    def forward(self, x: Tensor, l: Tensor) -> Tensor:  # noqa: E741
        """(B, K, C, g, g) windows and (B, 2) locations -> (B, hidden) g_t."""
        b, k, c, g, _ = x.shape
        if self.global_pool:
            z = self.conv((x.reshape(b, k * c, g, g) - 0.5) * 2)  # (B, C', g', g')
            z = torch.cat([z.amax(dim=(2, 3)), z.mean(dim=(2, 3))], dim=1)  # (B, 2C')
            return self._combine(self.what(z), self.where(l))
        z = self.conv(x.reshape(b, k * c, g, g))  # (B, C', g, g) or (B, h)
        if z.ndim == 4 and self.pool:
            z = nn.functional.max_pool2d(z, 2)
        return self._combine(self.what(z.flatten(1)), self.where(l))

    def _combine(self, what: Tensor, where: Tensor) -> Tensor:
        """(B, hidden) pre-activations of both paths -> (B, hidden) g_t."""
        if self.sum:
            return torch.relu(what + where)
        return torch.relu(what) * torch.relu(where)


def context_feature_side(context_size: int, layers: int) -> int:
    """Side of the context network's feature map: halved after a conv layer
    while it is at least 8."""
    side = context_size
    for _ in range(layers):
        if side >= 8:
            side //= 2
    return side


class ContextNetwork(nn.Module):
    """G_context: a coarse view of the whole field -> initial upper-layer state."""

    def __init__(
        self, channels: int, context_size: int, conv_channels: list[int], hidden: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        side = context_size
        for out_channels in conv_channels:
            layers += [
                nn.Conv2d(channels, out_channels, 3, padding=1),
                nn.ReLU(),
            ]
            channels = out_channels
            if side >= 8:
                layers.append(nn.MaxPool2d(2))
                side //= 2
        assert side == context_feature_side(context_size, len(conv_channels))
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * side * side, hidden)
        self.feature_channels = channels
        self.feature_side = side

    def forward(self, view: Tensor) -> Tensor:
        """(B, C, c, c) coarse view -> (B, hidden)."""
        return self.state(self.features(view))

    def features(self, view: Tensor) -> Tensor:
        """(B, C, c, c) coarse view -> (B, C', s, s) feature map, s = feature_side."""
        return self.conv(view)

    def state(self, features: Tensor) -> Tensor:
        """(B, C', s, s) feature map -> (B, hidden) initial upper-layer state."""
        return torch.relu(self.fc(features.flatten(1)))


class RectifierCell(nn.Module):
    """The core of Mnih et al. for classification: h_t = relu(W_g g_t + W_h h_{t-1})."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.g2h = nn.Linear(hidden, hidden)
        self.h2h = nn.Linear(hidden, hidden)

    def forward(self, g: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """(B, hidden) input and (h, unused c) -> (h, c)."""
        h, c = state
        return torch.relu(self.g2h(g) + self.h2h(h)), c


class CoreNetwork(nn.Module):
    """h_t: a stack of recurrent cells (1 layer for RAM, 2 for DRAM).

    Args:
        hidden: state width.
        layers: 1 or 2.
        cell: "lstm" (Ba et al.) or "rnn" (rectifier units, Mnih et al.).
        detach_between: feed the upper layer a detached copy of the lower
            layer's state, so that what trains the upper layer (the policy's
            REINFORCE term) does not reach the lower layer and the glimpse
            network.
    """

    def __init__(
        self, hidden: int, layers: int, cell: str = "lstm", detach_between: bool = False
    ) -> None:
        super().__init__()
        self.detach_between = detach_between
        make = (
            (lambda: nn.LSTMCell(hidden, hidden))
            if cell == "lstm"
            else (lambda: RectifierCell(hidden))
        )
        self.cells = nn.ModuleList(make() for _ in range(layers))

    def forward(
        self, g: Tensor, state: list[tuple[Tensor, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """One step: g_t (B, hidden) and per-layer (h, c) -> new per-layer (h, c)."""
        new_state = []
        x = g
        for cell, (h, c) in zip(self.cells, state, strict=True):
            h, c = cell(x, (h, c))
            new_state.append((h, c))
            x = h.detach() if self.detach_between else h
        return new_state


class LocationNetwork(nn.Module):
    """l_t: Gaussian policy with fixed sigma over locations in ``[-1, 1]``."""

    def __init__(self, hidden: int, sigma: float) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, 2)
        self.sigma = sigma

    def forward(
        self, h: Tensor, sample: bool, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Choose the next location.

        Returns:
            ``(l, log_pi, mu)``: l (B, 2) detached and clamped to ``[-1, 1]``,
            log_pi (B,) log-density of the sampled l under N(mu, sigma^2) with its
            gradient into this network (zero when not sampling), mu (B, 2).
        """
        mu = torch.tanh(self.fc(h))  # (B, 2)
        if not sample:
            return mu.detach(), torch.zeros_like(mu[:, 0]), mu
        where = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(mu.shape, generator=generator, device=where).to(mu)
        l = (mu.detach() + self.sigma * noise).detach()  # noqa: E741
        log_pi = (
            -((l - mu) ** 2) / (2 * self.sigma**2)
            - math.log(self.sigma)
            - 0.5 * math.log(2 * math.pi)
        ).sum(dim=1)  # (B,)
        return l.clamp(-1.0, 1.0), log_pi, mu


class SpatialLocationNetwork(nn.Module):
    """l_t: a categorical policy over the cells of the context's feature map.

    The context network's (B, C', s, s) map cuts the field into s x s cells. Each
    cell gets a score from its own features and the current upper-layer state
    (additive attention: ``v . tanh(W_f f_ij + W_h h_t)``), and the next location
    is drawn from the softmax over the cells not yet visited (inhibition of
    return), uniformly within the cell. Unlike a Gaussian around a regressed
    mean, this policy starts uniform over the field (so it explores like random
    glimpses) and learns "look where the coarse view shows X" as a local,
    translation-equivariant rule. Not in the papers; ``model.emission``.

    Args:
        hidden: width of h_t.
        feature_channels: C' of the context feature map.
        attention: width of the additive attention.
    """

    def __init__(self, hidden: int, feature_channels: int, attention: int = 64) -> None:
        super().__init__()
        self.feature = nn.Conv2d(feature_channels, attention, 1)
        self.state = nn.Linear(hidden, attention, bias=False)
        self.score = nn.Conv2d(attention, 1, 1)

    def forward(
        self,
        h: Tensor,
        features: Tensor,
        visited: Tensor,
        sample: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Choose the next location.

        Args:
            h: (B, hidden) upper-layer state.
            features: (B, C', s, s) context feature map.
            visited: (B, s*s) bool, cells already chosen (excluded while any
                cell is left).
            sample: draw from the softmax (and uniformly within the cell);
                otherwise take the most likely cell's centre.
            generator: source of randomness.

        Returns:
            ``(l, log_pi, cell)``: l (B, 2) detached ``(x, y)`` in ``[-1, 1]``,
            log_pi (B,) log-probability of the chosen cell with its gradient
            (zero when not sampling), cell (B,) int64 row-major index.
        """
        b, _, s, _ = features.shape
        z = torch.tanh(self.feature(features) + self.state(h)[:, :, None, None])
        logits = self.score(z).flatten(1)  # (B, s*s)
        full = visited.all(dim=1, keepdim=True)  # (B, 1)
        logits = logits.masked_fill(visited & ~full, float("-inf"))
        log_p = torch.log_softmax(logits, dim=1)  # (B, s*s)
        where = generator.device if generator is not None else torch.device("cpu")
        if sample:
            probs = log_p.detach().exp().to(where)
            cell = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            cell = cell.to(log_p.device)
            jitter = torch.rand(b, 2, generator=generator, device=where)
            jitter = jitter.to(log_p.device)
            log_pi = log_p.gather(1, cell[:, None]).squeeze(1)
        else:
            cell = log_p.argmax(dim=1)
            jitter = torch.full((b, 2), 0.5, device=log_p.device)
            log_pi = torch.zeros(b, device=log_p.device)
        col, row = cell % s, cell // s
        xy = torch.stack([col, row], dim=1).to(jitter.dtype) + jitter  # (B, 2)
        l = (xy * (2.0 / s) - 1.0).clamp(-1.0, 1.0)  # noqa: E741
        return l.detach(), log_pi, cell


class BaselineNetwork(nn.Module):
    """b_t: expected reward from the (detached) state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, 1)

    def forward(self, h: Tensor) -> Tensor:
        """(B, hidden) -> (B,)."""
        return self.fc(h.detach()).squeeze(1)


class ActionNetwork(nn.Module):
    """Class logits from the lower (classification) layer's last state."""

    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        """(B, hidden) -> (B, num_classes) logits."""
        return self.fc(h)
