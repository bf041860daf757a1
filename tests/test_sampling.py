"""The cached and compiled samplers equal the reference sampler; completion, SMC and likelihood maps."""

import functools
import math
import shutil

import pytest
import torch

import pixelrnn
import pixelrnn.stacked
from pixelrnn.stacked import StackedStepper
from pixelrnn.steppers import CachedStepper

LOGIT_TOLERANCE = 1e-9  # float64: cached and full-pass logits agree to rounding


def make(arch, channels, levels, height=5, width=6, num_classes=None, **hparams):
    hparams = {"hidden": 9, "layers": 2, **hparams}
    model = pixelrnn.build_model(arch, channels, levels, height, width, num_classes, **hparams).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


CASES = [(arch, channels, levels, num_classes) for arch in pixelrnn.ARCHS
         for channels, levels in ((1, 2), (3, 256)) for num_classes in (None, 3)]
FAST = ("cached", "compiled")  # the samplers that must equal the reference
# and a learned map per class (location-dependent class conditioning: a per-pixel bias in every layer)
CASES_AND_MAPS = [(*case, None) for case in CASES] + [(arch, 3, 256, 3, 2) for arch in pixelrnn.ARCHS]


@pytest.fixture
def eager_compiled(monkeypatch):
    """method="compiled" with the stacked step run eagerly: the functions torch.compile would compile, tested for
    exactness without a compilation per model (`test_torch_compile_...` compiles them)."""
    monkeypatch.setattr(pixelrnn.stacked, "compiled", pixelrnn.stacked.eager)


@pytest.mark.parametrize("stepper", [CachedStepper, functools.partial(StackedStepper, compile=False)],
                         ids=["cached", "stacked"])
@pytest.mark.parametrize("arch,channels,levels,num_classes,class_maps", CASES_AND_MAPS)
def test_cached_step_logits_equal_teacher_forced_logits(arch, channels, levels, num_classes, class_maps, stepper):
    model = make(arch, channels, levels, num_classes=num_classes, class_maps=class_maps)
    x = torch.randint(0, levels, (2, channels, 5, 6))
    y = None if num_classes is None else torch.tensor([0, 2])
    with torch.no_grad():
        full = model(x, y)  # (2, levels, C, H, W)
        stepper = stepper(model, x, y, None)
        for r in range(5):
            for j in range(6):
                for c in range(channels):
                    # only sub-pixels before (r, j, c) may be known to the stepper
                    partial = x.clone()
                    partial[:, c:, r, j] = 0
                    step = stepper.logits(partial, r, j)[:, :, c]
                    assert (step - full[:, :, c, r, j]).abs().max() < LOGIT_TOLERANCE, (r, j, c)
                    # what a draw computes: the part of the head that channel c's logits see
                    step = stepper.channel_logits(partial, r, j, c)
                    assert (step - full[:, :, c, r, j]).abs().max() < LOGIT_TOLERANCE, (r, j, c)
                stepper.logits(x, r, j)  # the finished pixel
            stepper.end_row(x, r)


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("arch,channels,levels,num_classes,class_maps", CASES_AND_MAPS)
def test_cached_and_reference_samples_are_identical(arch, channels, levels, num_classes, class_maps, method,
                                                     eager_compiled):
    model = make(arch, channels, levels, num_classes=num_classes, class_maps=class_maps)
    y = None if num_classes is None else 1
    reference = pixelrnn.sample(model, 3, y=y, seed=7, method="reference")
    cached = pixelrnn.sample(model, 3, y=y, seed=7, method=method)
    assert torch.equal(reference, cached)
    assert reference.shape == (3, channels, 5, 6) and 0 <= reference.min() and reference.max() < levels
    assert not torch.equal(cached, pixelrnn.sample(model, 3, y=y, seed=8, method=method)), "the seed must matter"


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.parametrize("arch,channels,levels,num_classes", [("row_lstm", 1, 2, None),
                                                              ("diagonal_bilstm", 1, 2, 3),
                                                              ("pixelcnn", 3, 256, 3)])
