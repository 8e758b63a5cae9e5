"""Pictures of glimpse paths: a PNG per image and an animated GIF (Pillow).

Each PNG shows the field with every glimpse's K nested boxes (scale 0 innermost),
coloured from the first glimpse (dark blue) to the last (yellow), numbered in
order, beside the class-probability bars with the prediction. The GIF adds one
glimpse per frame. Boxes come from :func:`~wsi_dram.glimpse.sensor.glimpse_boxes`,
the same arithmetic the sensor reads with, so x and y are the right way round.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from wsi_dram.data.tasks import Task, epoch_seed  # noqa: E402
from wsi_dram.glimpse.sensor import glimpse_boxes  # noqa: E402
from wsi_dram.model.dram import DRAM, predict_log_probs  # noqa: E402

log = logging.getLogger(__name__)


def _colours(n: int) -> np.ndarray:
    """(n, 4) RGBA, first glimpse to last."""
    return np.asarray(plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(n, 1))))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float [0, 1] -> (H, W, 3) uint8."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    return (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def render_path(
    image: np.ndarray,
    locations: np.ndarray,
    probs: np.ndarray,
    size: int,
    scales: int,
    label: int | None = None,
    class_names: list[str] | None = None,
) -> np.ndarray:
    """Draw one glimpse path and the class probabilities.

    Args:
        image: (C, H, W) float in ``[0, 1]``.
        locations: (T, 2) ``(x, y)`` in ``[-1, 1]``.
        probs: (classes,) class probabilities.
        size: g.
        scales: K.
        label: the true class, if known.
        class_names: names of the classes.

    Returns:
        (h, w, 3) uint8 picture.
    """
    _, height, width = image.shape
    names = class_names or [str(i) for i in range(len(probs))]
    boxes = glimpse_boxes(torch.as_tensor(locations), width, height, size, scales)
    colours = _colours(len(locations))
    fig, (ax_img, ax_bar) = plt.subplots(
        1, 2, figsize=(8, 4), gridspec_kw={"width_ratios": [1, 1]}
    )
    ax_img.imshow(_as_rgb(image), extent=(0, width, height, 0), interpolation="nearest")
    for t, per_scale in enumerate(boxes.numpy()):
        for x0, y0, x1, y1 in per_scale:
            ax_img.add_patch(
                Rectangle(
                    (x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, color=colours[t]
                )
            )
        cx, cy = (
            (per_scale[0, 0] + per_scale[0, 2]) / 2,
            (per_scale[0, 1] + per_scale[0, 3]) / 2,
        )
        ax_img.text(cx, cy, str(t + 1), color=colours[t], ha="center", va="center")
    ax_img.set_xlim(-0.5 * width, 1.5 * width)
    ax_img.set_ylim(1.5 * height, -0.5 * height)
    ax_img.set_xlabel("x (px)")
    ax_img.set_ylabel("y (px)")
    pred = int(np.argmax(probs))
    bar_colours = ["tab:green" if i == pred else "tab:gray" for i in range(len(probs))]
    ax_bar.barh(range(len(probs)), probs, color=bar_colours)
    ax_bar.set_yticks(range(len(probs)), names)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1)
    title = f"prediction {names[pred]} ({probs[pred]:.2f})"
    if label is not None:
        title += f", truth {names[label]}"
    ax_bar.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def path_frames(
    image: np.ndarray, locations: np.ndarray, size: int, scales: int, zoom: int = 4
) -> list[Image.Image]:
    """One frame per glimpse: the field with the glimpses so far (Pillow only)."""
    _, height, width = image.shape
    margin = 2 ** (scales - 1) * size // 2
    base = Image.new("RGB", (width + 2 * margin, height + 2 * margin), (40, 40, 40))
    base.paste(Image.fromarray(_as_rgb(image)), (margin, margin))
    base = base.resize(
        (base.width * zoom, base.height * zoom), Image.Resampling.NEAREST
    )
    boxes = glimpse_boxes(torch.as_tensor(locations), width, height, size, scales)
    colours = (_colours(len(locations))[:, :3] * 255).astype(int)
    frames = []
    frame = base.copy()
    for t, per_scale in enumerate(boxes.numpy()):
        frame = frame.copy()
        draw = ImageDraw.Draw(frame)
        for x0, y0, x1, y1 in per_scale:
            corners = [
                (int(x0) + margin) * zoom,
                (int(y0) + margin) * zoom,
                (int(x1) + margin) * zoom - 1,
                (int(y1) + margin) * zoom - 1,
            ]
            draw.rectangle(corners, outline=tuple(colours[t]), width=2)
        frames.append(frame)
    return frames


def render_examples(
    model: DRAM,
    task: Task,
    split: str,
    n: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """PNG pictures (h, w, 3) of the first ``n`` images of a split (learned policy,
    M = 1)."""
    return [item[0] for item in _examples(model, task, split, n, seed, device)]


def _examples(
    model: DRAM, task: Task, split: str, n: int, seed: int, device: torch.device | str
) -> list[tuple[np.ndarray, list[Image.Image]]]:
    model.eval()
    gen = torch.Generator().manual_seed(epoch_seed(seed, 0, 0, stream=7))
    batches = task.batches(split, n, 0, seed, device=torch.device(device))
    sensor, labels = next(iter(batches))
    log_probs, locations = predict_log_probs(model, sensor, 1, "learned", gen)
    images = getattr(sensor, "images", None)
    if images is None:
        images = sensor.context()
    cfg = model.config
    out = []
    for i in range(len(labels)):
        image = images[i].detach().cpu().numpy()
        locs = locations[i].cpu().numpy()
        picture = render_path(
            image,
            locs,
            log_probs[i].exp().cpu().numpy(),
            cfg.glimpse_size,
            cfg.scales,
            int(labels[i]),
            getattr(task, "class_names", None),
        )
        out.append((picture, path_frames(image, locs, cfg.glimpse_size, cfg.scales)))
    return out


def write_visualizations(
    model: DRAM,
    task: Task,
    out_dir: Path,
    n: int = 8,
    split: str = "test",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Write ``glimpses_<i>.png`` and ``glimpses_<i>.gif`` for the first n images.

    Returns:
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (picture, frames) in enumerate(
        _examples(model, task, split, n, seed, device)
    ):
        png = out_dir / f"glimpses_{i:03d}.png"
        Image.fromarray(picture).save(png)
        gif = out_dir / f"glimpses_{i:03d}.gif"
        frames[0].save(
            gif, save_all=True, append_images=frames[1:], duration=600, loop=0
        )
        written += [png, gif]
    log.info("wrote %d pictures to %s", len(written), out_dir)
    return written
