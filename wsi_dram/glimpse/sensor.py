"""The glimpse sensor: what the attention model can see of its field.

A glimpse at location ``l = (x, y)`` in ``[-1, 1]`` reads K windows of g x g
pixels centred on ``l``, one per scale: scale k covers ``2**k * g`` level-0 pixels
per side at the same g x g pixel count, i.e. every output pixel of scale k is the
mean of a ``2**k x 2**k`` block of level-0 pixels (the foveated retina of Mnih et
al. 2014, built from a pyramid of 2x2 means, with no resizing).

Convention (shared by every sensor of the project):

* ``l`` is clamped to ``[-1, 1]``; ``x`` runs along the columns (width W) and ``y``
  along the rows (height H) of the field.
* The continuous centre is ``cx = (x + 1) / 2 * W``, ``cy = (y + 1) / 2 * H`` in
  level-0 pixels, where pixel ``c`` spans ``[c, c + 1)``. It is rounded to the
  nearest pixel corner, ``ax = floor(cx + 0.5)``, ``ay = floor(cy + 0.5)``.
* The window of scale k covers the level-0 columns
  ``[ax - (2**k * g) // 2, ax - (2**k * g) // 2 + 2**k * g)`` (likewise rows), so
  an even g spans ``[centre - g/2, centre + g/2)`` at scale 0, and every scale is
  centred on the same corner ``(ax, ay)``. Output pixel ``(i, j)`` of scale k is
  the mean of the block starting at level-0 ``(x0_k + 2**k j, y0_k + 2**k i)``.
* Pixels outside the field take the background value; blocks that straddle the
  edge average the background in.

The block grid of each window starts at the window's own corner. When
``ax - (2**k * g) // 2`` is a multiple of ``2**k`` (for example every centre
on the grid of the coarsest level), scale k is exactly a slice of pyramid level k
(``level_k = 2x2-mean(level_{k-1})``); otherwise it is the same 2x2-mean pyramid
taken at the window's phase. This is the convention of the reference case
``ram-glimpse-nonsquare-border`` (scale 2 = the 16 x 16 window mean-pooled 2x2).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor


@runtime_checkable
class GlimpseSensor(Protocol):
    """What the model reads from: one field per batch item.

    Attributes:
        batch_size: B, the number of fields.
        channels: C, channels per pixel (1 for MNIST, 3 for RGB slides).
        size: g, the side of every window in output pixels.
        scales: K, the number of scales (scale k covers ``2**k * g`` level-0 px).
        pixels_read: Running count of level-0 field pixels covered by the
            coarsest window of every glimpse read so far (overlaps counted again).
    """

    batch_size: int
    channels: int
    size: int
    scales: int
    pixels_read: int

    def read(self, l: Tensor) -> Tensor:  # noqa: E741
        """Read one glimpse per field.

        Args:
            l: (B, 2) locations ``(x, y)`` in ``[-1, 1]`` over the field
                (clamped).

        Returns:
            (B, K, C, g, g) float pixels in ``[0, 1]``.
        """
        ...

    def context(self) -> Tensor:
        """(B, C, Hc, Wc) float in ``[0, 1]``: a coarse view of each whole field."""
        ...


def window_origin(
    l: Tensor,  # noqa: E741
    width: int,
    height: int,
    size: int,
    scale: int,
) -> tuple[Tensor, Tensor]:
    """Level-0 top-left corner of the window of one scale (see module docstring).

    Args:
        l: (B, 2) locations ``(x, y)`` in ``[-1, 1]`` (clamped here).
        width: W of the field in level-0 pixels.
        height: H of the field in level-0 pixels.
        size: g.
        scale: k; the window covers ``2**k * g`` level-0 pixels per side.

    Returns:
        ``(x0, y0)``, each (B,) int64 level-0 pixels (may be negative).
    """
    l = l.detach().to(torch.float64).clamp(-1.0, 1.0)  # noqa: E741
    ax = torch.floor((l[:, 0] + 1.0) / 2.0 * width + 0.5).to(torch.int64)
    ay = torch.floor((l[:, 1] + 1.0) / 2.0 * height + 0.5).to(torch.int64)
    half = (2**scale * size) // 2
    return ax - half, ay - half


def glimpse_boxes(
    l: Tensor,  # noqa: E741
    width: int,
    height: int,
    size: int,
    scales: int,
) -> Tensor:
    """Level-0 boxes of every scale of a glimpse, for drawing.

    Returns:
        (B, K, 4) int64 ``(x0, y0, x1, y1)`` level-0 pixels, x1/y1 exclusive.
    """
    boxes = []
    for k in range(scales):
        x0, y0 = window_origin(l, width, height, size, k)
        side = 2**k * size
        boxes.append(torch.stack([x0, y0, x0 + side, y0 + side], dim=1))
    return torch.stack(boxes, dim=1)  # (B, K, 4)


class PyramidSensor:
    """In-memory, vectorised glimpse sensor over a batch of images (MNIST).

    The pyramid is built once per batch by 2x2 averaging, on a copy of the images
    padded with the background, and kept at level-0 resolution ("a trous"), so a
    window of any scale at any phase is an exact strided slice; ``read`` is one
    gather for the whole batch (no loop over images).

    Args:
        images: (B, C, H, W) float in ``[0, 1]``.
        size: g, window side in output pixels.
        scales: K >= 1.
        context_size: side of the square coarse view returned by ``context``
            (adaptive average pooling of the whole image).
        background: value of pixels outside the image (0 for MNIST, 1 for white
            slide background).
    """

    def __init__(
        self,
        images: Tensor,
        size: int,
        scales: int = 1,
        context_size: int = 0,
        background: float = 0.0,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
        if size < 1 or scales < 1:
            raise ValueError(f"size and scales must be >= 1, got {size}, {scales}")
        self.images = images
        self.batch_size, self.channels, self.height, self.width = images.shape
        self.size = size
        self.scales = scales
        self.context_size = context_size
        self.background = background
        self.pixels_read = 0
        self._pad = (2 ** (scales - 1) * size + 1) // 2 + 1
        self._levels: Tensor | None = None

    def _pyramid(self) -> Tensor:
        """(K, B, C, H + 2p, W + 2p): level k at level-0 resolution (block at its
        top-left pixel)."""
        if self._levels is None:
            p = self._pad
            level = F.pad(self.images, (p, p, p, p), value=self.background)
            levels = [level]
            for k in range(1, self.scales):
                d = 2 ** (k - 1)
                # 2x2 mean of level k-1 blocks: level k-1 sampled d apart.
                mean = (
                    level[..., :-d, :-d]
                    + level[..., :-d, d:]
                    + level[..., d:, :-d]
                    + level[..., d:, d:]
                ) / 4
                level = F.pad(mean, (0, d, 0, d), value=self.background)
                levels.append(level)
            self._levels = torch.stack(levels)
        return self._levels

    def read(self, l: Tensor) -> Tensor:  # noqa: E741
        """Read one glimpse per image; see :class:`GlimpseSensor`.

        Returns:
            (B, K, C, g, g) float.
        """
        levels = self._pyramid()
        device = levels.device
        g, p = self.size, self._pad
        batch = torch.arange(self.batch_size, device=device)
        out = []
        for k in range(self.scales):
            x0, y0 = window_origin(l, self.width, self.height, g, k)
            steps = torch.arange(g, device=device) * 2**k  # (g,)
            rows = (y0.to(device) + p)[:, None] + steps  # (B, g)
            cols = (x0.to(device) + p)[:, None] + steps  # (B, g)
            # (B, g, g, C) by one gather over the batch
            win = levels[k][batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]
            out.append(win.permute(0, 3, 1, 2))  # (B, C, g, g)
        self.pixels_read += int(self._covered(l).sum())
        return torch.stack(out, dim=1)  # (B, K, C, g, g)

    def _covered(self, l: Tensor) -> Tensor:  # noqa: E741
        """(B,) level-0 image pixels inside the coarsest window."""
        k = self.scales - 1
        side = 2**k * self.size
        x0, y0 = window_origin(l, self.width, self.height, self.size, k)
        w = (torch.clamp(x0 + side, max=self.width) - torch.clamp(x0, min=0)).clamp(
            min=0
        )
        h = (torch.clamp(y0 + side, max=self.height) - torch.clamp(y0, min=0)).clamp(
            min=0
        )
        return w * h

    def context(self) -> Tensor:
        """(B, C, c, c) coarse view: the image average-pooled to ``context_size``."""
        c = self.context_size or min(self.height, self.width)
        return F.adaptive_avg_pool2d(self.images, (c, c))
