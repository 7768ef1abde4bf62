"""A training's loss curve as a PNG-ready picture, drawn with PIL (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

SIZE = (640, 360)
MARGIN = (56, 20, 16, 36)  # left, top, right, bottom
RAW = (190, 200, 215)
SMOOTH = (30, 90, 200)
INK = (40, 40, 40)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and up to `window - 1` before it."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def draw_loss_curve(losses: Sequence[float], title: str = "training loss") -> Image.Image:
    """Per-step losses (light) and their moving average (dark), against the step."""
    image = Image.new("RGB", SIZE, "white")
    pen = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    pen.rectangle((left, top, right, bottom), outline=INK)
    pen.text((left, 4), f"{title} ({len(losses)} steps)", fill=INK)
    if not losses:
        return image
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0

    def point(i: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (i / max(1, len(losses) - 1))
        return x, bottom - (bottom - top) * (value - low) / span

    smooth = moving_average(losses, max(1, len(losses) // 20))
    for series, colour in ((losses, RAW), (smooth, SMOOTH)):
        points = [point(i, v) for i, v in enumerate(series)]
        if len(points) > 1:
            pen.line(points, fill=colour, width=1 if series is losses else 2)
        else:
            pen.point(points, fill=colour)
    pen.text((4, top), f"{high:.4g}", fill=INK)
    pen.text((4, bottom - 10), f"{low:.4g}", fill=INK)
    pen.text((left, bottom + 8), "1", fill=INK)
    pen.text((right - 40, bottom + 8), str(len(losses)), fill=INK)
    pen.text(((left + right) // 2 - 12, bottom + 8), "step", fill=INK)
    return image
