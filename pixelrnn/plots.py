"""A learning-curve plot drawn with PIL (no plotting library needed): NLL against training images."""

from __future__ import annotations

from PIL import Image, ImageDraw

SERIES = (("train_loss", "train (batch mean)", (150, 150, 150)), ("valid_raw", "validation", (31, 119, 180)),
          ("valid_ema", "validation, EMA weights", (214, 39, 40)),
          ("train_objective", "train objective (batch mean)", (44, 160, 44)),
          ("objective_raw", "validation objective", (140, 190, 230)),
          ("objective_ema", "validation objective, EMA weights", (240, 150, 150)))


def series_of(record: dict) -> dict:
    """A history record's values by SERIES key: a hybrid run's records (those with objective_raw) hold the loss it
    minimised, its objective, under train_loss."""
    if "objective_raw" in record and "train_loss" in record:
        record = {k: v for k, v in record.items() if k != "train_loss"} | {"train_objective": record["train_loss"]}
    return record


def count_label(x: float, x_max: float) -> str:
    """An axis tick's count of training images, in the unit the axis's end needs: "1.25M", "12k", "400"."""
    if not x:
        return "0"
    if x_max >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1e3:.3g}k" if x_max >= 1e4 else f"{x:.0f}"


def learning_curve(history: list[dict], unit: str, title: str, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """history: the `history` records of metrics.json (keys images, train_loss, valid_raw, valid_ema; a hybrid
    run's also objective_raw and objective_ema)."""
    width, height = size
    left, right, top, bottom = 70, 20, 40, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 12), title, fill="black")
    records = [series_of(r) for r in history if "images" in r]
    points = {key: [(r["images"], r[key]) for r in records if key in r] for key, _, _ in SERIES}
    values = [v for series in points.values() for _, v in series]
    if not values:
        draw.text((left, height // 2), "no evaluations recorded", fill="black")
        return image
    x_max = max(x for series in points.values() for x, _ in series) or 1
    # the first evaluations sit far above the rest: scale to the lower 95% of the values
    ordered = sorted(values)
    y_min, y_max = ordered[0], ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    y_max = y_max if y_max > y_min else y_min + 1

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        fy = (min(y, y_max) - y_min) / (y_max - y_min)
        return left + x / x_max * (width - left - right), height - bottom - fy * (height - top - bottom)

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for k in range(5):  # axis ticks
        y = y_min + (y_max - y_min) * k / 4
        _, py = to_pixel(0, y)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((4, py - 6), f"{y:.3g}", fill="black")
        x = x_max * k / 4
        px, _ = to_pixel(x, y_min)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
        draw.text((px - 15, height - bottom + 8), count_label(x, x_max), fill="black")
    draw.text((width // 2 - 40, height - 20), "training images", fill="black")
    draw.text((4, top - 16), unit, fill="black")
    for n, (key, label, colour) in enumerate((key, label, colour) for key, label, colour in SERIES if points[key]):
        if len(points[key]) > 1:
            draw.line([to_pixel(x, y) for x, y in points[key]], fill=colour, width=2)
        else:
            px, py = to_pixel(*points[key][0])
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.text((width - right - 200, top + 8 + 14 * n), label, fill=colour)
    return image
