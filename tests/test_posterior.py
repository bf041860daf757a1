"""Completion against its exact target, by enumerating every image of a tiny model.

Plain completion draws each unknown pixel given the pixels before it: its distribution is the product of the
unknown pixels' conditionals. SMC (context-aware) completion targets the posterior p_T(unknown | known) of the
tempered model p_T (every conditional softmax(logits / T)). Both are computed here exactly, over all
completions, and compared with many independent draws in total variation. Each test first checks that the two
targets differ by far more than the bound, so a sampler that hits the wrong one fails.
"""

import itertools

import pytest
import torch
from conftest import fit

import pixelrnn
from pixelrnn.model import MultiScalePixelRNN
from pixelrnn.sampling import tempered_log_probs

DRAWS = 5_000  # independent completions per case
PARTICLES = 48  # SMC's bias falls like 1 / particles
BOUND = 0.05  # total variation allowed; sampling noise alone is about 0.5 sqrt(outcomes / DRAWS) <= 0.03


def tiny(arch: str, height: int, width: int, factor: int | None, std: float) -> pixelrnn.Model:
    extra = {} if factor is None else {"factor": factor, "cond_channels": 4}
    model = pixelrnn.build_model(arch, 1, 2, height, width, hidden=4, layers=2, out_hidden=8, **extra).double()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)  # strong dependencies between pixels: posterior and plain targets differ
    return model.eval()


