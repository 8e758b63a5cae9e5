"""DRAM (Ba et al. 2015) with RAM (Mnih et al. 2014) as a configuration.

DRAM: a context network over a coarse view of the field initialises the upper of
two LSTM layers, whose emission network chooses every location, including the
first. The lower layer integrates the glimpses and feeds the classifier. RAM: one
LSTM layer that does both, no context, first location uniformly random.

Training uses the hybrid loss of Ba et al. (eq. 9) / Mnih et al. (section 3.2):
cross-entropy + baseline MSE + lambda * REINFORCE, the reward being 1 for a
correct final classification. Sampled locations are detached before they are read
(the sensor is not differentiable); the log-density keeps its gradient into the
emission network, and the advantage ``R - b_t`` is detached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsi_dram.glimpse.sensor import GlimpseSensor
from wsi_dram.model.modules import (
    ActionNetwork,
    BaselineNetwork,
    ContextNetwork,
    CoreNetwork,
    GlimpseNetwork,
    LocationNetwork,
    SpatialLocationNetwork,
)

Policy = Literal["learned", "random", "center"]


@dataclass
class ModelConfig:
    """The ``[model]`` section: architecture and policy.

    Attributes:
        glimpses: T, glimpses per image.
        glimpse_size: g, window side in output pixels.
        scales: K, scales per glimpse (scale k covers ``2**k * g`` level-0 px).
        context_size: side of the coarse view fed to the context network.
        layers: recurrent layers: 2 = DRAM, 1 = RAM.
        cell: "lstm" (Ba et al.) or "rnn" (rectifier core of Mnih et al.).
        context: use the context network to initialise the upper layer.
        first: how the first location is chosen: "context" (emitted from the
            context state), "random" (uniform in ``[-1, 1]``, RAM) or "center".
        hidden: width of g_t and of the LSTM states.
        hidden_what: width of the fully connected "what" path (no conv).
        hidden_where: width of the "where" MLP.
        conv_channels: 3x3 conv layers of the "what" path (empty: fully connected).
        context_channels: 3x3 conv layers of the context network.
        sigma: fixed standard deviation of the Gaussian policy, ``[-1, 1]`` units
            (``emission = "gaussian"`` only).
        detach_core: keep the REINFORCE gradient out of the "what" system (the
            glimpse network, the lower layer and the classifier), which the
            cross-entropy alone then trains. With 2 layers the upper layer reads
            a detached lower state, so REINFORCE trains the "where" system: the
            emission network, the upper layer and the context network. With 1
            layer it stops at the emission network's input.
        reinforce_emission_only: with ``detach_core``, stop the REINFORCE
            gradient at the emission network's input even with 2 layers: the
            policy is then a trained linear map of the untrained upper layer and
            context network (what the whole-slide demo was tuned with).
        what_pool: "flatten" or "global" end of the conv "what" path (see
            :class:`~wsi_dram.model.modules.GlimpseNetwork`); "global" suits
            textures (slides), "flatten" shapes (digits).
        combine: "product" (Ba et al.) or "sum" (Mnih et al.) of the "what"
            and "where" paths in the glimpse network.
        emission: "gaussian" (the papers: N(mu(h_t), sigma^2)) or "spatial":
            a softmax over the cells of the context network's feature map,
            never the same cell twice (see
            :class:`~wsi_dram.model.modules.SpatialLocationNetwork`); needs the
            context network, and ``glimpses`` at most the number of cells.
    """

    glimpses: int = 6
    glimpse_size: int = 8
    scales: int = 1
    context_size: int = 14
    layers: int = 2
    cell: Literal["lstm", "rnn"] = "lstm"
    context: bool = True
    first: Literal["context", "random", "center"] = "context"
    hidden: int = 256
    hidden_what: int = 128
    hidden_where: int = 128
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    context_channels: list[int] = field(default_factory=lambda: [16, 32])
    sigma: float = 0.1
    detach_core: bool = False
    reinforce_emission_only: bool = False
    what_pool: Literal["flatten", "global"] = "flatten"
    combine: Literal["product", "sum"] = "product"
    emission: Literal["gaussian", "spatial"] = "gaussian"


@dataclass
class DramOutput:
    """What one pass over a batch produced.

    Attributes:
        logits: (B, classes) from the lower layer after the last glimpse.
        log_pi: (B, E) log-density of each emitted (sampled) location.
        baselines: (B, E) b_t predicted at each emitting state.
        locations: (B, T, 2) the locations read, ``(x, y)`` in ``[-1, 1]``.
        step_logits: (B, T, classes) the classifier on the lower layer after
            each glimpse (the last equals ``logits``); None from stand-ins.
    """

    logits: Tensor
    log_pi: Tensor
    baselines: Tensor
    locations: Tensor
    step_logits: Tensor | None = None


class DRAM(nn.Module):
    """The recurrent attention model; see the module docstring.

    Args:
        config: The ``[model]`` section.
        channels: C of the fields.
        num_classes: number of classes.
    """

    def __init__(self, config: ModelConfig, channels: int, num_classes: int) -> None:
        super().__init__()
        if config.layers not in (1, 2):
            raise ValueError(f"model.layers must be 1 or 2, got {config.layers}")
        if config.first == "context" and not config.context:
            raise ValueError('model.first = "context" needs model.context = true')
        if config.emission == "spatial" and not config.context:
            raise ValueError('model.emission = "spatial" needs model.context = true')
        self.config = config
        h = config.hidden
        self.glimpse_net = GlimpseNetwork(
            channels,
            config.glimpse_size,
            config.scales,
            config.conv_channels,
            config.hidden_what,
            config.hidden_where,
            h,
            config.what_pool,
            config.combine,
        )
        self.core = CoreNetwork(
            h, config.layers, config.cell, config.detach_core and config.layers == 2
        )
        self.context_net = (
            ContextNetwork(channels, config.context_size, config.context_channels, h)
            if config.context
            else None
        )
        self.emission: LocationNetwork | SpatialLocationNetwork
        if config.emission == "spatial":
            assert self.context_net is not None
            cells = self.context_net.feature_side**2
            if config.glimpses > cells:
                raise ValueError(
                    f"model.glimpses ({config.glimpses}) exceeds the {cells} cells "
                    'of the context feature map (model.emission = "spatial")'
                )
            self.emission = SpatialLocationNetwork(h, self.context_net.feature_channels)
        else:
            self.emission = LocationNetwork(h, config.sigma)
        self.baseline = BaselineNetwork(h)
        self.classifier = ActionNetwork(h, num_classes)

    def forward(
        self,
        sensor: GlimpseSensor,
        sample: bool = True,
        policy: Policy = "learned",
        generator: torch.Generator | None = None,
    ) -> DramOutput:
        """Run T glimpses over the sensor's fields.

        Args:
            sensor: The batch's fields.
            sample: Sample locations from the Gaussian policy (training, and the
                M-sample inference); otherwise take its mean.
            policy: "learned"; or "random" (uniform locations) / "center" (every
                glimpse at (0, 0)) to ablate the policy.
            generator: Source of randomness for the sampled and random locations.
        """
        cfg = self.config
        b = sensor.batch_size
        device = next(self.parameters()).device
        zeros = torch.zeros(b, cfg.hidden, device=device)
        state = [(zeros, zeros) for _ in range(cfg.layers)]
        features: Tensor | None = None
        if self.context_net is not None:
            view = sensor.context().to(device)  # (B, C, c, c)
            features = self.context_net.features(view)  # (B, C', s, s)
            state[-1] = (self.context_net.state(features), zeros)

        log_pis: list[Tensor] = []
        baselines: list[Tensor] = []
        locations: list[Tensor] = []
        step_logits: list[Tensor] = []

        emission_only = cfg.detach_core and (
            cfg.layers == 1 or cfg.reinforce_emission_only
        )
        visited: Tensor | None = None

        def emit() -> Tensor:
            nonlocal visited
            top = state[-1][0].detach() if emission_only else state[-1][0]
            if isinstance(self.emission, SpatialLocationNetwork):
                assert features is not None
                f = features.detach() if emission_only else features
                if visited is None:
                    visited = f.new_zeros(b, f.shape[2] * f.shape[3], dtype=torch.bool)
                loc, log_pi, cell = self.emission(top, f, visited, sample, generator)
                visited = visited.scatter(1, cell[:, None], True)
            else:
                loc, log_pi, _ = self.emission(top, sample, generator)
            log_pis.append(log_pi)
            baselines.append(self.baseline(state[-1][0]))
            return loc

        for t in range(cfg.glimpses):
            if policy == "random":
                l = self._uniform(b, device, generator)  # noqa: E741
            elif policy == "center":
                l = torch.zeros(b, 2, device=device)  # noqa: E741
            elif t > 0 or cfg.first == "context":
                l = emit()  # noqa: E741
            elif cfg.first == "random":
                l = self._uniform(b, device, generator)  # noqa: E741
            else:
                l = torch.zeros(b, 2, device=device)  # noqa: E741
            locations.append(l)
            x = sensor.read(l.detach()).to(device)  # (B, K, C, g, g)
            g = self.glimpse_net(x, l.detach())  # (B, hidden)
            state = self.core(g, state)
            step_logits.append(self.classifier(state[0][0]))  # (B, classes)

        empty = torch.zeros(b, 0, device=device)
        return DramOutput(
            logits=step_logits[-1],
            log_pi=torch.stack(log_pis, dim=1) if log_pis else empty,
            baselines=torch.stack(baselines, dim=1) if baselines else empty,
            locations=torch.stack(locations, dim=1),
            step_logits=torch.stack(step_logits, dim=1),
        )

    @staticmethod
    def _uniform(
        b: int, device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        """(B, 2) uniform in ``[-1, 1]``, drawn on the generator's device."""
        where = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(b, 2, generator=generator, device=where)
        return (u * 2 - 1).to(device)


