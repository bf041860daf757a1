"""The Compress tab: lossless coding with every compatible model, decoding .prnn uploads."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

import pixelrnn
from pixelrnn import compress
from pixelrnn.ui.base import Core
from pixelrnn.ui.errors import returns_memory, user_errors
from pixelrnn.ui.params import parse_class
from pixelrnn.ui.pictures import display_scale, render_images
from pixelrnn.ui.streaming import FrameGate
from pixelrnn.ui.uploads import file_path, open_image, prepare_image, read_upload


class CompressTab:
    """Compress: .prnn files made and decoded."""

    def __init__(self, core: Core):
        self.core, self.registry = core, core.registry

    def _compatible(self, name: str) -> list[str]:
        """`name` first, then every other healthy model of the same format (channels, size, levels)."""
        fmt = self.registry.spec(name).fmt
        return [name] + [other for other, entry in self.registry.entries.items()
                         if other != name and entry.spec is not None and entry.spec.fmt == fmt
                         and self.registry.problem(other) is None]

    @user_errors
    @returns_memory
    def compress(self, model_name: str, image: Any, class_label: Any = None) -> Iterator[tuple]:
        """Code an image losslessly with every compatible model (the chosen one first), each row of the sizes
        table as it is done: yields (sizes table, .prnn file of the chosen model, status)."""
        self.core.threads()
        spec = self.registry.spec(model_name)
        parse_class(class_label, spec, allow_auto=True)
        upload_name = Path(file_path(image) or "image").stem[:40]
        image = open_image(image)  # decoded once, then coded with every compatible model
        prepared = prepare_image(image, spec)
        pixels = torch.from_numpy(prepared.pixels)
        dims = spec.channels * spec.height * spec.width
        raw_bytes = math.ceil(dims * math.log2(spec.levels) / 8)
        rows = ["| coder | bytes | bits/dim | NLL (bits/dim) | time | note |",
                "|---|---:|---:|---:|---:|---|"]
        baselines = [f"| {fmt} (lossless) | {size:,} | {8 * size / dims:.3f} | | | |"
                     for fmt, size in compress.baseline_sizes(compress.levels_to_image(pixels, spec.levels)).items()]
        baselines.append(f"| uncompressed ({spec.levels} levels) | {raw_bytes:,} | {8 * raw_bytes / dims:.3f} | | | |")
        download = None
        names = self._compatible(model_name)
        for k, name in enumerate(names):
            _, analysis = self.core.analysis(name, image, class_label if name == model_name else None)
            model = self.registry.load(name)
            start = time.monotonic()
            data = compress.encode(model, pixels, analysis.label)
            seconds = time.monotonic() - start
            nll = pixelrnn.bits_per_dim(analysis.nll_nats, dims)
            header = len(data) - len(compress.read_header(data)["payload"])
            note = f"{header} B header" + ("" if analysis.label is None else
                                           f"; class {self.registry.spec(name).class_names[analysis.label]!r}")
            title = f"**`{name}`**" if name == model_name else f"`{name}`"
            rows.append(f"| {title} | {len(data):,} | {8 * len(data) / dims:.3f} | {nll:.3f} | {seconds:.1f} s | "
                        f"{note} |")
            if name == model_name:
                folder = Path(tempfile.mkdtemp(dir=self.core.downloads.name))
                download = folder / f"{upload_name}.{name}.prnn"
                download.write_bytes(data)
            done = k + 1 == len(names)
            status = (f"Coded with {len(names)} model{'s' if len(names) > 1 else ''}: the `.prnn` file of "
                      f"`{model_name}` is ready to download; upload it below to decode it."
                      if done else f"Coding with `{names[k + 1]}` ({k + 2} of {len(names)})…")
            if prepared.notes:
                status += f" Input: {'; '.join(prepared.notes)}."
            yield "\n".join(rows + baselines), str(download), status

    def compress_changed(self, model_name: str, image: Any, class_label: Any = None) -> Iterator[tuple]:
        """Runs when the image or the model's classes change: compress the image, or empty the outputs."""
        if image is None:
            yield None, None, None
            return
        yield from self.compress(model_name, image, class_label)

    def _writer(self, header: dict) -> str:
        """The model that wrote a .prnn stream: named in a version-1 header; else the model (of those loaded or
        local, so that no download is started) whose weight hash the header holds."""
        if header["name"]:
            if header["name"] in self.registry.entries:
                return header["name"]
        else:
            for name, entry in self.registry.entries.items():
                if self.registry.problem(name) is None and (entry.source == "local" or self.registry.loaded(name)):
                    with contextlib.suppress(gr.Error):
                        if compress.written_by(header, self.registry.load(name)):
                            return name
        raise gr.Error(f"This file was compressed with a model this app does not have ("
                       f"{header['name'] or 'weights ' + header['hash'].hex()}; it has "
                       f"{', '.join(self.registry.names)}).")

    @user_errors
    def decompress(self, file: Any) -> Iterator[tuple]:
        """Decode an uploaded .prnn file with the model named in it, row by row: yields (image, status). The image
        is only presented as decoded once its checksum holds; a file that fails clears it."""
        self.core.threads()
        path = file_path(file)
        if not path:
            raise gr.Error("No file: upload a .prnn file made by Compress (or `python -m pixelrnn.compress`).")
        data = read_upload(path, "file")
        try:
            header = compress.read_header(data)
        except compress.CompressionError as err:
            raise gr.Error(f"This file cannot be decoded: {err}.") from None
        name = self._writer(header)
        spec = self.registry.spec(name)
        model = self.registry.load(name)
        start, gate, scale = time.monotonic(), FrameGate(), display_scale(spec.height, spec.width, 280)
        rows = spec.height + (spec.height // spec.factor if spec.factor else 0)
        done, pixels = 0, None
        try:
            for _, r, image in compress.decode_rows(model, data):
                done, pixels = done + 1, image.numpy()
                if done == rows or not gate.due():  # the whole image is shown once it is verified
                    continue
                started = time.monotonic()
                pending = np.zeros(pixels.shape[2:], dtype=bool)
                pending[r + 1 :] = True
                [cell] = render_images(pixels, spec.levels, scale * (spec.height // pixels.shape[2]), pending)
                yield gate.fresh("image", cell), f"Decoding with `{name}`: row {done} of {rows} (not verified yet)…"
                gate.spent(time.monotonic() - started)
        except compress.CompressionError as err:
            yield None, f"**Not decoded:** {err}."
            raise gr.Error(f"This file cannot be decoded: {err}.") from None
        label = "" if header["label"] is None else f", class {spec.class_names[header['label']]!r}"
        [whole] = render_images(pixels, spec.levels, scale)
        yield whole, (f"Decoded {len(data):,} bytes ({8 * len(data) / (spec.channels * spec.height * spec.width):.3f}"
                          f" bits/dim) with `{name}`{label} in {time.monotonic() - start:.1f} s: the checksum "
                          f"holds, every pixel is exact.")