def test_torch_compile_of_the_stacked_step_draws_the_reference_samples(arch, channels, levels, num_classes):
    """The real compiled graph (fullgraph: a graph break fails), in float64: the reference's samples."""
    model = make(arch, channels, levels, 4, 5, num_classes=num_classes)
    y = None if num_classes is None else 2
    reference = pixelrnn.sample(model, 2, y=y, seed=4, method="reference")
    assert torch.equal(pixelrnn.sample(model, 2, y=y, seed=4, method="compiled"), reference)


def test_a_failed_compilation_says_why_and_what_to_do(monkeypatch):
    """Defect: every compile failure read "on the CPU it needs a C++ compiler", an inductor bug included; the
    message now names the failure and still points to the cached sampler."""
    def fail(*args):
        raise torch._dynamo.exc.BackendCompilerFailed(fail, ValueError("LoweringException: index_put\nstack"), None)

    monkeypatch.setattr(pixelrnn.stacked, "compiled", lambda kind, arch: fail)
    with pytest.raises(RuntimeError, match=r"\(ValueError: LoweringException: index_put\).*method='cached'"):
        pixelrnn.sample(make("row_lstm", 1, 2), 1, method="compiled")


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
def test_multiscale_sampling_cached_equals_reference_and_respects_the_small_image(arch, method, eager_compiled):
    model = make(arch, 3, 256, 6, 6, factor=2)
    reference = pixelrnn.sample(model, 2, seed=3, method="reference")
    cached = pixelrnn.sample(model, 2, seed=3, method=method)
    assert torch.equal(reference, cached)
    steps = list(pixelrnn.sample_steps(model, 2, seed=3, every=1, method=method))
    assert [s.stage for s in steps].count("small") == 9 and steps[-1].stage == "full"
    assert torch.equal(steps[-1].image, cached)


def test_temperature_sharpens_towards_the_mode():
    model = make("pixelcnn", 1, 2, 4, 4)
    cold = pixelrnn.sample(model, 64, temperature=0.05, seed=0)
    # at low temperature every image is (almost) the greedy one: far less diversity
    assert cold.float().var(0).mean() < pixelrnn.sample(model, 64, temperature=1.0, seed=0).float().var(0).mean()


@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
def test_completion_keeps_known_pixels(arch):
    model = make(arch, 3, 256, num_classes=3)
    image = torch.randint(0, 256, (3, 5, 6))
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[1:4, 2:5] = True
    out = pixelrnn.sample(model, 4, y=2, image=image, mask=mask, seed=0)
    assert torch.equal(out[:, :, ~mask], image[:, ~mask].expand(4, -1, -1))
    assert (out[:, :, mask] != image[:, mask]).any()
    assert torch.equal(out, pixelrnn.sample(model, 4, y=2, image=image, mask=mask, seed=0, method="reference"))


def test_full_mask_equals_unconditional_and_empty_mask_returns_input():
    model = make("diagonal_bilstm", 1, 2)
    image = torch.randint(0, 2, (1, 5, 6))
    full = pixelrnn.sample(model, 2, image=image, mask=torch.ones(5, 6, dtype=torch.bool), seed=4)
    assert torch.equal(full, pixelrnn.sample(model, 2, seed=4))
    empty = pixelrnn.sample(model, 2, image=image, mask=torch.zeros(5, 6, dtype=torch.bool), seed=4)
    assert torch.equal(empty, image.expand(2, -1, -1, -1))


def test_progress_records():
    model = make("row_lstm", 3, 256)
    steps = list(pixelrnn.sample_steps(model, 2, seed=1, every=4))
    assert len(steps) == 8  # 30 pixels: every 4th, and the final one
    assert steps[0].position == (0, 3) and steps[0].done.sum() == 4
    assert steps[0].probs.shape == (2, 256, 3)
    torch.testing.assert_close(steps[0].probs.sum(1), torch.ones(2, 3, dtype=steps[0].probs.dtype))
    assert steps[-1].done.all()