def per_subpixel_log_probs(model: pixelrnn.Model, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p_T of every sub-pixel of every image x (K, C, H, W) given its past -> (K, C, H, W); for a
    Multi-Scale model: the small model's terms at the pixels the small image fixes, the large model's elsewhere."""
    with torch.no_grad():
        if isinstance(model, MultiScalePixelRNN):
            small_logits, large_logits = model(x)
            f = model.factor
            small = tempered_log_probs(small_logits, temperature).gather(1, model.downsample(x)[:, None])[:, 0]
            terms = tempered_log_probs(large_logits, temperature).gather(1, x[:, None])[:, 0]
            terms[..., ::f, ::f] = small
            return terms.double()
        return tempered_log_probs(model(x), temperature).gather(1, x[:, None])[:, 0].double()


def exact_targets(model, image: torch.Tensor, mask: torch.Tensor, temperature: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (every completion (K, C, H, W), plain completion's probabilities (K,), posterior (K,))."""
    unknown = mask.nonzero().tolist()
    completions = image.expand(2 ** len(unknown), -1, -1, -1).clone()
    for k, values in enumerate(itertools.product((0, 1), repeat=len(unknown))):
        for (r, j), v in zip(unknown, values):
            completions[k, 0, r, j] = v
    terms = per_subpixel_log_probs(model, completions, temperature)  # (K, 1, H, W)
    plain = (terms * mask).flatten(1).sum(1).exp()  # the unknown pixels' conditionals: sums to 1 already
    posterior = torch.softmax(terms.flatten(1).sum(1), 0)  # the joint, renormalised over the completions
    return completions, plain, posterior


def empirical(samples: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    """Frequencies of each completion among samples (N, C, H, W)."""
    index = {tuple(c.flatten().tolist()): k for k, c in enumerate(completions)}
    counts = torch.zeros(len(completions), dtype=torch.float64)
    for s in samples:
        counts[index[tuple(s.flatten().tolist())]] += 1
    return counts / len(samples)


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


# arch, height, width, factor, weights' std (strong dependencies, yet a posterior that 48 particles can reach),
# mask (True = to fill: known pixels after unknown ones carry information back to them)
CASES = {
    "row_lstm": ("row_lstm", 3, 3, None, 0.6, [[1, 1, 0], [1, 0, 1], [0, 1, 0]]),
    "pixelcnn": ("pixelcnn", 3, 3, None, 0.6, [[1, 1, 0], [0, 1, 1], [1, 0, 0]]),
    "diagonal_bilstm": ("diagonal_bilstm", 3, 3, None, 0.3, [[1, 0, 1], [1, 1, 0], [0, 0, 1]]),
    "multiscale": ("row_lstm", 2, 4, 2, 0.6, [[0, 1, 1, 1], [1, 0, 1, 0]]),  # (0, 2) is the small image's
}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_and_smc_completion_match_their_exact_targets(case, temperature):
    arch, height, width, factor, std, mask_rows = CASES[case]
    model = tiny(arch, height, width, factor, std)
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    image = torch.zeros(1, height, width, dtype=torch.long)
    image[0, ~mask] = torch.tensor([1, 0, 1, 1, 0])[: int((~mask).sum())]
    completions, plain, posterior = exact_targets(model, image, mask, temperature)
    assert tv(plain, posterior) > 2 * BOUND  # the test can tell the two targets apart

    drawn = pixelrnn.sample(model, DRAWS, image=image, mask=mask, temperature=temperature, seed=1)
    assert tv(empirical(drawn, completions), plain) < BOUND

    smc = pixelrnn.sample(model, DRAWS, image=image, mask=mask, temperature=temperature, seed=2,
                          particles=PARTICLES)
    assert tv(empirical(smc, completions), posterior) < BOUND


def test_tempered_smc_weighs_with_the_tempered_conditionals():
    """At T != 1 the SMC target is p_T(unknown | known); weighing with untempered probabilities (the old code)
    targets neither it nor anything named: the two posteriors must differ for this test to have power."""
    arch, height, width, factor, std, mask_rows = CASES["diagonal_bilstm"]
    model = tiny(arch, height, width, factor, std)
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    image = torch.zeros(1, height, width, dtype=torch.long)
    image[0, ~mask] = torch.tensor([1, 0, 1, 1])
    completions, _, tempered = exact_targets(model, image, mask, 2.0)
    terms_1 = per_subpixel_log_probs(model, completions, 1.0)
    terms_t = per_subpixel_log_probs(model, completions, 2.0)
    mixed = torch.softmax(((terms_t * mask) + (terms_1 * ~mask)).flatten(1).sum(1), 0)  # proposal T, weights 1
    assert tv(mixed, tempered) > 2 * BOUND
    smc = pixelrnn.sample(model, DRAWS, image=image, mask=mask, temperature=2.0, seed=3, particles=PARTICLES)
    assert tv(empirical(smc, completions), tempered) < BOUND


def test_smc_weights_restart_after_a_resampling_mid_image():
    """A model trained so that pixel (0, 1) copies (0, 0) 90% of the time and (0, 0) is mostly 1: the known (0, 1)
    = 0 makes the weights so uneven after row 0 that the particles are resampled there. Resampled particles
    start again with equal weights: row 1's known pixels (random in the training data) say little, so the
    effective sample size after row 1 is high again; weights kept across the resampling would leave it low."""
    torch.manual_seed(0)
    first = (torch.rand(2000) < 0.85).long()
    images = torch.randint(0, 2, (2000, 1, 3, 3))
    images[:, 0, 0, 0] = first
    images[:, 0, 0, 1] = torch.where(torch.rand(2000) < 0.9, first, 1 - first)
    model = fit(pixelrnn.build_model("row_lstm", 1, 2, 3, 3, hidden=4, layers=1, out_hidden=8), images, steps=300)
    mask = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    image = torch.zeros(1, 3, 3, dtype=torch.long)
    image[0, 2, 0] = image[0, 1, 2] = 1
    completions, plain, posterior = exact_targets(model.double(), image, mask, 1.0)
    assert tv(plain, posterior) > 2 * BOUND
    *_, last = pixelrnn.sample_steps(model, DRAWS, image=image, mask=mask, seed=4, particles=PARTICLES, every=0)
    assert (last.ess[0] < PARTICLES / 2).float().mean() > 0.9  # resampled after row 0 in (almost) every group
    assert last.ess[1].mean() > 0.8 * PARTICLES
    assert tv(empirical(last.image, completions), posterior) < BOUND


def test_class_posterior_is_bayes_over_the_pixels_before_the_region():
    """Auto class: p(y | the known pixels before the region), the prefix's marginal over every possible rest of the
    image, summed here by enumeration."""
    model = pixelrnn.build_model("row_lstm", 1, 2, 2, 3, num_classes=3, hidden=4, layers=2, out_hidden=8).double()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.4)
    model.eval()
    image = torch.tensor([[[1, 0, 1], [0, 1, 1]]])
    mask = torch.tensor([[0, 0, 1], [1, 0, 1]], dtype=torch.bool)  # the region starts at (0, 2): prefix (0, 0), (0, 1)
    posterior, known = pixelrnn.class_posterior(model, image, mask)
    everything = torch.tensor(list(itertools.product((0, 1), repeat=6))).view(-1, 1, 2, 3)
    with_prefix = everything[(everything[:, 0, 0, :2] == image[0, 0, :2]).all(1)]
    with torch.no_grad():
        joint = torch.stack([model.log_prob(with_prefix, torch.full((len(with_prefix),), y)) for y in range(3)])
    exact = torch.softmax(joint.logsumexp(1), 0)
    assert known == 2 and float(posterior.max()) < 0.9 and float(posterior.max() - posterior.min()) > 0.05  # uncertain
    torch.testing.assert_close(posterior, exact.double())
