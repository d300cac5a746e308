"""Guessing the input: the model's declared size, else the first common size its forward accepts."""

import pytest
import torch
import torchvision
from torch import nn

from nascli.errors import UserInputError
from nascli.space.dummy_input import guess_dummy_input


class _Speech(nn.Module):
    """A 1-d model whose first kernel is longer than 224 samples."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 32, 400, stride=160)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.conv(x).mean(-1))


def test_a_vit_built_for_small_images_gets_its_own_size():
    (x,) = guess_dummy_input(torchvision.models.vit_b_16(image_size=32))
    assert x.shape == (1, 3, 32, 32)


def test_a_signal_model_gets_a_second_of_audio():
    (x,) = guess_dummy_input(_Speech())
    assert x.shape == (1, 1, 16000)


@pytest.mark.slow
def test_inception_gets_the_size_its_auxiliary_head_needs():
    (x,) = guess_dummy_input(torchvision.models.inception_v3(init_weights=False))
    assert x.shape == (1, 3, 299, 299)


def test_no_size_that_runs_is_one_clear_error():
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            if x.shape[-1] != 100:
                raise ValueError("needs 100 pixels")
            return self.conv(x)

    with pytest.raises(UserInputError, match=r"tried \(1, 3, 224, 224\), \(1, 3, 299, 299\).*pass dummy_input"):
        guess_dummy_input(Fixed())


def test_a_hugging_face_text_model_gets_token_ids():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    (x,) = guess_dummy_input(transformers.LlamaForCausalLM(config))
    assert x.shape == (1, 16) and x.dtype == torch.long