@pytest.mark.parametrize("bad", [
    {"temperature": 0}, {"temperature": -1.0}, {"temperature": float("nan")}, {"method": "magic"},
    {"y": 1}, {"image": torch.zeros(2, 5, 6, dtype=torch.long)},
    {"image": torch.zeros(1, 5, 6, dtype=torch.long), "mask": torch.ones(4, 4, dtype=torch.bool)},
    {"image": torch.full((1, 5, 6), 7), "mask": torch.ones(5, 6, dtype=torch.bool)},
    {"mask": torch.ones(5, 6, dtype=torch.bool)}, {"n": 0}, {"particles": 0},
])
def test_bad_arguments_are_clear_errors(bad):
    model = make("pixelcnn", 1, 2)
    with pytest.raises(ValueError):
        pixelrnn.sample(model, **{"n": 1, **bad})


def test_class_out_of_range_is_a_clear_error():
    model = make("pixelcnn", 1, 2, num_classes=3)
    for y in (None, 3, -1, [0, 1, 2]):
        with pytest.raises(ValueError):
            pixelrnn.sample(model, 2, y=y)


@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
def test_likelihood_maps_sum_to_log_prob(arch):
    model = make(arch, 3, 256, num_classes=3)
    image = torch.randint(0, 256, (3, 5, 6))
    maps = pixelrnn.likelihood_maps(model, image, y=1)
    log_prob = model.log_prob(image[None], torch.tensor([1]))[0]
    assert maps["nll_bits"].shape == maps["entropy_bits"].shape == (3, 5, 6)
    assert maps["probs"].shape == (256, 3, 5, 6)
    assert math.isclose(maps["nll_bits"].sum().item() * math.log(2), -log_prob.item(), rel_tol=1e-5)
    assert (maps["entropy_bits"] >= 0).all() and (maps["entropy_bits"] <= 8 + 1e-4).all()


def test_smc_completion_uses_the_context_below_the_hole():
    """Images are all-0 or all-1: the known bottom half decides the masked top half.

    Plain completion samples the top from the prior (a coin flip per image); SMC weights
    particles by the known bottom rows and recovers the matching top.
    """
    from conftest import fit

    images = torch.cat([torch.zeros(8, 1, 4, 4), torch.ones(8, 1, 4, 4)]).long()
    model = fit(pixelrnn.build_model("row_lstm", 1, 2, 4, 4, hidden=8, layers=1), images, steps=120)
    bottom_ones = torch.ones(1, 4, 4, dtype=torch.long)
    top = torch.zeros(4, 4, dtype=torch.bool)
    top[:2] = True
    plain = pixelrnn.sample(model, 32, image=bottom_ones, mask=top, seed=0)
    steps = list(pixelrnn.sample_steps(model, 32, image=bottom_ones, mask=top, seed=0, every=0, particles=16))
    smc = steps[-1].image
    assert torch.equal(smc[:, :, 2:], bottom_ones[:, 2:].expand(32, -1, -1, -1)), "known pixels changed"
    plain_right = (plain[:, 0, :2] == 1).all(-1).all(-1).float().mean()
    smc_right = (smc[:, 0, :2] == 1).all(-1).all(-1).float().mean()
    assert smc_right >= 0.95 and plain_right <= 0.75, (plain_right, smc_right)
    ess = torch.stack(steps[-1].ess)  # (rows, images)
    assert ess.shape == (4, 32) and (ess > 0).all() and (ess <= 16 + 1e-4).all()
    assert ess[2].mean() < 12, "the first known row must separate the particles"


