"""The offline segmentation model starts from the same weights in every process."""

import torch

from diartune.trial.finetune import new_segmentation_model


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    return new_segmentation_model(seed).state_dict()


def test_a_new_model_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    first, again, other = weights(), weights(), weights(seed=1)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_making_a_model_leaves_torch_global_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    new_segmentation_model()
    assert torch.equal(torch.rand(4), expected)
