"""Classification figures of an attention model on a task split.

Error and accuracy with one path (M = 1: the policy's mean, deterministic) and with
M sampled paths whose class log-probabilities are averaged (Ba et al. 2015), plus
per-class accuracy. The randomness (sampled paths, random first glimpses, the
random policy) comes from a generator seeded by the run's seed, so the same
checkpoint gives the same figures every time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from wsi_dram.data.tasks import Task, epoch_seed
from wsi_dram.model.dram import DRAM, Policy, predict_log_probs

log = logging.getLogger(__name__)


def evaluate_model(
    model: DRAM,
    task: Task,
    split: str = "test",
    samples: int = 1,
    policy: Policy = "learned",
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on one split.

    Args:
        model: The model (switched to eval mode here).
        task: The task whose ``split`` is read in order.
        split: "train", "val" or "test".
        samples: M; the figures are given for M = 1 and for M.
        policy: "learned", "random" or "center".
        seed: Seeds the paths' randomness.
        batch_size: Images per batch.
        device: Where the model runs.
        progress: Called with (images done, total).

    Returns:
        A report: ``split``, ``n``, ``policy``, ``samples`` (M), ``accuracy`` and
        ``error`` with M paths, ``accuracy_m1`` and ``error_m1`` with one,
        ``per_class_accuracy`` and ``per_class_accuracy_m1`` (class name ->
        accuracy), ``pixels_read_per_image`` (level-0 pixels, M = 1).
    """
    model.eval()
    device = torch.device(device)
    classes = task.num_classes
    # One generator per figure, so that the M = 1 figures do not depend on M.
    gen = torch.Generator().manual_seed(epoch_seed(seed, 0, 0, stream=7))
    gen_m = torch.Generator().manual_seed(epoch_seed(seed, 0, 0, stream=8))
    correct = {1: torch.zeros(classes), samples: torch.zeros(classes)}
    counts = torch.zeros(classes)
    pixels = 0
    total = task.size(split)
    done = 0
    for sensor, labels in task.batches(split, batch_size, 0, seed, device=device):
        log_probs, _ = predict_log_probs(model, sensor, 1, policy, gen)
        pixels += sensor.pixels_read
        hits = {1: log_probs.argmax(1) == labels}
        if samples > 1:
            log_probs, _ = predict_log_probs(model, sensor, samples, policy, gen_m)
            hits[samples] = log_probs.argmax(1) == labels
        labels_cpu = labels.cpu()
        counts += torch.bincount(labels_cpu, minlength=classes).float()
        for m, hit in hits.items():
            correct[m] += torch.bincount(
                labels_cpu, weights=hit.cpu().float(), minlength=classes
            )
        done += len(labels)
        if progress is not None:
            progress(done, total)

    n = int(counts.sum())
    names = getattr(task, "class_names", [str(i) for i in range(classes)])

    def figures(m: int) -> tuple[float, dict[str, float]]:
        acc = float(correct[m].sum() / max(n, 1))
        per_class = {
            names[c]: float(correct[m][c] / counts[c]) if counts[c] else float("nan")
            for c in range(classes)
        }
        return acc, per_class

    acc_m, per_class_m = figures(samples)
    acc_1, per_class_1 = figures(1)
    return {
        "split": split,
        "n": n,
        "policy": policy,
        "samples": samples,
        "accuracy": acc_m,
        "error": 1.0 - acc_m,
        "accuracy_m1": acc_1,
        "error_m1": 1.0 - acc_1,
        "per_class_accuracy": per_class_m,
        "per_class_accuracy_m1": per_class_1,
        "pixels_read_per_image": pixels / max(n, 1),
    }