def test_no_seed_gives_fresh_samples_and_leaves_the_global_generator_alone():
    model = make("row_lstm", 1, 2, 4, 4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    draws = [pixelrnn.sample(model, 8) for _ in range(3)]
    assert torch.equal(torch.rand(3), expected)
    assert not (torch.equal(draws[0], draws[1]) and torch.equal(draws[1], draws[2]))


def test_multiscale_completion_keeps_known_pixels():
    model = make("pixelcnn", 1, 2, 6, 6, factor=2)
    image = torch.randint(0, 2, (1, 6, 6))
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2:5, 1:5] = True
    out = pixelrnn.sample(model, 3, image=image, mask=mask, seed=2)
    assert torch.equal(out[:, :, ~mask], image[:, ~mask].expand(3, -1, -1))
    assert torch.equal(out, pixelrnn.sample(model, 3, image=image, mask=mask, seed=2, method="reference"))


def test_multiscale_likelihood_maps_are_the_open_pixels_given_the_small_image():
    model = make("row_lstm", 1, 2, 6, 6, factor=2)
    image = torch.randint(0, 2, (1, 6, 6))
    maps = pixelrnn.likelihood_maps(model, image)
    x = image[None]
    small = model.downsample(x)
    open_given_small = model.large.log_prob(x, None, model.condition(small), model.open_pixels(6, 6))[0]
    assert math.isclose(maps["nll_bits"].sum().item() * math.log(2), -open_given_small.item(), rel_tol=1e-6)
    assert math.isclose(maps["nll_bits"].sum().item() * math.log(2),
                        -(model.log_prob(x) - model.small.log_prob(small)).item(), rel_tol=1e-5)
    fixed = ~model.open_pixels(6, 6)
    assert (maps["entropy_bits"][:, fixed] == 0).all() and (maps["nll_bits"][:, fixed] == 0).all()
    assert (maps["entropy_bits"][:, ~fixed] > 0).all()
    assert torch.equal(maps["probs"][:, :, fixed].argmax(0), image[:, fixed])  # one-hot at the known value
    assert torch.allclose(maps["probs"].sum(0), torch.ones(1, 6, 6))


@pytest.mark.parametrize("levels", [2, 256])
def test_maps_are_in_bits_a_uniform_prediction_has_log2_levels(levels):
    """A model whose output layer is zero predicts the uniform distribution: every sub-pixel's entropy and surprise
    are exactly log2(levels) bits (in nats they would be ln(levels))."""
    model = make("row_lstm", 3, levels)
    with torch.no_grad():
        model.head[1].weight.zero_()
        model.head[1].bias.zero_()
    maps = pixelrnn.likelihood_maps(model, torch.randint(0, levels, (3, 5, 6)))
    expected = torch.full((3, 5, 6), math.log2(levels), dtype=maps["entropy_bits"].dtype)
    torch.testing.assert_close(maps["entropy_bits"], expected)
    torch.testing.assert_close(maps["nll_bits"], expected)


