"""MNIST benchmark: training speed of the vectorised sensor vs a per-image crop loop,
and the accuracy the training runs reached.

``run(out_dir)`` measures the speed itself (same model, same batches, same
script; only the sensor differs) and reads the accuracy figures from the run
folders ``out_dir/mnist_ram``, ``out_dir/mnist`` and ``out_dir/mnist_cluttered``
(made by ``wsi-dram train --config pipelines/<name>.toml --out out_dir/<name>``),
evaluating the cluttered checkpoint with the learned and the random policy.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wsi_dram.data.tasks import build_task
from wsi_dram.evaluation.classification import evaluate_model
from wsi_dram.glimpse.sensor import PyramidSensor
from wsi_dram.model.dram import DRAM, hybrid_loss
from wsi_dram.training.checkpoints import load_model
from wsi_dram.training.config import read_train_config

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


class LoopSensor(PyramidSensor):
    """The baseline: crop each image's windows in a Python loop (pad, slice, pool
    each scale), the way popular RAM code does it."""

    def read(self, l: Tensor) -> Tensor:  # noqa: E741
        """(B, K, C, g, g), one image and one scale at a time."""
        l = l.clamp(-1, 1)  # noqa: E741
        g = self.size
        out = torch.empty(self.batch_size, self.scales, self.channels, g, g)
        for b in range(self.batch_size):
            cx = int((float(l[b, 0]) + 1) / 2 * self.width + 0.5)
            cy = int((float(l[b, 1]) + 1) / 2 * self.height + 0.5)
            for k in range(self.scales):
                side = 2**k * g
                pad = side
                img = F.pad(self.images[b], (pad, pad, pad, pad), value=self.background)
                y0, x0 = cy - side // 2 + pad, cx - side // 2 + pad
                patch = img[:, y0 : y0 + side, x0 : x0 + side]
                out[b, k] = F.avg_pool2d(patch[None], 2**k)[0] if k else patch
        return out


def _speed(config_path: Path, data_dir: Path, steps: int) -> dict[str, float]:
    cfg = read_train_config(config_path, [f'task.data_dir="{data_dir}"'])
    task = build_task(cfg.task, cfg.sensor_spec())
    results = {}
    for name, cls in (("vectorised", PyramidSensor), ("loop", LoopSensor)):
        torch.manual_seed(0)
        model = DRAM(cfg.model, task.channels, task.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        n, started = 0, 0.0
        for i, (sensor, labels) in enumerate(task.batches("train", 128, 0, 0)):
            if i == 3:
                n, started = 0, time.perf_counter()
            if i == steps + 3:
                break
            assert isinstance(sensor, PyramidSensor)
            s = cls(sensor.images, sensor.size, sensor.scales, sensor.context_size)
            out = model(s, generator=gen)
            loss, _ = hybrid_loss(out, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n += len(labels)
        results[name] = n / (time.perf_counter() - started)
    return results


def _run_figures(run: Path) -> dict[str, Any] | None:
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return None
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    test = run / "test_report.json"
    return {
        "epochs": len(lines),
        "seconds": sum(x["seconds"] for x in lines),
        "best_val": max(x["val_accuracy"] for x in lines),
        "test": json.loads(test.read_text()) if test.exists() else None,
    }


def run(out_dir: Path, data_dir: Path | None = None, steps: int = 30) -> str:
    """Measure and return the Markdown section ``mnist``."""
    data_dir = data_dir or ROOT.parent / "shared" / "data" / "mnist"
    lines = ["## MNIST (DRAM / RAM sanity check)", ""]
    speed = _speed(ROOT / "pipelines" / "mnist_ram.toml", data_dir, steps)
    ratio = speed["vectorised"] / speed["loop"]
    lines += [
        "Training speed, RAM config (6 glimpses 8x8, batch 128), same model and "
        f"batches, {torch.get_num_threads()} torch thread(s):",
        "",
        "| sensor | images/s |",
        "|---|---|",
        f"| vectorised PyramidSensor (ours) | {speed['vectorised']:.0f} |",
        f"| per-image crop loop (baseline) | {speed['loop']:.0f} |",
        f"| ratio | {ratio:.1f}x |",
        "",
        "| run | epochs | train time | best val acc | test error M=1 | test error M |",
        "|---|---|---|---|---|---|",
    ]
    # Full training runs take tens of minutes each on 2 cores, so the benchmark
    # reports the runs it finds (its own folder, then the pipelines' default
    # ``runs/<name>``) rather than training them itself.
    for name in ("mnist_ram", "mnist", "mnist_cluttered"):
        found = [d for d in (out_dir / name, ROOT / "runs" / name) if d.is_dir()]
        fig = _run_figures(found[0]) if found else None
        if fig is None:
            hint = f"`wsi-dram train --config pipelines/{name}.toml`"
            lines.append(f"| {name} | not run: {hint} | | | | |")
            continue
        test = fig["test"]
        m1 = f"{test['error_m1']:.2%}" if isinstance(test, dict) else "-"
        mm = (
            f"{test['error']:.2%} (M={test['samples']})"
            if isinstance(test, dict)
            else "-"
        )
        lines.append(
            f"| {name} | {fig['epochs']} | {float(fig['seconds']) / 60:.0f} min | "
            f"{float(fig['best_val']):.4f} | {m1} | {mm} |"
        )
    best = next(
        (
            d / "checkpoints" / "best.pt"
            for d in (out_dir / "mnist_cluttered", ROOT / "runs" / "mnist_cluttered")
            if (d / "checkpoints" / "best.pt").exists()
        ),
        out_dir / "mnist_cluttered" / "checkpoints" / "best.pt",
    )
    if best.exists():
        model, cfg, _ = load_model(best)
        cfg.task.data_dir = data_dir
        task = build_task(cfg.task, cfg.sensor_spec())
        errors = {
            policy: evaluate_model(model, task, "test", 1, policy, cfg.train.seed)[
                "error"
            ]
            for policy in ("learned", "random")
        }
        lines += [
            "",
            "Cluttered MNIST 60x60, same checkpoint, M=1: learned policy "
            f"{errors['learned']:.2%} error, random policy {errors['random']:.2%} "
            f"({errors['random'] / max(errors['learned'], 1e-9):.1f}x).",
        ]
    return "\n".join(lines) + "\n"
