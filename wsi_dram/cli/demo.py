"""``wsi-dram demo`` and ``wsi-dram demo-real``: the main job end to end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from wsi_dram.cli.console import make_console


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    return str(value)


def summary_table(result: dict[str, Any]) -> Table:
    """The demo's closing table: figures, then where every output is."""
    table = Table(title="wsi-dram demo")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    learned, random = result.get("learned"), result.get("random")
    if learned:
        table.add_row(
            "slide AUC (held-out, learned glimpses)",
            f"{_fmt(learned.get('auc'))}  CI {_fmt(learned.get('auc_ci'))}",
        )
        if random:
            table.add_row(
                "slide AUC (same checkpoint, random glimpses)", _fmt(random.get("auc"))
            )
        table.add_row("FROC (learned)", _fmt(learned.get("froc")))
        if random:
            table.add_row("FROC (random glimpses)", _fmt(random.get("froc")))
        for name, report in (("learned", learned), ("random", random)):
            fraction = (report or {}).get("pixels_read_fraction")
            if report:
                table.add_row(
                    f"level-0 tissue pixels read ({name})",
                    "-" if fraction is None else f"{100 * fraction:.2f} %",
                )
        table.add_row("held-out slides", _fmt(learned.get("n_slides")))
    mnist = result.get("mnist")
    if mnist:
        table.add_row("MNIST test error (short run, M=1)", _fmt(mnist.get("error"), 4))
    if "minutes" in result:
        table.add_row("wall time", f"{result['minutes']:.1f} min")
    if "preprocess_exit" in result:
        table.add_row(
            "preprocess exit code (non-zero: some slides failed)",
            str(result["preprocess_exit"]),
        )
    for name, path in result.get("paths", {}).items():
        table.add_row(f"output: {name}", str(path))
    return table


def register(app: typer.Typer) -> None:
    """Add ``demo`` and ``demo-real``."""

    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder."),
        scale: int = typer.Option(
            1, "--scale", min=1, help="Multiply the number of synthetic slides."
        ),
    ) -> None:
        """Synthetic cohort -> preprocess -> train -> evaluate -> heatmaps + MNIST."""
        from wsi_dram.demo import run_synthetic

        logging.getLogger("wsi_dram").setLevel(logging.INFO)
        result = run_synthetic(out, scale)
        make_console().print(summary_table(result))

    @app.command("demo-real")
    def demo_real_cmd(
        data: Path = typer.Option(
            Path("../shared/data"),
            "--data",
            help="Folder with slides/, annotations/, mnist/.",
        ),
        out: Path = typer.Option(Path("demo_out/real"), "--out", help="Output folder."),
        checkpoint: Path | None = typer.Option(
            Path("demo_out/runs/synthetic/checkpoints/best.pt"),
            "--checkpoint",
            help="Whole-slide checkpoint for heatmaps (from `make demo`).",
        ),
    ) -> None:
        """Preprocess real slides, heatmaps on the H&E ones, MNIST from IDX files."""
        from wsi_dram.demo import run_real

        if checkpoint is not None and not checkpoint.exists():
            make_console(stderr=True).print(
                f"no checkpoint at {checkpoint}: heatmaps skipped (run `make demo`)"
            )
            checkpoint = None
        result = run_real(data, out, checkpoint)
        make_console().print(summary_table(result))
