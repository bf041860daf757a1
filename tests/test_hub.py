"""pixelrnn.hub against a loopback fake Hub (tests/fakehub.py) with the real huggingface_hub client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from fakehub import FakeHub
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

import pixelrnn
from pixelrnn import hub
from pixelrnn.card import format_duration, write_model_card
from pixelrnn.hub import CheckpointError, HubUnreachableError

REPO_ROOT = Path(__file__).resolve().parent.parent
METRICS = {"dataset": "binarized_mnist", "arch": "row_lstm", "test_nll_nats": 85.1, "test_bits_per_dim": 0.1566,
           "unit": "nats", "test_images": 10000, "epochs": 1.5, "steps": 1200, "batch_size": 64, "wall_time_s": 600,
           "device": "cpu (2 cores)", "parameters": 3146, "valid_nll_nats": 85.93}


def tiny_model(**overrides) -> pixelrnn.Model:
    kwargs = {"hidden": 6, "layers": 1} | overrides
    height = 8 if "factor" in kwargs else 6
    return pixelrnn.build_model("row_lstm", 1, 2, height, height, **kwargs)


def save(model: torch.nn.Module, folder: Path, metrics: dict | None = None) -> Path:
    model.save_pretrained(folder)
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    size = a.large.height if hasattr(a, "large") else a.height
    x = torch.randint(0, 2, (3, 1, size, size))
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    if isinstance(out_a, tuple):
        return all(torch.equal(p, q) for p, q in zip(out_a, out_b, strict=True))
    return torch.equal(out_a, out_b)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private HF cache and checkpoints dir; no offline mode; a fake token (never a real one)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # tests that need a hub override it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "CHECKPOINTS_DIR", tmp_path / "checkpoints")
    return tmp_path


@pytest.fixture
def fake_hub(env, monkeypatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def tiny(env):
    model = tiny_model()
    return model, save(model, env / "tiny", METRICS)


def test_load_from_hub_reproduces_logits(fake_hub, tiny):
    model, folder = tiny
    fake_hub.set_repo("user/tiny", files_of(folder))
    loaded = hub.load("user/tiny", device=torch.device("cpu"))
    assert isinstance(loaded, pixelrnn.PixelRNN) and not loaded.training
    assert same_outputs(model.eval(), loaded)
    assert (hub.resolve("user/tiny") / "metrics.json").is_file()  # fetched alongside, for the app


def test_second_load_uses_cache_even_without_server(fake_hub, tiny, monkeypatch):
    model, folder = tiny
    fake_hub.set_repo("user/tiny", files_of(folder))
    hub.load("user/tiny")
    assert fake_hub.count("GET", "model.safetensors") == 1
    before = fake_hub.count()
    hub.load("user/tiny")
    assert fake_hub.count() == before  # served from the cache without a single request
    fake_hub.stop()
    assert same_outputs(model.eval(), hub.load("user/tiny"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert same_outputs(model.eval(), hub.load("user/tiny"))


def test_offline_with_empty_cache_fails_fast(fake_hub, tiny, monkeypatch):
    fake_hub.set_repo("user/tiny", files_of(tiny[1]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"'user/tiny' is not in the Hugging Face cache.*offline mode"):
        hub.load("user/tiny")
    assert time.monotonic() - started < 5  # no retries (they take 20+ s), with room for a busy machine
    assert fake_hub.count() == 0


def test_unreachable_endpoint_fails_fast(env):
    started = time.monotonic()
    with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face Hub") as info:
        hub.load("user/tiny")
    assert time.monotonic() - started < 10  # refused at once: no 23 s of retries
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, CheckpointError)


def test_silent_endpoint_fails_within_probe_timeout(env, monkeypatch):
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(HubUnreachableError, match="cannot reach"):
            hub.load("user/tiny")
        assert time.monotonic() - started < hub.PROBE_TIMEOUT_S + 2.5  # the probe's limit, not 200 s of silence


def test_hub_answering_503_is_unreachable(fake_hub, tiny):
    fake_hub.set_repo("user/tiny", files_of(tiny[1]))
    fake_hub.fail_with = 503
    with pytest.raises(HubUnreachableError, match="HTTP 503"):
        hub.load("user/tiny")
    assert fake_hub.count() == 1  # only the probe


def test_missing_repo(fake_hub):
    with pytest.raises(CheckpointError, match="'user/nothing': no such model repo") as info:
        hub.load("user/nothing")
    assert not isinstance(info.value, HubUnreachableError)


def test_invalid_name(env):
    with pytest.raises(CheckpointError, match="no model named 'no such/folder/at all'"):
        hub.load("no such/folder/at all")


def test_an_unknown_name_lists_the_checkpoints_and_never_asks_the_hub(env, tiny):
    """Defect: load("typo") said "cannot reach the Hugging Face Hub" instead of "no such model"."""
    tiny[0].save_pretrained(env / "checkpoints" / "shipped-one")
    with pytest.raises(CheckpointError, match="no model named 'typo': the checkpoints here are shipped-one; "
                                              ".* Hugging Face Hub repo id 'user/name'") as info:
        hub.load("typo")
    assert not isinstance(info.value, HubUnreachableError)


def test_hub_repo_with_only_pickle_weights(fake_hub, tiny):
    files = files_of(tiny[1])
    files["pytorch_model.bin"] = files.pop("model.safetensors")
    fake_hub.set_repo("user/pickled", files)
    with pytest.raises(CheckpointError, match="has no model.safetensors.*only from model.safetensors"):
        hub.load("user/pickled")


def test_truncated_weights_from_hub(fake_hub, tiny):
    files = files_of(tiny[1])
    files["model.safetensors"] = files["model.safetensors"][:-100]
    fake_hub.set_repo("user/broken", files)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        hub.load("user/broken")


@pytest.mark.parametrize("keep", [0, 4, 30, -10], ids=["empty", "in-length", "in-header", "in-data"])
def test_truncated_weights_local(tiny, keep):
    weights = tiny[1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        hub.load(tiny[1])


def test_local_pickle_only_folder_is_refused_without_unpickling(tiny, monkeypatch):
    model, folder = tiny
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    with pytest.raises(CheckpointError, match=r"refusing to load pickle weights \['pytorch_model.bin'\]"):
        hub.load(folder)


@pytest.mark.parametrize("config, message", [
    ('{"arch": "nope"}', "arch must be one of"),
    ('{"arch": "row_lstm", "hidden": -3}', "hidden must be a positive integer"),
    ('{"hidden": 6.5}', "hidden must be a positive integer"),
    ('{"skip": "yes"}', "skip must be true or false"),
    ('{"arch": "row_lstm", "attention_heads": 4}', r"unknown model argument\(s\) \[.attention_heads.\]"),
    ('{"factor": 3, "height": 8, "width": 8}', "factor must be >= 2 and divide"),
    ('{"small_layers": 2}', "small_layers is for a Multi-Scale PixelRNN: set factor too"),
    ('{"class_maps": 2}', "class_maps is for a single-scale class-conditional model"),
    ("[1, 2, 3]", "expected a JSON object of model arguments, got list"),
    ("{not json", "cannot read JSON"),
    ('{"layers": 1000, "hidden": 4096}', r"too large for pixelrnn: hidden = 4096 \(at most 1024\), layers = 1000"),
    ('{"layers": 64, "hidden": 1024}', r"too large for pixelrnn: 2,551,681,218 parameters \(at most 100,000,000\)"),
], ids=["arch", "negative", "float", "skip", "unknown-key", "factor", "small-layers", "class-maps", "list", "syntax",
        "bounds", "parameters"])
def test_invalid_config(tiny, config, message):
    (tiny[1] / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=message) as info:
        hub.load(tiny[1])
    assert "config.json" in str(info.value)


def test_missing_config(tiny):
    (tiny[1] / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        hub.load(tiny[1])


def test_weights_of_another_shape(tiny):
    config = json.loads((tiny[1] / "config.json").read_text()) | {"hidden": 8}
    (tiny[1] / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match its config.json: .*shape \(12, 1, 7, 7\) in file"):
        hub.load(tiny[1])


def test_local_folder_and_checkpoints_name(env, tiny):
    model, folder = tiny
    assert same_outputs(model.eval(), hub.load(folder))
    assert same_outputs(model.eval(), hub.load(str(folder)))
    named = save(model, env / "checkpoints" / "mine")
    assert hub.resolve("mine") == named.resolve()
    assert same_outputs(model.eval(), hub.load("mine"))


def test_checkpoints_name_cannot_escape(env, tiny, monkeypatch):
    (env / "checkpoints").mkdir()
    save(tiny[0], env / "secret")  # a sibling of checkpoints/
    (env / "cwd" / "sub").mkdir(parents=True)
    monkeypatch.chdir(env / "cwd" / "sub")
    with pytest.raises(CheckpointError, match="no model named '../secret'"):
        hub.resolve("../secret")  # not checkpoints/../secret; as a path from the cwd it does not exist


def test_class_maps_round_trip_and_make_the_class_bias_depend_on_the_pixel(fake_hub, env):
    model = tiny_model(num_classes=3, class_maps=2)
    with torch.no_grad():
        model.class_maps.normal_()  # trained maps; they start at zero
    folder = save(model, env / "maps")
    assert json.loads((folder / "config.json").read_text())["class_maps"] == 2
    assert "class_maps" not in json.loads((save(tiny_model(), env / "plain") / "config.json").read_text())
    fake_hub.set_repo("user/maps", files_of(folder))
    loaded = hub.load("user/maps")
    x, y = torch.randint(0, 2, (2, 1, 6, 6)), torch.tensor([0, 2])
    assert torch.equal(model.eval()(x, y), loaded(x, y))
    bias = loaded.input_bias(y, loaded.conditioning(y, None))  # (2, F, H, W): per class and per pixel
    assert bias.shape[2:] == (6, 6) and not torch.allclose(bias[..., 0, 0], bias[..., 3, 3])
    assert not torch.allclose(bias[0], bias[1])


@pytest.mark.parametrize("small_layers", [None, 3])
def test_multiscale_round_trip(fake_hub, env, small_layers):
    model = tiny_model(factor=2, small_layers=small_layers)
    folder = save(model, env / "ms")
    assert ("small_layers" in json.loads((folder / "config.json").read_text())) == (small_layers is not None)
    fake_hub.set_repo("user/multiscale", files_of(folder))
    loaded = hub.load("user/multiscale")
    assert isinstance(loaded, pixelrnn.MultiScalePixelRNN) and loaded.factor == 2
    assert (len(loaded.small.layers), len(loaded.large.layers)) == (small_layers or 1, 1)
    assert same_outputs(model.eval(), loaded)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card(tiny):
    folder = tiny[1]
    (folder / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "learning_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    text = write_model_card(folder, "user/tiny").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "pixelrnn" and meta["license"] == "mit"
    assert "pixelrnn" in meta["tags"] and "row-lstm" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(85.1)
    assert "**85.10 nats/image** on 10,000 test images" in text
    assert "| paper, Row LSTM (Table 4) | 80.54 nats/image |" in text
    assert "| this checkpoint, validation split | 85.93 nats/image |" in text
    assert "3,146 parameters" in text and "1,200 steps" in text and "10 min of training" in text
    assert "cpu (2 cores)" in text and "![samples](samples.png)" in text
    assert "![learning curve](learning_curve.png)" in text
    assert 'pixelrnn.load("user/tiny")' in text


def test_model_card_says_when_a_resume_changed_the_settings(tiny):
    metrics = json.loads((tiny[1] / "metrics.json").read_text())
    metrics["changes"] = [{"step": 4000, "changed": {"hours": [1.9, 2.0]}}, {"step": 9, "changed": "garbled"}]
    (tiny[1] / "metrics.json").write_text(json.dumps(metrics))
    assert "Resumed with changed settings at step 4000: hours 1.9 -> 2.0." in write_model_card(tiny[1]).read_text()


def test_model_card_says_when_training_ran_under_bf16(tiny):
    assert "bf16" not in write_model_card(tiny[1]).read_text()
    metrics = json.loads((tiny[1] / "metrics.json").read_text())
    metrics["config"] = {"bf16": True}
    (tiny[1] / "metrics.json").write_text(json.dumps(metrics))
    assert "under bf16 autocast (evaluation in float32)" in write_model_card(tiny[1]).read_text()


def test_model_card_names_a_hybrid_objective(tiny):
    assert "log p(y | x)" not in write_model_card(tiny[1]).read_text()
    metrics = json.loads((tiny[1] / "metrics.json").read_text())
    for negatives, said in ((3, "over y and 3 other classes drawn per image"), (0, "over every class")):
        metrics["config"] = {"class_weight": 30.0, "class_negatives": negatives}
        (tiny[1] / "metrics.json").write_text(json.dumps(metrics))
        card = write_model_card(tiny[1]).read_text()
        assert f"objective log p(x | y) + 30 log p(y | x) (the class's posterior by Bayes' rule {said})" in card
    assert "selected by it" not in card  # a run selected by its likelihood
    metrics["selected"] = {"valid": 1.2, "step": 40, "weights": "ema", "class_weight": 30.0}
    (tiny[1] / "metrics.json").write_text(json.dumps(metrics))
    (tiny[1] / "learning_curve.png").write_bytes(b"")  # the card links it when the file is there
    card = write_model_card(tiny[1]).read_text()
    assert "over every class), the weights selected by it on validation" in card
    assert "those with the best objective on validation are the weights here" in card  # the curve's caption
    metrics["config"] = {"class_weight": "30", "class_negatives": [3]}  # garbled: not said
    (tiny[1] / "metrics.json").write_text(json.dumps(metrics))
    card = write_model_card(tiny[1]).read_text()
    assert "log p(y | x)" not in card and "Validation NLL during training" in card


def test_model_card_tolerates_missing_metrics(tiny):
    (tiny[1] / "metrics.json").unlink()
    text = write_model_card(tiny[1]).read_text()
    assert front_matter(text)["library_name"] == "pixelrnn"
    assert "No test result recorded" in text and "3,146 parameters" in text  # counted from config.json
    assert "![samples]" not in text and "![learning curve]" not in text and 'pixelrnn.load("tiny")' in text


def test_model_card_cifar_bits_per_dim(env):
    folder = save(pixelrnn.build_model("diagonal_bilstm", 3, 256, 8, 8, hidden=6, layers=1), env / "cifar",
                  {"dataset": "cifar10", "arch": "diagonal_bilstm", "test_nll_nats": 6000.0,
                   "test_bits_per_dim": 3.4567, "unit": "bits/dim", "test_images": 2000})
    text = write_model_card(folder).read_text()
    assert "**3.457 bits/dim** on 2,000 test images" in text and "| 3.00 bits/dim |" in text
    assert "full 10,000-image CIFAR-10 test set" in text
    assert front_matter(text)["datasets"] == ["uoft-cs/cifar10"] and "reports no figure" not in text


def test_model_card_says_when_the_paper_has_no_figure(env):
    folder = save(pixelrnn.build_model("row_lstm", 1, 256, 8, 8, hidden=6, layers=1, num_classes=10), env / "m256",
                  {"dataset": "mnist", "arch": "row_lstm", "test_nll_nats": 50.0, "test_bits_per_dim": 1.127,
                   "unit": "bits/dim", "test_images": 10000})
    text = write_model_card(folder).read_text()
    assert "**1.127 bits/dim**" in text and "The paper reports no figure for MNIST." in text
    assert "| paper," not in text and "class-conditional over 10 classes" in text


def test_card_cli(tiny):
    (tiny[1] / "README.md").unlink()
    result = subprocess.run([sys.executable, "-m", "pixelrnn.hub", "card", str(tiny[1])], cwd=REPO_ROOT,
                            capture_output=True, check=False, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "library_name: pixelrnn" in (tiny[1] / "README.md").read_text()


def test_push_to_fake_hub(fake_hub, tiny, capsys):
    model, folder = tiny
    (folder / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "learning_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "training_state.json").write_text("{}")  # not for the Hub
    assert hub.main(["push", str(folder), "user/pushed", "--private"]) == 0
    assert "/user/pushed/commit/" in capsys.readouterr().out
    pushed = fake_hub.repos["user/pushed"]
    assert set(pushed) == {"config.json", "model.safetensors", "metrics.json", "README.md", "samples.png",
                           "learning_curve.png"}
    assert b"library_name: pixelrnn" in pushed["README.md"] and b'load("user/pushed")' in pushed["README.md"]
    assert fake_hub.count("POST", "/api/repos/create") == 1
    assert same_outputs(model.eval(), hub.load("user/pushed"))
    assert hub.main(["push", str(folder), "user/pushed"]) == 0  # pushing again to an existing repo works


def test_push_refuses_invalid_checkpoint(fake_hub, tiny, capsys):
    (tiny[1] / "config.json").write_text('{"arch": "nope"}')
    assert hub.main(["push", str(tiny[1]), "user/bad"]) == 1
    assert "arch must be one of" in capsys.readouterr().err
    assert fake_hub.count() == 0


def test_model_cards_of_conditional_and_multi_scale_models(env):
    """Defects: class-conditional checkpoints were tagged unconditional-image-generation; the Multi-Scale card gave
    the single-scale paper figure as its comparison; "1 x cpu (1 threads)"; "109 min" beside "2.0 h"."""
    folder = save(pixelrnn.build_model("row_lstm", 1, 256, 8, 8, hidden=6, layers=1, num_classes=10), env / "cond",
                  {"dataset": "mnist", "arch": "row_lstm", "test_bits_per_dim": 1.1, "unit": "bits/dim",
                   "wall_time_s": 6540, "device": "1 x cpu (x86_64, 1 threads)"})
    text = write_model_card(folder).read_text()
    meta = front_matter(text)
    assert "pipeline_tag" not in meta and "class-conditional" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["task"]["type"] == "class-conditional-image-generation"
    assert "unconditional-image-generation" not in text
    assert "1.8 h of training, on cpu (x86_64, 1 thread)" in text
    metrics = {"dataset": "binarized_mnist", "arch": "row_lstm", "test_nll_nats": 84.9, "unit": "nats",
               "multiscale_factor": 2}
    folder = save(tiny_model(factor=2, small_layers=3), env / "ms", metrics)
    text = write_model_card(folder).read_text()
    assert front_matter(text)["pipeline_tag"] == "unconditional-image-generation"
    assert "multi-scale: a small model (3 residual layers) on the image subsampled by 2" in text
    assert "| paper," not in text and "no figure for a Multi-Scale model on Binarized MNIST" in text


def test_format_duration_uses_one_unit_per_range():
    assert [format_duration(s) for s in (42, 1020, 5760, 6540, 7200)] == ["42 s", "17 min", "1.6 h", "1.8 h",
                                                                             "2.0 h"]


def test_from_pretrained_loads_exactly_or_refuses(env):
    """Defect: PixelRNN.from_pretrained on a Multi-Scale checkpoint built a model and loaded none of the file (the
    Hub mixin loads with strict=False), and it would fall back to pickle files."""
    multiscale = tiny_model(factor=2)
    folder = save(multiscale, env / "ms")
    loaded = pixelrnn.MultiScalePixelRNN.from_pretrained(str(folder))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), multiscale.state_dict().values()))
    with pytest.raises(hub.CheckpointError, match="holds a MultiScalePixelRNN, not a PixelRNN"):
        pixelrnn.PixelRNN.from_pretrained(str(folder))
    single = save(tiny_model(), env / "single")
    assert isinstance(pixelrnn.PixelRNN.from_pretrained(str(single)), pixelrnn.PixelRNN)
    (single / "model.safetensors").rename(single / "pytorch_model.bin")
    with pytest.raises(hub.CheckpointError, match="refusing to load pickle"):
        pixelrnn.PixelRNN.from_pretrained(str(single))
    partial = save(tiny_model(), env / "partial")
    state = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("head.1")}, partial / "model.safetensors")
    with pytest.raises(hub.CheckpointError, match="missing head.1"):
        pixelrnn.PixelRNN.from_pretrained(str(partial))
