"""PixelRNN Studio: a Gradio demo of Pixel Recurrent Neural Networks (van den Oord et al., 2016).

Wiring only; the logic is in pixelrnn/ui/. Run `python app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
are honoured). Models: folders with a config.json under $PIXELRNN_CHECKPOINTS (default checkpoints/),
plus Hub repo ids in $PIXELRNN_HUB_MODELS (comma-separated), loaded on first use.
"""

from __future__ import annotations

import functools
import os

# a demo that reads people's images sends nothing anywhere unless asked: no usage reports (set these to opt in)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gradio as gr

from pixelrnn import ui

try:  # ZeroGPU on Hugging Face Spaces; a no-op elsewhere
    import spaces

    gpu: Callable[[Callable], Callable] = spaces.GPU
except ImportError:
    def gpu(fn: Callable) -> Callable:
        return fn
# on ZeroGPU hardware (not merely with `spaces` installed) Generate's batched runs are recorded in one GPU call each
ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))

IDLE_POLL_S = 0.02
PREFERRED = ("binarized-mnist-diagonal-bilstm", "binarized-mnist-row-lstm", "binarized-mnist-pixelcnn")
CSS = """
@media (max-width: 640px) {  /* a phone: the title only, so that Generate and the stream fit the first screen */
  #intro p { display: none; }
}
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
#gen-status, #cmp-status { min-height: 2.5em; }
.caption p { margin: 0 !important; font-size: 0.9em; }
#insp-table td, #insp-table th, #zip-table td, #zip-table th, #insp-table code, #zip-table code { white-space: nowrap; }
#insp-table, #zip-table { overflow-x: auto; }
#models-table th, #models-table td:nth-child(4), #models-table td:last-child { white-space: nowrap; }
"""
INTRO = """# PixelRNN Studio
Pixel Recurrent Neural Networks ([van den Oord et al., 2016](https://arxiv.org/abs/1601.06759)): every pixel is
sampled from a distribution given all the pixels above and to its left. **Generate** new images pixel by pixel,
**Complete** a region you paint, **Upscale** an image from its small version, **Inspect** how surprising each pixel
of an image is, **Compress** an image losslessly with a model, watch **How it computes**, and read the **Models**'
cards.
"""


def launch_kwargs() -> dict[str, Any]:
    """launch() arguments the app needs (Gradio 6 takes css/theme at launch)."""
    # show_error: a payload Gradio rejects (too few values, a file field that is not a file) gets Gradio's message
    # instead of "error": null; the endpoints' own errors are gr.Error sentences either way
    # max_threads: each running stream holds one of Gradio's worker threads while it waits for its next step (the
    # default 40 would let Generate's 64 stream slots starve every other event)
    return {"css": CSS, "allowed_paths": [str(ui.ASSETS_DIR)], "max_file_size": ui.MAX_UPLOAD_BYTES,
            "theme": gr.themes.Soft(), "show_error": True, "max_threads": ui.GENERATE_SLOTS + 32}


def _model_dropdown(registry: ui.Registry, elem_id: str, value: str | None) -> gr.Dropdown:
    return gr.Dropdown(registry.choices(), value=value, label="Model", elem_id=elem_id)


def _class_dropdown(studio: ui.Studio, model: str | None, elem_id: str, allow_auto: bool = False) -> gr.Dropdown:
    update = studio.core.class_update(model, allow_auto) if model else {"choices": [], "value": None, "visible": False}
    return gr.Dropdown(update["choices"], value=update["value"], visible=update["visible"], label="Class",
                       elem_id=elem_id)


def _image(caption: str, name: str, elem_id: str, pixelated: bool = True, **kwargs: Any) -> gr.Image:
    """An output image under a caption (a label badge would cover the image's top left corner); `name` is
    its label, which names it in the API. `pixelated`: scaled without smoothing (model pixels, not plots)."""
    with gr.Column(min_width=160, variant="panel"):
        gr.Markdown(f"**{caption}**", elem_classes=["caption"])
        return gr.Image(label=name, show_label=False, format="png", interactive=False, elem_id=elem_id,
                        elem_classes=["pixelated"] if pixelated else [], buttons=["download", "fullscreen"], **kwargs)


