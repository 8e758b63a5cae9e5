"""``wsi-dram train``, ``evaluate`` and ``visualize``: the attention model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from wsi_dram.cli.console import make_console
from wsi_dram.errors import ConfigError, DataError, make_dir
from wsi_dram.jsontext import strict_json

console = make_console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate`` and ``visualize`` to the app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("visualize")(visualize_command)


def train_command(
    config: Path = typer.Option(..., "--config", "-c", help="Pipeline TOML file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key, e.g. --set optim.lr=3e-4 (repeatable)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue from last.pt."),
) -> None:
    """Train a recurrent attention model (also under torchrun for DDP).

    Writes RUN_DIR/config.toml, metrics.jsonl, checkpoints/last.pt and best.pt,
    tensorboard/ and train.log. A resumed run continues exactly where it stopped.
    """
    from wsi_dram.training import TrainCallbacks, read_train_config, train

    if config.is_dir():
        raise ConfigError("is a directory, not a config file", config)
    cfg = read_train_config(config, set_)
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps  loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task("train", total=1, epoch=0, loss="-")

        def start(epoch: int, steps: int) -> None:
            progress.reset(bar, total=steps, epoch=epoch, loss="-")

        def step(epoch: int, done: int, steps: int, loss: float) -> None:
            progress.update(bar, completed=done, loss=f"{loss:.4f}")

        def end(line: dict[str, Any]) -> None:
            slides = ""
            if line.get("val_auc") is not None:
                slides = f"val slide AUC {line['val_auc']:.3f}  "
            console.print(
                f"epoch {line['epoch']}: loss {line['loss']:.4f}  "
                f"acc {line['accuracy']:.4f}  val acc {line['val_accuracy']:.4f}  "
                f"{slides}({line['seconds']:.1f} s, {line['images_per_s']:.0f} img/s)"
            )

        summary = train(cfg, out, resume, TrainCallbacks(start, step, end))
    table = Table(title=f"run {summary['out_dir']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    slide_task = cfg.task.kind.startswith("slide")
    name = "best val slide margin AUC" if slide_task else "best val accuracy (M=1)"
    table.add_row(name, f"{summary['best_val_accuracy']:.4f}")
    table.add_row("best epoch", str(summary["best_epoch"]))
    if "test" in summary:
        test = summary["test"]
        table.add_row("test error (M=1)", f"{test['error_m1']:.4f}")
        table.add_row(f"test error (M={test['samples']})", f"{test['error']:.4f}")
    make_console().print(table)


def default_report_path(checkpoint: Path, split: str, policy: str) -> Path:
    """Where ``evaluate`` writes its report without ``--out``.

    ``RUN/eval/<split>[_<policy>]/report.json`` beside the checkpoint's run: RUN
    is the folder holding ``checkpoints/`` for ``RUN/checkpoints/<name>.pt``, else
    the checkpoint's own folder. The policy is in the name unless ``learned``.
    """
    folder = checkpoint.parent
    run = folder.parent if folder.name == "checkpoints" else folder
    name = split if policy == "learned" else f"{split}_{policy}"
    return run / "eval" / name / "report.json"


def evaluate_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A .pt checkpoint."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    samples: int = typer.Option(1, "--samples", "-M", help="Paths averaged (M)."),
    policy: str = typer.Option("learned", "--policy", help="learned|random|center."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help=(
            "Report file (default: RUN/eval/SPLIT[_POLICY]/report.json beside the "
            "checkpoint's run folder)."
        ),
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Override the task's data folder."
    ),
) -> None:
    """Error and accuracy of a checkpoint, with M=1 and M samples, per class.

    The report goes to --out, by default RUN/eval/SPLIT/report.json (with
    _POLICY after SPLIT for --policy random or center) for a checkpoint
    RUN/checkpoints/NAME.pt; the path is printed.
    """
    from wsi_dram.data.tasks import build_task
    from wsi_dram.evaluation.classification import evaluate_model
    from wsi_dram.training.checkpoints import load_model
    from wsi_dram.training.trainer import pick_device

    if policy not in ("learned", "random", "center"):
        raise ConfigError(f"--policy {policy!r} is not one of learned, random, center")
    if samples < 1:
        raise ConfigError("--samples must be >= 1")
    if out is None:
        out = default_report_path(checkpoint, split, policy)
    make_dir(out.parent)  # fail now, not after the work
    model, cfg, _ = load_model(checkpoint)
    device = pick_device(cfg.train.device)
    model.to(device)
    if data_dir is not None:
        cfg.task.data_dir = data_dir
    task = build_task(cfg.task, cfg.sensor_spec())
    if task.size(split) == 0:
        raise DataError(
            f"the {split} split is empty: nothing to evaluate (see the task's "
            "split_fractions or cohort manifest)"
        )
    if getattr(task, "slide_level", False):
        _evaluate_slides(model, task, split, policy, out, cfg.train.seed, device)
        return
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"evaluate {split}", total=task.size(split))
        report = evaluate_model(
            model,
            task,
            split,
            samples,
            policy,  # type: ignore[arg-type]
            cfg.train.seed,
            cfg.train.eval_batch_size,
            device,
            lambda done, total: progress.update(bar, completed=done),
        )
    report["checkpoint"] = str(checkpoint)
    table = Table(title=f"{checkpoint} on {split} ({report['n']} images, {policy})")
    table.add_column("class")
    table.add_column("accuracy M=1", justify="right")
    if samples > 1:  # with M=1 both columns would be the same figure
        table.add_column(f"accuracy M={samples}", justify="right")

    def cells(m1: float, m: float) -> list[str]:
        return [f"{m1:.4f}", f"{m:.4f}"] if samples > 1 else [f"{m1:.4f}"]

    for name, acc in report["per_class_accuracy"].items():
        table.add_row(name, *cells(report["per_class_accuracy_m1"][name], acc))
    all_cells = cells(report["accuracy_m1"], report["accuracy"])
    table.add_row("all", *all_cells, style="bold")
    make_console().print(table)
    error = f"error: {report['error_m1']:.4f} (M=1)"
    if samples > 1:
        error += f"  {report['error']:.4f} (M={samples})"
    make_console().print(error)
    out.write_text(strict_json(report, indent=1) + "\n", encoding="utf-8")
    make_console().print(f"wrote {out}", soft_wrap=True)


def _evaluate_slides(
    model: Any,
    task: Any,
    split: str,
    policy: str,
    report_path: Path,
    seed: int,
    device: Any,
) -> None:
    """Slide-task evaluation: report.json with predictions, lesions and plots."""
    from wsi_dram.evaluation.slides import evaluate_slides

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"score {split} slides", total=None)

        def advance(stage: str, done: int, total: int) -> None:
            progress.update(
                bar, description=f"score {stage} slides", completed=done, total=total
            )

        report = evaluate_slides(
            model,
            task,
            split,
            report_path,
            policy,  # type: ignore[arg-type]
            seed,
            device,
            advance,
        )
    table = Table(title=f"{split} slides ({report['n_slides']}, policy {policy})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in (
        "auc",
        "accuracy",
        "sensitivity",
        "specificity",
        "threshold",
        "froc",
        "pixels_read_fraction",
    ):
        value = report.get(key)
        table.add_row(key, "-" if value is None else f"{value:.4f}")
    if report.get("auc_ci"):
        low, high = report["auc_ci"]
        table.add_row("auc 95% CI", f"{low:.4f} - {high:.4f}")
    make_console().print(table)
    make_console().print(
        f"wrote {report_path} and predictions, lesions, plots beside it", soft_wrap=True
    )


def visualize_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A .pt checkpoint."),
    out: Path = typer.Option(..., "--out", help="Folder for PNGs and GIFs."),
    n: int = typer.Option(8, "--n", help="Number of images."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Override the task's data folder."
    ),
) -> None:
    """PNG (image, glimpse boxes, class bars) and animated GIF per image."""
    from wsi_dram.data.tasks import build_task
    from wsi_dram.export.visualize import write_visualizations
    from wsi_dram.training.checkpoints import load_model

    model, cfg, _ = load_model(checkpoint)
    if data_dir is not None:
        cfg.task.data_dir = data_dir
    task = build_task(cfg.task, cfg.sensor_spec())
    files = write_visualizations(model, task, out, n, split, cfg.train.seed)
    make_console().print(f"wrote {len(files)} files to {out}")
