"""DRAM/RAM: shapes, policies, and that the REINFORCE term trains the emission net."""

from __future__ import annotations

import math

import torch

from wsi_dram.glimpse.sensor import PyramidSensor
from wsi_dram.model.dram import (
    DRAM,
    DramOutput,
    ModelConfig,
    evidence_glimpse,
    hybrid_loss,
    predict_log_probs,
)
from wsi_dram.model.modules import LocationNetwork


def _small(**overrides: object) -> ModelConfig:
    base = dict(
        glimpses=3,
        glimpse_size=4,
        scales=2,
        context_size=8,
        hidden=16,
        hidden_what=8,
        hidden_where=8,
        conv_channels=[4],
        context_channels=[4],
        sigma=0.2,
    )
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


def _batch(b: int = 6) -> tuple[PyramidSensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(b, 1, 16, 16, generator=gen)
    return PyramidSensor(images, 4, 2, context_size=8), torch.arange(b) % 3


def test_shapes_dram_and_ram() -> None:
    torch.manual_seed(0)
    sensor, labels = _batch()
    out = DRAM(_small(), 1, 3)(sensor, generator=torch.Generator().manual_seed(1))
    assert out.logits.shape == (6, 3)
    assert out.locations.shape == (6, 3, 2)
    assert out.log_pi.shape == out.baselines.shape == (6, 3)  # context emits l_1
    ram = DRAM(_small(layers=1, context=False, first="random", cell="rnn"), 1, 3)
    assert ram.context_net is None
    out = ram(sensor, generator=torch.Generator().manual_seed(1))
    assert out.log_pi.shape == (6, 2)  # first glimpse random, not emitted
    assert float(out.locations.abs().max()) <= 1.0


def test_policy_overrides() -> None:
    torch.manual_seed(0)
    model = DRAM(_small(), 1, 3).eval()
    sensor, _ = _batch()
    centre = model(sensor, sample=False, policy="center")
    assert float(centre.locations.abs().max()) == 0.0
    gen = torch.Generator().manual_seed(3)
    rand = model(sensor, sample=False, policy="random", generator=gen)
    assert rand.locations.std() > 0.2
    mean1 = model(sensor, sample=False)
    mean2 = model(sensor, sample=False)
    assert torch.equal(mean1.locations, mean2.locations)


def test_log_pi_is_the_gaussian_log_density() -> None:
    torch.manual_seed(0)
    net = LocationNetwork(4, sigma=0.5)
    h = torch.randn(3, 4)
    loc, log_pi, mu = net(h, sample=True, generator=torch.Generator().manual_seed(0))
    # the same noise again: log_pi is the density of the unclamped sample
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(mu.shape, generator=gen)
    sample = mu.detach() + 0.5 * noise
    want = torch.distributions.Normal(mu, 0.5).log_prob(sample).sum(1)
    torch.testing.assert_close(log_pi, want)
    assert torch.equal(loc, sample.clamp(-1, 1))
    assert not loc.requires_grad and log_pi.requires_grad


def test_reinforce_alone_gives_the_emission_network_gradients() -> None:
    torch.manual_seed(0)
    model = DRAM(_small(), 1, 3)
    sensor, labels = _batch()
    out = model(sensor, generator=torch.Generator().manual_seed(1))
    # a reward that is not all equal to the baseline: use the labels' parity
    reward = (labels % 2).float()[:, None].expand_as(out.baselines)
    reinforce = -(out.log_pi * (reward - out.baselines).detach()).sum(1).mean()
    reinforce.backward()
    grad = model.emission.fc.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    # the baseline is trained on the detached state only by its own MSE
    assert model.baseline.fc.weight.grad is None


def test_hybrid_loss_terms() -> None:
    torch.manual_seed(0)
    model = DRAM(_small(), 1, 3)
    sensor, labels = _batch()
    out = model(sensor, generator=torch.Generator().manual_seed(1))
    total, terms = hybrid_loss(out, labels, reinforce_weight=0.5)
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    reward = (out.logits.argmax(1) == labels).float()
    mse = ((out.baselines - reward[:, None]) ** 2).mean()
    rf = -(out.log_pi * (reward[:, None] - out.baselines)).sum(1).mean()
    torch.testing.assert_close(total, ce + mse + 0.5 * rf)
    assert math.isclose(float(terms["reward"]), float(reward.mean()))


def test_short_training_moves_the_emission_weights() -> None:
    torch.manual_seed(0)
    model = DRAM(_small(), 1, 3)
    before = model.emission.fc.weight.detach().clone()
    optimizer = torch.optim.Adam(model.emission.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        sensor, labels = _batch()
        out = model(sensor, generator=gen)
        # the full hybrid loss: only its REINFORCE term reaches the emission net
        loss, _ = hybrid_loss(out, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    moved = (model.emission.fc.weight.detach() - before).abs().max()
    assert float(moved) > 1e-3


def test_m_samples_average_log_probs() -> None:
    torch.manual_seed(0)
    model = DRAM(_small(), 1, 3).eval()
    sensor, _ = _batch()
    gen = torch.Generator().manual_seed(5)
    avg, _ = predict_log_probs(model, sensor, samples=3, generator=gen)
    gen = torch.Generator().manual_seed(5)
    parts = [
        torch.log_softmax(model(sensor, sample=True, generator=gen).logits, 1)
        for _ in range(3)
    ]
    torch.testing.assert_close(avg, sum(parts) / 3)


def _reinforce_grads(model: DRAM) -> dict[str, bool]:
    """Which parts of the model the REINFORCE term alone gives gradients."""
    sensor, labels = _batch()
    out = model(sensor, generator=torch.Generator().manual_seed(1))
    reward = (labels % 2).float()[:, None].expand_as(out.baselines)
    (-(out.log_pi * (reward - out.baselines).detach()).sum(1).mean()).backward()

    def touched(module: torch.nn.Module) -> bool:
        return any(
            p.grad is not None and float(p.grad.abs().sum()) > 0
            for p in module.parameters()
        )

    assert model.context_net is not None
    return {
        "emission": touched(model.emission),
        "context": touched(model.context_net),
        "upper": touched(model.core.cells[1]),
        "lower": touched(model.core.cells[0]),
        "glimpse": touched(model.glimpse_net),
    }


def test_detach_core_splits_where_from_what() -> None:
    torch.manual_seed(0)
    # Joint (Ba et al.): REINFORCE reaches every part.
    assert all(_reinforce_grads(DRAM(_small(), 1, 3)).values())
    # Split: REINFORCE trains the emission, upper layer and context network
    # (the "where" system) and leaves the lower layer and glimpse network alone.
    torch.manual_seed(0)
    split = _reinforce_grads(DRAM(_small(detach_core=True), 1, 3))
    assert split == {
        "emission": True,
        "context": True,
        "upper": True,
        "lower": False,
        "glimpse": False,
    }
    # Emission only: REINFORCE stops at the emission network's input.
    torch.manual_seed(0)
    only = _reinforce_grads(
        DRAM(_small(detach_core=True, reinforce_emission_only=True), 1, 3)
    )
    assert only == {
        "emission": True,
        "context": False,
        "upper": False,
        "lower": False,
        "glimpse": False,
    }


def test_step_logits_and_the_evidence_glimpse() -> None:
    torch.manual_seed(0)
    sensor, _ = _batch()
    out = DRAM(_small(), 1, 3)(sensor, generator=torch.Generator().manual_seed(1))
    assert out.step_logits is not None and out.step_logits.shape == (6, 3, 3)
    torch.testing.assert_close(out.step_logits[:, -1], out.logits)
    # p(class 1) after each glimpse: rises 0.3, 0.6, 0.05, -0.75 -> glimpse 1;
    # 0.9 at once, then falls -> glimpse 0
    p = torch.tensor([[0.3, 0.9, 0.95, 0.2], [0.9, 0.5, 0.4, 0.3]])
    steps = torch.log(torch.stack([1 - p, p], dim=2))  # (2, 4, 2)
    fake = DramOutput(steps[:, -1], out.log_pi, out.baselines, out.locations, steps)
    assert evidence_glimpse(fake).tolist() == [1, 0]
    no_steps = DramOutput(steps[:, -1], out.log_pi, out.baselines, out.locations)
    assert evidence_glimpse(no_steps).tolist() == [-1, -1]
