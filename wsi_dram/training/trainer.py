"""The training loop: any registered task, one process or DistributedDataParallel.

:func:`train` writes into the run folder:

* ``config.toml``: the resolved configuration;
* ``metrics.jsonl``: one JSON line per epoch (loss terms, reward, accuracy,
  validation accuracy, policy sigma, learning rate, seconds, images/s);
* ``checkpoints/last.pt`` every epoch and ``checkpoints/best.pt`` at the best
  validation accuracy, or, when the task has ``validate(model, split, device,
  seed) -> dict``, at the best ``selection`` value of that dict (its other keys
  are logged as ``val_<key>``, e.g. ``val_auc`` for slide tasks);
* ``tensorboard/``: scalars per term and images of glimpse paths;
* ``train.log``: the log; ``test_report.json``: best.pt on the test split.

Everything random in an epoch (data order, sampled paths, random first glimpses)
is seeded from ``(train.seed, epoch, rank)``, so ``resume=True`` after any
completed epoch reproduces an uninterrupted run's metrics exactly.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) each rank takes its
shard of every batch and gradients are averaged (gloo on CPU, nccl on CUDA); rank
0 validates and writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from wsi_dram.config import config_to_dict, dump_toml
from wsi_dram.data.tasks import Task, build_task, epoch_seed
from wsi_dram.errors import CheckpointError, ConfigError, DataError, WsiDramError
from wsi_dram.evaluation.classification import evaluate_model
from wsi_dram.jsontext import strict_json
from wsi_dram.model.dram import DRAM, hybrid_loss
from wsi_dram.training.checkpoints import (
    check_compatible,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from wsi_dram.training.config import TrainConfig

log = logging.getLogger(__name__)

METRIC_TERMS = ("loss", "ce", "baseline", "reinforce", "reward", "accuracy")


@dataclass
class TrainCallbacks:
    """Hooks for a progress display (the CLI uses rich); all optional.

    Attributes:
        on_epoch_start: (epoch, steps in the epoch).
        on_step: (epoch, step done, steps, running loss).
        on_epoch_end: (the epoch's metrics line).
    """

    on_epoch_start: Callable[[int, int], None] | None = None
    on_step: Callable[[int, int, int, float], None] | None = None
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None


def pick_device(choice: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU.

    Raises:
        ConfigError: "cuda" asked for on a machine or torch build without it.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            'train.device = "cuda" but this torch build or machine has no CUDA; '
            'use "auto" or "cpu"'
        )
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _init_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def train(
    config: TrainConfig,
    out_dir: Path | None = None,
    resume: bool = False,
    callbacks: TrainCallbacks | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; see the module docstring.

    Args:
        config: The resolved configuration.
        out_dir: The run folder (default ``config.train.out``).
        resume: Continue from ``out_dir/checkpoints/last.pt``.
        callbacks: Progress hooks.

    Returns:
        A summary: ``out_dir``, ``epochs``, ``best_val_accuracy``, ``best_epoch``,
        ``model`` (the trained model after the last epoch, unwrapped from DDP)
        and ``test`` (the final test report) when ``train.final_test``.

    A run folder this call created is removed again when the run fails before
    its first checkpoint (bad data, an empty split), so a failed start leaves
    nothing behind.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, or the checkpoint comes
            from another model/task configuration.
    """
    cb = callbacks or TrainCallbacks()
    tc = config.train
    out = Path(out_dir or tc.out)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = pick_device(tc.device)
    rank, world = _init_distributed(device)
    if tc.batch_size % world:
        log.warning("batch %d is not divisible by %d ranks", tc.batch_size, world)

    last = out / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        # Before the log is opened, so a mistyped --out leaves no folder behind.
        raise CheckpointError("nothing to resume: no checkpoint here", last)
    created = not out.exists()
    handler = _start_logging(out, rank)
    finished = False
    try:
        summary = _train(config, out, resume, cb, device, rank, world)
        finished = True
        return summary
    finally:
        if handler is not None:
            logging.getLogger("wsi_dram").removeHandler(handler)
            handler.close()
        if not finished and created and rank == 0:
            _remove_failed_start(out)


def _remove_failed_start(out: Path) -> None:
    """Remove a run folder this call created when the run failed before its
    first checkpoint: it holds only the log (and config) of a start that did
    not happen, and the error has gone to the caller."""
    if (out / "checkpoints").exists():
        return
    shutil.rmtree(out, ignore_errors=True)


def _start_logging(out: Path, rank: int) -> logging.Handler | None:
    if rank != 0:
        return None
    try:
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / "train.log", encoding="utf-8")
    except OSError as exc:
        raise WsiDramError(
            f"cannot write the run folder ({exc.strerror or exc})", out
        ) from exc
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("wsi_dram")
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def _train(
    config: TrainConfig,
    out: Path,
    resume: bool,
    cb: TrainCallbacks,
    device: torch.device,
    rank: int,
    world: int,
) -> dict[str, Any]:
    tc = config.train
    task = build_task(config.task, config.sensor_spec())
    if task.size("val") == 0:
        # Checked before the first epoch: validation picks best.pt.
        raise DataError(
            "the val split is empty; give it slides or images (split_fractions, "
            "val_fraction or val_size)"
        )
    torch.manual_seed(tc.seed)
    model = DRAM(config.model, task.channels, task.num_classes).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, config.optim.lr_decay)

    ckpt_dir = out / "checkpoints"
    start_epoch, best_val, best_epoch = 0, -1.0, 0
    if resume:
        path = ckpt_dir / "last.pt"
        payload = load_checkpoint(path)
        check_compatible(payload, config, path)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        start_epoch = int(payload["epoch"])
        best_val = float(payload["best_val"])
        best_epoch = int(payload["metrics"].get("best_epoch", 0))
        log.info("resuming %s after epoch %d", out, start_epoch)
    elif rank == 0 and (ckpt_dir / "last.pt").exists():
        raise CheckpointError(
            "run folder already has a checkpoint; pass --resume or another --out",
            ckpt_dir / "last.pt",
        )

    metrics_path = out / "metrics.jsonl"
    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(dump_toml(config_to_dict(config)) + "\n")
        _truncate_metrics(metrics_path, start_epoch)
        if tc.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_epoch + 1)

    net: torch.nn.Module = model
    if world > 1:
        net = DistributedDataParallel(model)
    log.info(
        "training %s (%d parameters) on %s, %d rank(s), %d train images",
        config.task.kind,
        sum(p.numel() for p in model.parameters()),
        device,
        world,
        task.size("train"),
    )

    for epoch in range(start_epoch, tc.epochs):
        line = _train_epoch(
            net, task, config, optimizer, epoch, device, rank, world, cb
        )
        scheduler.step()
        if rank == 0:
            report = evaluate_model(
                model, task, "val", 1, "learned", tc.seed, tc.eval_batch_size, device
            )
            line["val_accuracy"] = report["accuracy"]
            line["val_error"] = report["error"]
            selection = report["accuracy"]
            # A task may choose best.pt by its own figure (slide tasks: val AUC).
            validate = getattr(task, "validate", None)
            if validate is not None:
                figures = dict(validate(model, "val", device, tc.seed))
                selection = float(figures.pop("selection"))
                line.update({f"val_{key}": value for key, value in figures.items()})
                line["val_selection"] = selection
            # Ties go to the later epoch: a small validation set saturates (a
            # slide AUC of 1.0 from some epoch on), and more training is then
            # the better bet.
            improved = selection >= best_val
            if improved:
                best_val, best_epoch = selection, epoch + 1
            line["best_epoch"] = best_epoch
            args = (model, optimizer, scheduler, epoch + 1, config)
            extra = (task.num_classes, task.channels, line, best_val)
            # last.pt goes last: it marks the epoch done. A kill before it leaves
            # extra lines and best.pt that a resume rewrites identically.
            with open(metrics_path, "a", encoding="utf-8") as handle:
                handle.write(strict_json(line) + "\n")
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", *args, *extra)
            save_checkpoint(ckpt_dir / "last.pt", *args, *extra)
            if writer is not None:
                _write_tensorboard(writer, line, model, task, config, device)
            log.info(
                "epoch %d: loss %.4f acc %.4f val %.4f (%.1f s, %.0f img/s)",
                epoch + 1,
                line["loss"],
                line["accuracy"],
                line["val_accuracy"],
                line["seconds"],
                line["images_per_s"],
            )
            if cb.on_epoch_end is not None:
                cb.on_epoch_end(line)
        if world > 1:
            dist.barrier()

    summary: dict[str, Any] = {
        "out_dir": str(out),
        "epochs": tc.epochs,
        "best_val_accuracy": best_val,
        "best_epoch": best_epoch,
        "model": model,
    }
    if rank == 0 and tc.final_test and task.size("test") == 0:
        log.warning(
            "final test skipped: the test split is empty (give it slides with "
            "split_fractions or the cohort manifest's test rows)"
        )
    elif rank == 0 and tc.final_test:
        best, _, _ = load_model(ckpt_dir / "best.pt", device)
        test = evaluate_model(
            best,
            task,
            "test",
            tc.eval_samples,
            "learned",
            tc.seed,
            tc.eval_batch_size,
            device,
        )
        (out / "test_report.json").write_text(strict_json(test, indent=1) + "\n")
        summary["test"] = test
        log.info(
            "test (best.pt, epoch %d): error %.4f (M=1), %.4f (M=%d)",
            best_epoch,
            test["error_m1"],
            test["error"],
            tc.eval_samples,
        )
    if writer is not None:
        writer.close()
    return summary