def _field_checkbox(studio: ui.Studio, prefix: str, tab: str) -> gr.Checkbox:
    """The receptive-field overlay's switch, remembered per browser session (the endpoints' arguments stay)."""
    field = gr.Checkbox(False, label="Show the current pixel's receptive field",
                       info="blue: the pixels its distribution depends on in this model, measured from the model "
                            "on first use, in the background (under a minute for MNIST, minutes for CIFAR-10); the "
                            "Row LSTM sees a triangle above, the Diagonal BiLSTM the whole past, the PixelCNN a "
                            "window with a blind spot",
                       elem_id=f"{prefix}-field")

    def remember(show: bool, request: gr.Request) -> None:  # Gradio passes the request to a parameter so typed
        studio.core.show_field(tab, show, request)

    field.change(remember, field, None, queue=False, api_visibility="private", show_progress="hidden")
    return field


def _sampling_settings(prefix: str, pace: float) -> tuple[gr.Slider, gr.Textbox, gr.Slider]:
    """Temperature, seed and animation length of a sampling tab (elem ids prefix-temperature, -seed, -pace)."""
    temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature", elem_id=f"{prefix}-temperature")
    # a text box: a blank Number would be sent as 0, the same images on every click
    seed = gr.Textbox("", placeholder="random", label="Seed (blank: random)", max_lines=1, elem_id=f"{prefix}-seed")
    pace_s = gr.Slider(0, 10, value=pace, step=0.5, label="Animation (s)", info="0: full speed",
                       elem_id=f"{prefix}-pace")
    return temperature, seed, pace_s


def _image_input(prefix: str, examples: list[str], height: int) -> gr.Image:
    """An image upload (a file path) with the example images under it."""
    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], elem_id=f"{prefix}-image",
                     elem_classes=["pixelated"], height=height)
    if examples:
        gr.Examples([[p] for p in examples], [image], label="Examples", elem_id=f"{prefix}-examples")
    return image


def _image_inputs(registry: ui.Registry, studio: ui.Studio, prefix: str, default: str | None, examples: list[str],
                  height: int, verb: str) -> tuple[gr.Dropdown, gr.Image, gr.Dropdown, gr.Button]:
    """Model, image (with examples), class ("auto" first) and the run button of a tab that reads one image."""
    model = _model_dropdown(registry, f"{prefix}-model", default)
    image = _image_input(prefix, examples, height)
    cls = _class_dropdown(studio, default, f"{prefix}-class", allow_auto=True)
    return model, image, cls, gr.Button(verb, variant="primary", elem_id=f"{prefix}-run")


