"""The Generate, Complete and Upscale tabs."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
import torch

import pixelrnn
from pixelrnn.images import tile
from pixelrnn.ui.base import Core
from pixelrnn.ui.cards import auto_classes, class_check, maps_of
from pixelrnn.ui.errors import user_errors
from pixelrnn.ui.params import parse_class, parse_int, parse_mode, parse_pace, parse_seed, parse_temperature
from pixelrnn.ui.pictures import (
    display_scale,
    grid_scale,
    masked_original,
    render_distribution,
    render_heatmap,
    render_images,
)
from pixelrnn.ui.settings import MAX_COMPLETIONS, MAX_PARTICLES, MAX_SAMPLES
from pixelrnn.ui.uploads import editor_parts, extract_mask, prepare_image


class SamplingTabs:
    """Generate, Complete and Upscale: streams of (image, distribution, status)."""

    def __init__(self, core: Core):
        self.core, self.registry = core, core.registry

    # -- Generate --
    @user_errors
    def generate(self, model_name: str, class_label: Any = None, n: Any = 4, temperature: Any = 1.0, seed: Any = 0,
                 pace: Any = 0.0, request: gr.Request = None) -> Iterator[tuple]:
        """Stream n samples pixel by pixel: (image grid, current pixel's distribution, status); the current pixel's
        receptive field tinted if the session switched it on."""
        self.core.threads()
        spec = self.registry.spec(model_name)
        y = parse_class(class_label, spec)
        n = parse_int(n, "Number of samples", 1, MAX_SAMPLES)
        temperature, seed, pace = parse_temperature(temperature), parse_seed(seed), parse_pace(pace)
        model = self.registry.load(model_name)
        start = time.monotonic()
        scale = grid_scale(spec.height, spec.width, n)
        cols = math.ceil(math.sqrt(n))

        def render(step: pixelrnn.Step, final: bool) -> tuple[np.ndarray, np.ndarray]:
            pixels = step.image.cpu().numpy()
            s = scale * (spec.height // pixels.shape[2])
            pending = None if final else ~step.done.cpu().numpy()
            cells = render_images(pixels, spec.levels, s, pending, None if final else step.position,
                                  self._field(request, "generate", model_name, model, step, final))
            r, j = step.position
            where = "small image, " if step.stage == "small" else ""
            title = f"Sample 1, {where}row {r}, col {j}: sampled value marked"
            dist = render_distribution(step.probs[0].cpu().numpy(), pixels[0, :, r, j].tolist(), title)
            return tile(cells, cols), dist

        def summary(step: pixelrnn.Step) -> str:
            what = f" of class {spec.class_names[y]!r}" if y is not None else ""
            check = "" if y is None else class_check(spec, step.image, [y] * n, self.registry.entry(model_name)
                                                     .metrics.get("on_class"))
            return (f"Generated {n} sample{'s' if n > 1 else ''}{what} with `{model_name}` in "
                    f"{time.monotonic() - start:.1f} s (seed {seed}, temperature {temperature:g}, "
                    f"{recording.method} sampler).{check}")

        with self.core.capacity(n, spec, "samples") as work:  # sampled with the other requests for the model
            wanted = pixelrnn.SampleRequest(n, y, temperature, seed)  # (`request` is the visitor's HTTP request)
            recording = self.core.batches.submit(model, wanted, work)
            try:
                yield from self.core.stream(recording.replay(), spec, pace, render, summary)
            finally:
                recording.cancelled = True  # a stopped stream: its run may end early

    def _field(self, request: gr.Request | None, tab: str, model_name: str, model: pixelrnn.Model,
               step: pixelrnn.Step, final: bool) -> np.ndarray | None:
        """The receptive field to tint in a frame ((H, W) bool), when switched on, measured and in the full-size
        stage."""
        if final or step.stage != "full" or not self.core.shows_field(request, tab):
            return None
        fields = self.core.receptive_fields(model_name, model)
        return None if fields is None else fields[step.position]

    # -- Complete --
    @user_errors
    def complete(self, model_name: str, editor: Any, class_label: Any = None, mode: Any = "plain",
                 particles: Any = 8, n: Any = 3, temperature: Any = 1.0, seed: Any = 0, pace: Any = 0.0,
                 request: gr.Request = None) -> Iterator[tuple]:
        """Stream completions of the painted region: (original | completions, current distribution, status); the
        current pixel's receptive field tinted if the session switched it on."""
        self.core.threads()
        spec = self.registry.spec(model_name)
        y = parse_class(class_label, spec, allow_auto=True)
        smc = parse_mode(mode)
        k = parse_int(particles, "Particles", 2, MAX_PARTICLES) if smc else 1
        n = parse_int(n, "Number of completions", 1, MAX_COMPLETIONS)
        temperature, seed, pace = parse_temperature(temperature), parse_seed(seed), parse_pace(pace)
        with self.core.capacity(n * k, spec, "completions or particles"):  # refused before the upload is read
            background, layers = editor_parts(editor)
            prepared = prepare_image(background, spec)
            mask = extract_mask(layers, prepared, spec.height, spec.width)
            if not mask.any():
                raise gr.Error("The mask is empty: paint over the part of the image to regenerate with the brush.")
            model = self.registry.load(model_name)
            auto = ""
            if spec.num_classes and y is None:
                device = next(model.parameters()).device
                y, auto = auto_classes(model, prepared.tensor().to(device), mask, spec.class_names, n, seed)
            start = time.monotonic()
            steps = pixelrnn.sample_steps(model, n, y=y, image=prepared.tensor(), mask=torch.from_numpy(mask),
                                          temperature=temperature, seed=seed, every=1, particles=k)
            scale = display_scale(spec.height, spec.width)
            original = masked_original(prepared.pixels, spec.levels, mask, scale)

            def render(step: pixelrnn.Step, final: bool) -> tuple[np.ndarray, np.ndarray]:
                pixels = step.image.cpu().numpy()
                f = spec.height // pixels.shape[2]
                stage_mask = mask[::f, ::f] if f > 1 else mask
                pending = None if final else stage_mask & ~step.done.cpu().numpy()
                cells = render_images(pixels, spec.levels, scale * f, pending, None if final else step.position,
                                      self._field(request, "complete", model_name, model, step, final))
                r, j = step.position
                known = not stage_mask[r, j]
                where = "small image, " if step.stage == "small" else ""
                what = "known, scored" if known else "sampled value marked"
                title = f"Completion 1, {where}row {r}, col {j}: {what}"
                dist = render_distribution(step.probs[0].cpu().numpy(), pixels[0, :, r, j].tolist(), title)
                return tile([original, *cells], min(n + 1, 5)), dist

            def summary(step: Any) -> str:
                how = f"context-aware (SMC, {k} particles each)" if smc else "plain"
                text = (f"{n} {how} completion{'s' if n > 1 else ''} of {int(mask.sum())} pixels with `{model_name}` in "
                        f"{time.monotonic() - start:.1f} s (seed {seed}). Left: the original, the region to regenerate "
                        f"in red.{auto}")
                if y is not None:  # the class given, or each completion's drawn from the posterior
                    text += class_check(spec, step.image, y.tolist() if torch.is_tensor(y) else [y] * n)
                if smc and step is not None and step.ess:
                    ess = torch.stack([e.float().cpu() for e in step.ess]).mean()
                    text += f" Mean effective sample size per row: {float(ess):.1f} of {k}."
                if prepared.notes:
                    text += f" Input: {'; '.join(prepared.notes)}."
                return text

            yield from self.core.stream(steps, spec, pace, render, summary)

    # -- Upscale --
    @user_errors
    def upscale(self, model_name: str, image: Any, n: Any = 4, temperature: Any = 1.0, seed: Any = 0,
                pace: Any = 0.0) -> Iterator[tuple]:
        """Super-resolution with a Multi-Scale PixelRNN (Sec. 3.6): the image is reduced to the model's small size
        and n full-size images are sampled given it. Streams (small image, samples, current pixel's distribution,
        uncertainty map, status)."""
        self.core.threads()
        spec = self.registry.spec(model_name)
        if not spec.factor:
            multiscale = [name for _, name in self.registry.choices(multiscale=True)]
            raise gr.Error(f"`{model_name}` is not a Multi-Scale model, so it cannot upscale: pick "
                           + (", ".join(f"`{name}`" for name in multiscale) if multiscale else "a Multi-Scale model")
                           + ".")
        if spec.num_classes:
            raise gr.Error("Upscaling with a class-conditional Multi-Scale model is not supported yet.")
        n = parse_int(n, "Number of samples", 1, MAX_SAMPLES)
        temperature, seed, pace = parse_temperature(temperature), parse_seed(seed), parse_pace(pace)
        with self.core.capacity(n, spec, "samples"):
            prepared = prepare_image(image, spec)
            model = self.registry.load(model_name)
            f = spec.factor
            open_pixels = model.open_pixels(spec.height, spec.width).numpy()  # what the sampler draws
            maps = maps_of(model, prepared.tensor().to(next(model.parameters()).device), None)
            given_small_nats = float(maps["nll_bits"].sum()) * math.log(2)  # -log p(x | its small image)
            scale = grid_scale(spec.height, spec.width, n)
            small = render_images(prepared.pixels[None, :, ::f, ::f], spec.levels, scale * f)[0]
            uncertainty = render_heatmap(maps["entropy_bits"].sum(0), scale, "entropy, bits")
            start = time.monotonic()
            steps = pixelrnn.sample_steps(model, n, image=prepared.tensor(), mask=torch.from_numpy(open_pixels),
                                          temperature=temperature, seed=seed, every=1)

            def render(step: pixelrnn.Step, final: bool) -> tuple[np.ndarray, np.ndarray]:
                pixels = step.image.cpu().numpy()
                stage_f = spec.height // pixels.shape[2]
                pending = None if final else open_pixels[::stage_f, ::stage_f] & ~step.done.cpu().numpy()
                cells = render_images(pixels, spec.levels, scale * stage_f, pending,
                                      None if final else step.position)
                r, j = step.position
                title = f"Sample 1 given the small image, row {r}, col {j}: sampled value marked"
                dist = render_distribution(step.probs[0].cpu().numpy(), pixels[0, :, r, j].tolist(), title)
                return tile(cells, math.ceil(math.sqrt(n))), dist

            def summary(_: Any) -> str:
                dims = spec.channels * int(open_pixels.sum())
                text = (f"{n} full-size sample{'s' if n > 1 else ''} of the {spec.height // f}x{spec.width // f} "
                        f"image with `{model_name}` in {time.monotonic() - start:.1f} s (seed {seed}, temperature "
                        f"{temperature:g}). The input's full image given its small one: -log p = "
                        f"{given_small_nats:.2f} nats ({pixelrnn.bits_per_dim(given_small_nats, dims):.3f} bits per "
                        f"open sub-pixel).")
                if prepared.notes:
                    text += f" Input: {'; '.join(prepared.notes)}."
                return text

            yield small, gr.skip(), gr.skip(), uncertainty, "Upscaling…"
            for frame in self.core.stream(steps, spec, pace, render, summary):
                yield gr.skip(), *frame[:2], gr.skip(), frame[2]