def _train_epoch(
    net: torch.nn.Module,
    task: Task,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    device: torch.device,
    rank: int,
    world: int,
    cb: TrainCallbacks,
) -> dict[str, Any]:
    tc = config.train
    net.train()
    gen = torch.Generator().manual_seed(epoch_seed(tc.seed, epoch, rank, stream=1))
    steps = task.size("train") // tc.batch_size
    if cb.on_epoch_start is not None and rank == 0:
        cb.on_epoch_start(epoch + 1, steps)
    sums = torch.zeros(len(METRIC_TERMS) + 1, dtype=torch.float64)
    lr = optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    batches = task.batches(
        "train",
        tc.batch_size,
        epoch,
        tc.seed,
        rank=rank,
        world_size=world,
        device=device,
    )
    for step, (sensor, labels) in enumerate(batches, start=1):
        out = net(sensor, sample=True, generator=gen)
        loss, terms = hybrid_loss(out, labels, tc.reinforce_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.optim.grad_clip)
        optimizer.step()
        b = len(labels)
        values = [loss.detach()] + [terms[k] for k in METRIC_TERMS[1:]]
        sums[:-1] += torch.tensor([float(v) * b for v in values], dtype=torch.float64)
        sums[-1] += b
        if cb.on_step is not None and rank == 0:
            cb.on_step(epoch + 1, step, steps, float(sums[0] / sums[-1]))
    seconds = time.perf_counter() - started
    if world > 1:
        dist.all_reduce(sums)
    n = float(sums[-1])
    line: dict[str, Any] = {"epoch": epoch + 1}
    line.update({k: float(sums[i]) / n for i, k in enumerate(METRIC_TERMS)})
    line.update(
        {
            "sigma": config.model.sigma,
            "lr": lr,
            "images": int(n),
            "seconds": seconds,
            "images_per_s": n / seconds,
        }
    )
    return line


def _truncate_metrics(path: Path, epochs: int) -> None:
    """Keep the first ``epochs`` lines of metrics.jsonl (a resumed run rewrites the
    rest)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()[:epochs]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_tensorboard(
    writer: Any,
    line: dict[str, Any],
    model: DRAM,
    task: Task,
    config: TrainConfig,
    device: torch.device,
) -> None:
    step = int(line["epoch"])
    for key in (*METRIC_TERMS, "val_accuracy", "sigma", "lr", "images_per_s"):
        writer.add_scalar(
            f"train/{key}" if key in METRIC_TERMS else key, line[key], step
        )
    try:
        from wsi_dram.export.visualize import render_examples
    except ImportError:
        return
    pictures = render_examples(model, task, "val", 4, config.train.seed, device)
    for i, picture in enumerate(pictures):
        writer.add_image(f"glimpses/{i}", picture, step, dataformats="HWC")
