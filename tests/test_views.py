"""The receptive field that the demo shows is the model's exact dependency set (the causality tests' sets); the
"how it computes" panels are the layers' own states, in an order the layers can run in."""

import pytest
import torch
from test_causality import dependencies, index, make

from pixelrnn import ARCHS
from pixelrnn.model import scale_pixels
from pixelrnn.nn import shift_down, skew
from pixelrnn.views import computation, layer_calls, layer_fields, pixel_fields, receptive_field, receptive_fields

CASES = [(arch, channels, levels) for arch in ("pixelcnn", "row_lstm", "diagonal_bilstm")
         for channels, levels in ((1, 2), (3, 256))]


@pytest.mark.parametrize("arch,channels,levels", CASES)
def test_receptive_field_equals_the_exact_dependency_set(arch, channels, levels):
    height, width = 5, 6
    model = make(arch, channels, levels, height, width)
    deps = dependencies(model, channels, height, width, levels)  # [k_out, k_in] by perturbing each sub-pixel
    for r, j, c in ((0, 0, 0), (2, 3, channels - 1), (4, 5, 0), (3, 1, channels // 2)):
        field = receptive_field(model, r, j, c)  # (C, H, W)
        expected = deps[index(channels, width, r, j, c)].view(height, width, channels).permute(2, 0, 1)
        assert torch.equal(field, expected), (r, j, c)


@pytest.mark.parametrize("arch,channels,levels", CASES)
def test_every_sub_pixels_field_at_once_equals_its_own_measurement(arch, channels, levels):
    """The batched measurement (one pass for many positions, as the demo's overlay uses) gives each position
    exactly the field it gets alone (no batch element leaks into another), which holds every dependency that
    perturbing the input finds (with 8 random inputs; 3 can miss a link through a saturated unit) and nothing
    outside the past."""
    height, width = 4, 5
    model = make(arch, channels, levels, height, width)
    deps = dependencies(model, channels, height, width, levels)
    deps = deps.view(height, width, channels, height, width, channels)  # [out sub-pixel, in sub-pixel]
    positions = [(r, j, c) for r in range(height) for j in range(width) for c in range(channels)]
    fields = receptive_fields(model, positions, trials=8)  # (P, C, H, W)
    for (r, j, c), field in zip(positions, fields, strict=True):
        assert torch.equal(field, receptive_field(model, r, j, c, trials=8)), (r, j, c)
        found = deps[r, j, c].permute(2, 0, 1)
        past = torch.zeros(channels, height, width, dtype=torch.bool).flatten()
        past[: (r * width + j) * channels] = True
        past = past.view(height, width, channels).permute(2, 0, 1).clone()
        past[:c, r, j] = True  # the current pixel's earlier channels
        assert not (found & ~field).any() and not (field & ~past).any(), (r, j, c)
    assert torch.equal(pixel_fields(model, channel=channels - 1, batch=7), fields[channels - 1 :: channels].any(1)
                       .view(height, width, height, width))


def test_the_architectures_see_what_the_paper_says():
    """Row LSTM: a triangle above (Fig. 2), not the far corners; Diagonal BiLSTM: the whole past but one pixel;
    PixelCNN: a bounded window with a blind spot to the upper right (Fig. 2)."""
    height, width, r, j = 12, 40, 10, 20
    row_lstm = receptive_field(make("row_lstm", 1, 2, height, width, layers=1), r, j)[0]
    diagonal = receptive_field(make("diagonal_bilstm", 1, 2, height, width, layers=1), r, j)[0]
    pixelcnn = receptive_field(make("pixelcnn", 1, 2, height, width, layers=3), r, j)[0]
    past = torch.zeros(height, width, dtype=torch.bool)
    past[:r] = True
    past[r, :j] = True
    # everything before the pixel but one: the last pixel of the row above. Mask A keeps a pixel out of its own
    # input features, so (r-1, W-1) enters only features of row r at columns >= W-4 (future for (r, j < W-4)) and
    # of row r-1 beyond the image; the right-to-left stream, shifted down a row, never carries it (Sec. 3.2 as built)
    expected = past.clone()
    expected[r - 1, width - 1] = False
    assert torch.equal(diagonal, expected)
    assert (row_lstm & ~past).sum() == 0 and row_lstm[0, j] and not row_lstm[0, 0] and not row_lstm[0, width - 1]
    assert row_lstm[0].sum() > row_lstm[r - 1].sum()  # wider the further up: a triangle
    assert pixelcnn[r - 1, j] and not pixelcnn[0].any()  # bounded
    assert pixelcnn[r - 4, j + 6] and not pixelcnn[r - 1, j + 6]  # the blind spot: upper right, near rows
    with pytest.raises(ValueError, match="outside"):
        receptive_field(make("pixelcnn", 1, 2, height, width), height, 0)


def test_influence_is_zero_outside_the_receptive_field_and_follows_the_context():
    from pixelrnn.views import influence

    height, width = 6, 7
    for arch in ("pixelcnn", "row_lstm", "diagonal_bilstm"):
        model = make(arch, 1, 2, height, width)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.4)  # predictions away from 0 and 1, so that the gradient is far from underflow
        image = torch.randint(0, 2, (1, height, width))
        strength = influence(model, image, 4, 3)
        assert strength.shape == (height, width) and (strength > 0).any()
        field = receptive_field(model, 4, 3)[0]
        assert not strength[~field].any()  # nothing outside what the prediction can see
        # it is the size of the gradient of log p(true value): a finite difference at the strongest pixel agrees
        r, j = divmod(int(strength.argmax()), width)
        inputs = image[None].double() * 2 - 1  # levels 0/1 -> [-1, 1]

        nudged = inputs.clone()
        nudged[0, 0, r, j] += 1e-6
        with torch.no_grad():
            log_p = [torch.log_softmax(model.forward_scaled(x)[0, :, 0, 4, 3], 0)[image[0, 4, 3]].item()
                     for x in (inputs, nudged)]
        assert abs(abs(log_p[1] - log_p[0]) / 1e-6 - strength[r, j].item()) < 1e-4 * strength[r, j].item()


def layer_call(model, image, k):
    """Layer k's (input features, bias) and output in a teacher-forced pass on `image` (C, H, W)."""
    inputs = scale_pixels(image[None], model.levels, torch.float64)  # `make`'s models are float64
    return layer_calls(model, inputs)[k]


@pytest.mark.parametrize("arch", ARCHS)
def test_computation_shows_the_layers_own_states(arch):
    model = make(arch, 3, 16, 5, 6, layers=2).eval()
    image = torch.randint(0, 16, (3, 5, 6))
    panels = computation(model, image)
    assert [p.layer for p in panels] == ([0, 0, 0, 1, 1, 1] if arch == "diagonal_bilstm" else [0, 1])
    for k, layer in enumerate(model.layers):
        args, output = layer_call(model, image, k)
        shown = [p for p in panels if p.layer == k]
        with torch.no_grad():
            if arch == "diagonal_bilstm":  # the two directions, which the layer adds (the second shifted down)
                forward, reverse = layer.streams(*args)
                torch.testing.assert_close(forward + shift_down(reverse), output)
                expected = [forward[0].norm(dim=0), reverse[0].norm(dim=0), skew(forward[0].norm(dim=0))]
            else:
                expected = [output[0].norm(dim=0)]
        for panel, values in zip(shown, expected, strict=True):
            torch.testing.assert_close(panel.values, values.float())  # the panels come from a float32 pass


@pytest.mark.parametrize("arch", ["row_lstm", "diagonal_bilstm"])
def test_computation_steps_are_an_order_the_layer_can_run_in(arch):
    """Each state a panel shows at step s is computed from the layer's input at the positions of steps <= s only:
    changing the input at every later position leaves it as it is (and changes some later state). A wrong order
    (rows for a diagonal sweep, or the right-to-left sweep numbered like the left-to-right one) fails."""
    height, width = 5, 6
    model = make(arch, 1, 2, height, width, layers=1).eval()
    image = torch.randint(0, 2, (1, height, width))
    panels = [p for p in computation(model, image) if p.values.shape == (height, width)]
    (features, bias), _ = layer_call(model, image, 0)
    layer = model.layers[0]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        states = layer.streams(features, bias) if arch == "diagonal_bilstm" else (layer(features, bias),)
        for panel, state in zip(panels, states, strict=True):
            for step in range(int(panel.step.max())):
                later = panel.step > step
                changed = features + later * torch.randn(features.shape, generator=generator)
                new = layer.streams(changed, bias) if arch == "diagonal_bilstm" else (layer(changed, bias),)
                moved = (new[panels.index(panel)] - state).abs().amax(1)[0] > 1e-6  # (H, W)
                assert not moved[~later].any(), (panel.title, step)
                assert moved[later].any(), (panel.title, step)


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_fields_grow_into_the_receptive_field(arch):
    """The pixels a position's state reads after each layer: only earlier pixels (grey), never fewer after a
    later layer (the residual stream keeps what it read), and after the last layer the prediction's receptive
    field (a Diagonal BiLSTM's left-to-right state: part of it); a PixelCNN's grows layer by layer. A Diagonal
    BiLSTM's right-to-left state reads its own pixel and the rest of its row, which its left-to-right one never
    does (so the layer adds it one row lower)."""
    model = make(arch, 1, 2, 12, 12, layers=3)
    fields = layer_fields(model, 9, 6)  # per layer (S, H, W)
    assert [f.shape[0] for f in fields] == [2 if arch == "diagonal_bilstm" else 1] * 3
    main = torch.stack([f[0] for f in fields])  # (L, H, W): the output, or the left-to-right state
    past = torch.zeros(12 * 12, dtype=torch.bool)
    past[: 9 * 12 + 6] = True
    assert not (main & ~past.view(12, 12)).any()
    assert all((main[k] <= main[k + 1]).all() for k in range(2))
    field = receptive_field(model, 9, 6)[0]
    assert torch.equal(main[-1], field) if arch != "diagonal_bilstm" else (main[-1] <= field).all()
    if arch == "pixelcnn":
        assert main[0].sum() < main[1].sum() < main[2].sum()
    if arch == "diagonal_bilstm":
        reverse = fields[0][1]
        assert reverse[9, 6:11].all() and not main[0][9, 6:].any()
