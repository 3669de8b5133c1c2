"""The one step function: nested batches, named loss terms, accumulation, clipping, eval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellbench.engine.step import TrainStep, eval_step, first_tensor, loss_terms, to_device


class TwoHeads(nn.Module):
    """A model of the nuclei decoder's shape: mapping in (keyword arguments), mapping out."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(3, 2)

    def forward(self, tokens, image):
        return {"np": self.a(tokens), "hv": self.b(image)}


def two_term_loss(outputs, targets):
    np_term = nn.functional.cross_entropy(outputs["np"], targets["np"])
    hv_term = nn.functional.mse_loss(outputs["hv"], targets["hv"])
    return {"loss": np_term + 2 * hv_term, "np": np_term, "hv": hv_term}


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {"tokens": torch.randn(n, 4, generator=g), "image": torch.randn(n, 3, generator=g)}
    targets = {"np": torch.randint(0, 2, (n,), generator=g), "hv": torch.randn(n, 2, generator=g)}
    return inputs, targets


def make_step(model, accumulate=1, clip=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainStep(
        model, two_term_loss, optimizer, torch.device("cpu"), accumulate=accumulate, grad_clip=clip
    )


def test_to_device_moves_nested_mappings_and_tuples_and_keeps_other_values():
    moved = to_device({"a": (torch.ones(1), [torch.zeros(2)]), "name": "x"}, torch.device("cpu"))
    assert isinstance(moved["a"], tuple) and isinstance(moved["a"][1], list)
    assert moved["name"] == "x" and torch.equal(moved["a"][1][0], torch.zeros(2))
    assert first_tensor({"tokens": torch.zeros(3), "image": torch.ones(5)}).shape == (5,)


def test_a_criterion_without_a_total_is_refused():
    with pytest.raises(ValueError, match="'loss'"):
        loss_terms({"np": torch.tensor(1.0)})


def test_mapping_batches_train_and_report_every_named_term():
    torch.manual_seed(0)
    model = TwoHeads()
    step = make_step(model)
    inputs, targets = step.prepare(*batch())
    first = step(inputs, targets)
    assert set(first.terms) == {"loss", "np", "hv"} and first.size == 8 and first.stepped
    assert float(first.loss) == pytest.approx(float(first.terms["np"] + 2 * first.terms["hv"]))
    for _ in range(30):
        last = step(inputs, targets)
    assert float(last.loss) < 0.5 * float(first.loss)  # the optimizer stepped on the total


def test_accumulation_over_two_halves_equals_one_step_on_the_whole_batch():
    torch.manual_seed(0)
    whole = TwoHeads()
    halves = TwoHeads()
    halves.load_state_dict(whole.state_dict())
    inputs, targets = batch(8)
    make_step(whole)(inputs, targets)

    step = make_step(halves, accumulate=2)
    first = step({k: v[:4] for k, v in inputs.items()}, {k: v[:4] for k, v in targets.items()})
    assert not first.stepped  # waits for the second micro-batch
    second = step({k: v[4:] for k, v in inputs.items()}, {k: v[4:] for k, v in targets.items()})
    assert second.stepped
    for p, q in zip(whole.parameters(), halves.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_last_closes_an_accumulation_window_early():
    step = make_step(TwoHeads(), accumulate=4)
    assert step(*batch(), last=True).stepped


def test_clipping_returns_the_gradient_norm_without_a_scaler():
    result = make_step(TwoHeads(), clip=1e-3)(*batch())
    assert result.grad_norm is not None and float(result.grad_norm) > 1e-3


def test_eval_step_gives_float32_outputs_and_terms_without_gradients():
    model = TwoHeads().to(torch.bfloat16)
    inputs, targets = batch()
    inputs = {k: v.to(torch.bfloat16) for k, v in inputs.items()}
    with torch.no_grad():
        outputs, terms = eval_step(model, two_term_loss, inputs, targets)
    assert outputs["np"].dtype == torch.float32
    assert set(terms) == {"loss", "np", "hv"} and not terms["loss"].requires_grad