def hybrid_loss(
    out: DramOutput, labels: Tensor, reinforce_weight: float = 1.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy + baseline MSE + lambda * REINFORCE (advantage detached).

    Args:
        out: The model's output (sampled policy).
        labels: (B,) int64 class indices.
        reinforce_weight: lambda.

    Returns:
        The total loss and its terms (``ce``, ``baseline``, ``reinforce``) plus
        ``reward`` (mean) and ``accuracy``, all scalars.
    """
    ce = F.cross_entropy(out.logits, labels)
    correct = (out.logits.argmax(dim=1) == labels).float()  # (B,)
    reward = correct[:, None].expand_as(out.baselines)  # (B, E)
    if out.baselines.shape[1]:
        baseline = F.mse_loss(out.baselines, reward)
        advantage = (reward - out.baselines).detach()
        reinforce = -(out.log_pi * advantage).sum(dim=1).mean()
    else:
        baseline = reinforce = out.logits.new_zeros(())
    total = ce + baseline + reinforce_weight * reinforce
    terms = {
        "ce": ce.detach(),
        "baseline": baseline.detach(),
        "reinforce": reinforce.detach(),
        "reward": correct.mean(),
        "accuracy": correct.mean(),
    }
    return total, terms


def evidence_glimpse(out: DramOutput, target: int = 1) -> Tensor:
    """(B,) index of the glimpse after which p(target) rose the most.

    The rise of glimpse t is ``p_t - p_{t-1}`` with ``p_{-1} = 0``, p_t the
    class probability from the lower layer after glimpse t: where in the field
    the model found its evidence (a lesion's location). -1 for every row when
    the output has no per-glimpse logits.
    """
    if out.step_logits is None:
        return torch.full((out.logits.shape[0],), -1, dtype=torch.int64)
    p = torch.softmax(out.step_logits, dim=2)[:, :, target]  # (B, T)
    rise = p - F.pad(p, (1, 0))[:, :-1]  # (B, T)
    return rise.argmax(dim=1)


@torch.no_grad()
def predict_log_probs(
    model: DRAM,
    sensor: GlimpseSensor,
    samples: int = 1,
    policy: Policy = "learned",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Class log-probabilities, averaged over M paths.

    With ``samples == 1`` the learned policy follows its mean (deterministic apart
    from a random first glimpse); with M > 1 it samples M paths and averages their
    class log-probabilities (Ba et al. section 4).

    Returns:
        ``(log_probs (B, classes), locations (B, T, 2) of the first path)``.
    """
    total: Tensor | None = None
    first_locations: Tensor | None = None
    for _ in range(samples):
        out = model(sensor, sample=samples > 1, policy=policy, generator=generator)
        lp = F.log_softmax(out.logits, dim=1)
        total = lp if total is None else total + lp
        if first_locations is None:
            first_locations = out.locations
    assert total is not None and first_locations is not None
    return total / samples, first_locations