def _run_stop(prefix: str, verb: str) -> tuple[gr.Button, gr.Button]:
    with gr.Row():
        return (gr.Button(verb, variant="primary", elem_id=f"{prefix}-run"),
                gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop"))


def _follow_classes(studio: ui.Studio, model: gr.Dropdown, cls: gr.Dropdown, allow_auto: bool,
                    name: str) -> gr.events.Dependency:
    """The class dropdown follows the model (hidden for an unconditional one); returns the event (for .success)."""
    return model.change(functools.partial(studio.core.class_update, allow_auto=allow_auto), model, cls, api_name=name,
                        api_visibility="undocumented", show_progress="hidden")


def _stream_controls(run: gr.events.Dependency, stop: gr.Button, model: gr.Dropdown, outputs: list[Any],
                     stop_name: str, new_input: gr.components.Component | None = None) -> None:
    """Stop and clearing of a streaming tab whose `run` event fills `outputs` (the status last)."""
    status = outputs[-1]
    # Stop cancels the stream, lets the frames on their way land, then says "Stopped." if it stopped something
    stop.click(None, cancels=[run], api_name=stop_name, api_visibility="private", queue=False).then(
        ui.settle, api_visibility="private", queue=False, show_progress="hidden").then(
        ui.stopped, status, status, api_visibility="private", queue=False, show_progress="hidden")
    # results never outlive the model or input they came from: a model change clears them and stops a running
    # stream; a new input clears them (in the browser), unless a stream is running: uploads and brush strokes are
    # reported late, sometimes after Run
    model.change(None, cancels=[run], api_visibility="private", queue=False).then(  # cancel, then clear
        ui.settle, api_visibility="private", queue=False, show_progress="hidden").then(
        ui.model_changed(len(outputs)), status, outputs, api_visibility="private", queue=False,
        show_progress="hidden")
    if new_input is not None:
        new_input.change(None, outputs, outputs, js=ui.clear_js(streaming=True), api_visibility="private",
                         queue=False, show_progress="hidden")


def _generate_tab(studio: ui.Studio, registry: ui.Registry, default: str | None, sampling: dict[str, Any]) -> None:
    """Generate: new images streamed pixel by pixel, with Stop."""
    with gr.Tab("Generate", id="generate", elem_id="tab-generate"), gr.Row():
        with gr.Column(scale=1, min_width=280):  # on a phone this column comes first: keep it short
            model = _model_dropdown(registry, "gen-model", default)
            cls = _class_dropdown(studio, default, "gen-class")
            run, stop = _run_stop("gen", "Generate")
            status = gr.Markdown(label="Status", elem_id="gen-status")
        with gr.Column(scale=2):
            image = _image("Samples (grey: not sampled yet; red outline: current pixel)", "Samples", "gen-image")
            dist = _image("Current pixel: predictive distribution", "Distribution", "gen-dist")
            with gr.Accordion("Settings", open=True, elem_id="gen-settings"), gr.Row():
                n = gr.Slider(1, ui.MAX_SAMPLES, value=4, step=1, label="Samples", elem_id="gen-n")
                temperature, seed, pace = _sampling_settings("gen", pace=3)
            _field_checkbox(studio, "gen", "generate")

    _follow_classes(studio, model, cls, False, "classes_generate")
    outputs = [image, dist, status]
    # its own concurrency: the streams replay recordings, Generate's worker threads do the (batched) sampling, on
    # ZeroGPU one GPU call per run (Studio's gpu), so that no animation holds the GPU
    event = run.click(studio.sampling.generate, [model, cls, n, temperature, seed, pace], outputs,
                      api_name="generate", preprocess=False, show_progress="hidden",
                      **(sampling | {"concurrency_id": "generate", "concurrency_limit": ui.GENERATE_SLOTS}))
    _stream_controls(event, stop, model, outputs, "stop_generate")


def _complete_tab(studio: ui.Studio, registry: ui.Registry, default: str | None, examples: list[str],
                  sampling: dict[str, Any]) -> None:
    """Complete: the painted region regenerated by the model, streamed, with Stop."""
    with gr.Tab("Complete", id="complete", elem_id="tab-complete"), gr.Row():
        with gr.Column(scale=1, min_width=300):
            model = _model_dropdown(registry, "cmp-model", default)
            cls = _class_dropdown(studio, default, "cmp-class", allow_auto=True)
            editor = gr.ImageEditor(
                type="numpy", image_mode="RGBA", layers=False, transforms=(), format="png",
                sources=["upload", "clipboard"], brush=gr.Brush(colors=["#ff0000"], color_mode="fixed"),
                eraser=gr.Eraser(), label="Paint the region", elem_id="cmp-editor",
                elem_classes=["pixelated"], canvas_size=(400, 400), height=470)
            run, stop = _run_stop("cmp", "Complete")
            if examples:
                gr.Examples([[p] for p in examples], [editor], label="Examples", elem_id="cmp-examples",
                            examples_per_page=12)
            gr.Markdown("Uploads are centre-cropped to the model's aspect ratio, resized and quantized to its "
                        "levels (transparency becomes black; single-channel images with a light background "
                        "are inverted, as MNIST digits are light on dark).", elem_classes=["caption"])
        with gr.Column(scale=2):
            image = _image("Original (region to regenerate in red) | completions", "Completions", "cmp-image")
            status = gr.Markdown(label="Status", elem_id="cmp-status")
            dist = _image("Current pixel: predictive distribution", "Distribution", "cmp-dist")
            with gr.Accordion("Settings", open=True, elem_id="cmp-settings"):
                mode = gr.Radio(list(ui.MODES), value=ui.MODES[0], label="Completion",
                                info="context-aware: each completion is picked among particles weighted "
                                     "by how well they fit the known pixels below and right of the hole "
                                     "(at temperature T, drawn and weighted with the same tempered "
                                     "probabilities: the tempered model given the known pixels)",
                                elem_id="cmp-mode")
                with gr.Row():
                    particles = gr.Slider(2, ui.MAX_PARTICLES, value=8, step=1, label="Particles (SMC)",
                                          elem_id="cmp-particles")
                    n = gr.Slider(1, ui.MAX_COMPLETIONS, value=3, step=1, label="Completions", elem_id="cmp-n")
                with gr.Row():
                    temperature, seed, pace = _sampling_settings("cmp", pace=2)
                _field_checkbox(studio, "cmp", "complete")

    _follow_classes(studio, model, cls, True, "classes_complete")
    outputs = [image, dist, status]
    event = run.click(gpu(studio.sampling.complete), [model, editor, cls, mode, particles, n, temperature, seed, pace],
                      outputs, api_name="complete", preprocess=False, show_progress="hidden", **sampling)
    _stream_controls(event, stop, model, outputs, "stop_complete", new_input=editor)


def _upscale_tab(studio: ui.Studio, registry: ui.Registry, examples: list[str], sampling: dict[str, Any]) -> None:
    """Upscale: a Multi-Scale model paints the full-size image given its small version, streamed, with Stop."""
    with gr.Tab("Upscale", id="upscale", elem_id="tab-upscale"), gr.Row():
        with gr.Column(scale=1, min_width=280):
            model = gr.Dropdown(registry.choices(multiscale=True), value=registry.default(multiscale=True),
                                label="Multi-Scale model", elem_id="ups-model")
            upload = _image_input("ups", examples, height=240)
            n = gr.Slider(1, ui.MAX_SAMPLES, value=4, step=1, label="Samples", elem_id="ups-n")
            temperature, seed, pace = _sampling_settings("ups", pace=2)
            run, stop = _run_stop("ups", "Upscale")
            gr.Markdown("The image is reduced to the model's small size (every second pixel); the model "
                        "paints the full-size image given it (Multi-Scale PixelRNN, Sec. 3.6).",
                        elem_classes=["caption"])
        with gr.Column(scale=2):
            status = gr.Markdown(label="Status", elem_id="ups-status")
            with gr.Row():
                small = _image("Input, reduced to the small size", "Small image", "ups-small")
                entropy = _image("Uncertainty: entropy of each pixel's prediction for the input (bits)",
                                 "Uncertainty", "ups-entropy")
            image = _image("Full-size samples given the small image", "Samples", "ups-samples")
            dist = _image("Current pixel: predictive distribution", "Distribution", "ups-dist")

    outputs = [small, image, dist, entropy, status]
    event = run.click(gpu(studio.sampling.upscale), [model, upload, n, temperature, seed, pace], outputs, api_name="upscale",
                      preprocess=False, show_progress="hidden", **sampling)
    _stream_controls(event, stop, model, outputs, "stop_upscale", new_input=upload)


def _inspect_tab(studio: ui.Studio, registry: ui.Registry, default: str | None, examples: list[str],
                 analysis: dict[str, Any]) -> None:
    """Inspect: per-pixel surprise and entropy maps, re-run on a new image or class list; a click shows one
    pixel's distribution and influence map."""
    with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"), gr.Row():
        with gr.Column(scale=1, min_width=280):
            model, image, cls, run = _image_inputs(registry, studio, "insp", default, examples, 300, "Inspect")
        with gr.Column(scale=2):
            table = gr.Markdown(label="Likelihoods", elem_id="insp-table")
            gr.Markdown("Click any pixel of these images to see its predictive distribution.")
            with gr.Row():
                view = _image("The model's view", "View", "insp-view")
                surprise = _image("Surprise, -log2 p (bits)", "Surprise", "insp-surprise")
                entropy = _image("Entropy of the prediction (bits)", "Entropy", "insp-entropy")
            row = gr.Number(label="Row", precision=0, visible=False, elem_id="insp-row")
            col = gr.Number(label="Column", precision=0, visible=False, elem_id="insp-col")
            pixel_text = gr.Markdown(label="Pixel text", elem_id="insp-pixel-text")
            with gr.Row():
                dist = gr.HTML(elem_id="insp-dist", label="Pixel distribution")
                with gr.Column(scale=0, min_width=240):
                    influence = _image("Influence on this pixel", "Influence", "insp-influence")
                    gr.Markdown("How much each pixel moved the clicked pixel's prediction: the size of the "
                                "gradient of log p(its value) with respect to each pixel's value. Zero "
                                "outside what the model can see.", elem_classes=["caption"])

    classes = _follow_classes(studio, model, cls, True, "classes_inspect")
    outputs = [view, surprise, entropy, table, dist, influence, pixel_text, row, col]
    run.click(gpu(studio.inspector.inspect), [model, image, cls], outputs, api_name="inspect", preprocess=False,
              show_progress_on=[table], **analysis)
    for trigger in (image.change, classes.success):  # a new image, or a model's classes
        trigger(gpu(studio.inspector.inspect_changed), [model, image, cls], outputs, api_visibility="private",
                preprocess=False, show_progress_on=[table], **analysis)
    # a click on any of the three maps picks the pixel; only the first one's endpoint is public
    for k, shown in enumerate((view, surprise, entropy)):
        shown.select(studio.inspector.select_pixel, [model], [row, col], api_name=f"select_pixel_{k}",
                     api_visibility="undocumented", show_progress="hidden", queue=False).then(
            gpu(studio.inspector.pixel), [model, image, cls, row, col], [dist, influence, pixel_text],
            api_name="pixel" if k == 0 else f"pixel_{k}", api_visibility="public" if k == 0 else "undocumented",
            preprocess=False, show_progress="hidden", **analysis)


def _computation_tab(studio: ui.Studio, registry: ui.Registry, default: str | None, examples: list[str],
                     analysis: dict[str, Any]) -> None:
    """How it computes: one teacher-forced pass of a model on an image, animated the way the network runs it."""
    with gr.Tab("How it computes", id="computation", elem_id="tab-computation"), gr.Row():
        with gr.Column(scale=1, min_width=280):
            model, image, cls, run = _image_inputs(registry, studio, "how", default, examples, 240, "Play")
            seconds = gr.Slider(ui.computation_tab.MIN_SECONDS, ui.computation_tab.MAX_SECONDS, value=8, step=1,
                                label="Animation (s)", elem_id="how-seconds")
            figure = _image("Each architecture's context of the red pixel (the paper's Fig. 2, measured from "
                            "small models)", "Context", "how-figure")
        with gr.Column(scale=2):
            animation = _image("One pass, step by step (an animation that loops)", "Pass", "how-animation")
            text = gr.Markdown(label="How it computes", elem_id="how-text")

    _follow_classes(studio, model, cls, True, "classes_computation")
    outputs = [animation, figure, text]
    # not decorated with `gpu`: the pass runs on a CPU copy of the model (pixelrnn.views), and holding a ZeroGPU
    # slice for it would only spend the visitor's quota
    run.click(studio.computation.play, [model, image, cls, seconds], outputs, api_name="computation",
              preprocess=False, show_progress_on=[animation], **analysis)
    for change in (model.change, image.change):  # the animation never outlives its model or image
        change(None, outputs, outputs, js=ui.clear_js(streaming=False), api_visibility="private", queue=False,
               show_progress="hidden")


def _compress_tab(studio: ui.Studio, registry: ui.Registry, default: str | None, examples: list[str],
                  sampling: dict[str, Any]) -> None:
    """Compress: the image range-coded with the model (re-run on a new image or class list); Decode reads a
    .prnn file back."""
    with gr.Tab("Compress", id="compress", elem_id="tab-compress"), gr.Row():
        with gr.Column(scale=1, min_width=280):
            model, image, cls, run = _image_inputs(registry, studio, "zip", default, examples, 260, "Compress")
            gr.Markdown("A model's NLL is a code length: a range coder driven by the model's predictive "
                        "distributions stores the image in about that many bits, losslessly.",
                        elem_classes=["caption"])
        with gr.Column(scale=2):
            table = gr.Markdown(label="Sizes", elem_id="zip-table")
            status = gr.Markdown(label="Status", elem_id="zip-status")
            file = gr.File(label="Compressed file (.prnn)", elem_id="zip-file", interactive=False)
            with gr.Row():
                with gr.Column(min_width=240):
                    packed = gr.File(label="Decode a .prnn file", file_types=[".prnn"], elem_id="unzip-file")
                    unzip_status = gr.Markdown(label="Decoding status", elem_id="unzip-status")
                decoded = _image("Decoded image (rows appear as they are decoded)", "Decoded", "unzip-image")

    classes = _follow_classes(studio, model, cls, True, "classes_compress")
    outputs = [table, file, status]
    run.click(gpu(studio.compressor.compress), [model, image, cls], outputs, api_name="compress", preprocess=False,
              show_progress="hidden", **sampling)
    for trigger in (image.change, classes.success):
        trigger(gpu(studio.compressor.compress_changed), [model, image, cls], outputs, api_visibility="private",
                preprocess=False, show_progress="hidden", **sampling)
    # the sampling slots but no arrival validator: that takes the model name as first input, and here the model is
    # named inside the file
    packed.upload(gpu(studio.compressor.decompress), packed, [decoded, unzip_status], api_name="decompress", preprocess=False,
                  show_progress="hidden", concurrency_id="sampling", concurrency_limit=ui.SAMPLING_SLOTS)


def _models_tab(demo: gr.Blocks, studio: ui.Studio, registry: ui.Registry, default: str | None) -> None:
    """Models: the table of models (refreshed on page load, to show load failures since start-up) and a card."""
    with gr.Tab("Models", id="models", elem_id="tab-models"):
        table = gr.Markdown(ui.models_table(registry), elem_id="models-table")
        model = _model_dropdown(registry, "card-model", default)
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Markdown(label="Card", elem_id="card-text")
            with gr.Column(scale=2):
                samples = _image("Samples at temperature 1 (samples.png)", "Samples", "card-samples")
                curve = _image("Learning curve: validation NLL (learning_curve.png)", "Learning curve",
                               "card-curve", pixelated=False)
                sheet = _image("Class-conditional models: each class's first samples (a row per class), framed by "
                               "what an independent classifier read: green the class asked for, red another, grey "
                               "none (on_class.png)", "Class readings", "card-classes")

    card = [text, samples, curve, sheet]
    model.change(studio.model_card, model, card, api_name="model_card", preprocess=False)
    demo.load(functools.partial(ui.models_table, registry), None, table, api_name="models_table",
              api_visibility="undocumented", show_progress="hidden")
    if default:
        demo.load(studio.model_card, model, card, api_name="model_card_on_load", api_visibility="undocumented")


def build_demo(checkpoints: str | Path | None = None, hub_models: Iterable[str] | None = None,
               device: str | None = None) -> gr.Blocks:
    """The PixelRNN Studio app; models from `checkpoints` (default $PIXELRNN_CHECKPOINTS or checkpoints/) and
    `hub_models` (default $PIXELRNN_HUB_MODELS). Each tab's builder lays it out and wires its events."""
    ui.quiet_rejections()
    registry = ui.Registry.from_env(checkpoints, hub_models, device)
    studio = ui.Studio(registry, gpu=gpu if ZERO_GPU else None)
    default = registry.default(PREFERRED)
    examples = ui.example_images()
    # events that load a model wait for a Hub model still downloading before they take a slot (Registry.arrival);
    # one concurrency limit for all the sampling events, one for all the analysis events
    sampling = {"concurrency_id": "sampling", "concurrency_limit": ui.SAMPLING_SLOTS, "validator": studio.core.arrival}
    analysis = {"concurrency_id": "analysis", "concurrency_limit": ui.ANALYSIS_SLOTS, "validator": studio.core.arrival}

    with gr.Blocks(title="PixelRNN Studio", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs(elem_id="tabs"):
            _generate_tab(studio, registry, default, sampling)
            _complete_tab(studio, registry, default, examples, sampling)
            _upscale_tab(studio, registry, examples, sampling)
            _inspect_tab(studio, registry, default, examples, analysis)
            _compress_tab(studio, registry, default, examples, sampling)
            _computation_tab(studio, registry, default, examples, analysis)
            _models_tab(demo, studio, registry, default)

    demo.queue(default_concurrency_limit=2, max_size=ui.QUEUE_SIZE)
    # Gradio's idle queue polls every 1 ms and its progress loop every 10 ms (~6% of a core with nobody there); at
    # 20 ms a new request waits at most 20 ms more (no endpoint here reports gr.Progress). Private attributes of the
    # pinned Gradio: skipped if they are gone.
    for name in ("sleep_when_free", "progress_update_sleep_when_free"):
        if hasattr(demo._queue, name):
            setattr(demo._queue, name, IDLE_POLL_S)
    return demo


if __name__ == "__main__":
    build_demo().launch(**launch_kwargs())