def test_known_pixels_are_final_from_the_first_step():
    """Step.done marks the pixels that are final: a completion's known pixels, and once a Multi-Scale model's
    full-size stage starts, the pixels its small image fixed (the Generate tab painted those grey)."""
    model = make("row_lstm", 1, 2, 4, 6, factor=2)
    steps = list(pixelrnn.sample_steps(model, 1, seed=0, every=1))
    first_full = next(s for s in steps if s.stage == "full")
    fixed = ~model.open_pixels(4, 6)
    assert first_full.done[fixed].all() and first_full.done.sum() == fixed.sum()  # its first pixel is a fixed one
    image, mask = torch.zeros(1, 4, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.bool)
    mask[2:] = True
    first = next(iter(pixelrnn.sample_steps(make("pixelcnn", 1, 2, 4, 6), 1, image=image, mask=mask, every=1)))
    assert first.done[:2].all() and first.done.sum() == 12  # rows 0-1 known; the first step visits (0, 0), known


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("arch,channels,levels,num_classes", [*CASES[::2], ("multiscale", 3, 256, 3)])
def test_a_batched_run_gives_each_request_what_it_gets_alone(arch, channels, levels, num_classes, method,
                                                             eager_compiled):
    """Requests sharing one run (a server's batching) keep their own seed, class and temperature: in float64 each
    one's images equal its solo samples, whatever shares its run and in what order."""
    model = (make("row_lstm", channels, levels, 6, 6, num_classes, factor=2) if arch == "multiscale"
             else make(arch, channels, levels, num_classes=num_classes))
    y = (lambda k: None) if num_classes is None else (lambda k: k % num_classes)
    requests = [pixelrnn.SampleRequest(n=2, y=y(0), temperature=1.0, seed=11),
                pixelrnn.SampleRequest(n=1, y=y(1), temperature=0.6, seed=12),
                pixelrnn.SampleRequest(n=3, y=y(2), temperature=1.7, seed=13)]
    for order in (requests, requests[::-1]):
        steps = list(pixelrnn.sample_batch_steps(model, order, method))
        assert len(steps) == (45 if arch == "multiscale" else 30)  # every pixel of each stage
        images = steps[-1].image.split([r.n for r in order])
        for request, images_of_request in zip(order, images, strict=True):
            alone = pixelrnn.sample(model, request.n, y=request.y, temperature=request.temperature, seed=request.seed)
            assert torch.equal(images_of_request, alone), request
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        list(pixelrnn.sample_batch_steps(model, [requests[0], pixelrnn.SampleRequest(temperature=0)]))


@pytest.mark.parametrize("particles", [1, 3])
def test_each_step_of_sample_steps_is_a_snapshot_while_a_batched_run_hands_out_its_live_images(particles):
    """The sampler's loop writes one image tensor in place: `sample_steps` copies it into every Step (a consumer
    that keeps steps sees each as it was), `sample_batch_steps` hands the tensor itself (a server keeps only the
    latest; a copy per pixel cost the demo time)."""
    model = make("row_lstm", 3, 256)
    steps = list(pixelrnn.sample_steps(model, 2, seed=0, particles=particles))
    for step in steps[:-1]:
        assert (step.image[:, :, ~step.done] == 0).all()  # not reached yet: still the zeros it started from
    assert (steps[-1].image != 0).any()
    batched = list(pixelrnn.sample_batch_steps(model, [pixelrnn.SampleRequest(2, seed=0)]))
    assert all(step.image is batched[-1].image for step in batched)
    assert torch.equal(batched[-1].image, pixelrnn.sample(model, 2, seed=0))


def test_what_sample_and_sample_steps_return_is_an_ordinary_tensor_a_caller_can_write():
    """The sampler runs in inference mode, whose tensors refuse in-place writes outside it: what it hands to a
    caller must be a normal copy."""
    model = make("row_lstm", 1, 2)
    image = pixelrnn.sample(model, 2, seed=0)
    image[0, 0, 0, 0] = 1 - image[0, 0, 0, 0]
    step = next(pixelrnn.sample_steps(model, 2, seed=0, particles=2))
    step.image.zero_(), step.probs.zero_(), step.known.fill_(True)
    assert not any(t.is_inference() for t in (image, step.image, step.probs, step.known, step.done))


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
def test_smc_completion_cached_equals_reference(arch, method, eager_compiled):
    """SMC resamples the particles after the known rows: every cached state (tensors and per-column lists) must
    follow its particle."""
    model = make(arch, 3, 256, 6, 6, num_classes=3)
    image = torch.randint(0, 256, (3, 6, 6))
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[1:3] = mask[4] = True  # known rows between the holes weigh and resample the particles
    kwargs = {"y": 1, "image": image, "mask": mask, "seed": 5, "particles": 4, "every": 0}
    cached, reference = (list(pixelrnn.sample_steps(model, 2, method=m, **kwargs))[-1] for m in (method, "reference"))
    assert (torch.stack(cached.ess)[:-1] < 2).any(), "some row must have been resampled before the last"
    assert torch.equal(cached.image, reference.image)
