"""A usage count over a large split resumes where it was killed: the partial counts it saved are
picked up for the same weights only, and the result equals an uninterrupted count."""

import pytest
import torch

from helpers import tiny_image_config
from simvq.metrics.image import code_histogram
from simvq.runs import build_image_model


class Images(torch.utils.data.Dataset):
    """Random 28x28 images; ``fail_at``: the index whose read is interrupted, like a killed process."""

    def __init__(self, n: int, fail_at: int | None = None):
        self.images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        self.fail_at, self.reads = fail_at, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyboardInterrupt
        self.reads += 1
        return self.images[i]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return build_image_model(tiny_image_config(tmp_path_factory.mktemp("hist"), "quantizer.codebook_size=64"))


def test_a_killed_count_resumes_from_its_partial_file_and_matches_a_whole_count(model, tmp_path):
    whole = code_histogram(model, Images(40), batch_size=4, progress=False)
    partial = tmp_path / "counts.partial.safetensors"
    with pytest.raises(KeyboardInterrupt):  # killed while reading image 27: batches 1-6 were counted, 1-6 saved
        code_histogram(model, Images(40, fail_at=27), batch_size=4, progress=False, resume=partial, fingerprint="w1", save_every=3)
    assert partial.is_file()
    again = Images(40)
    assert torch.equal(code_histogram(model, again, batch_size=4, progress=False, resume=partial, fingerprint="w1", save_every=3), whole)
    assert again.reads == 40 - 6 * 4 and not partial.exists()  # only the 4 batches left were read; the partial file is gone


def test_a_partial_file_of_other_weights_is_ignored(model, tmp_path):
    whole = code_histogram(model, Images(40), batch_size=4, progress=False)
    partial = tmp_path / "counts.partial.safetensors"
    with pytest.raises(KeyboardInterrupt):
        code_histogram(model, Images(40, fail_at=27), batch_size=4, progress=False, resume=partial, fingerprint="old weights", save_every=3)
    again = Images(40)
    assert torch.equal(code_histogram(model, again, batch_size=4, progress=False, resume=partial, fingerprint="new weights"), whole)
    assert again.reads == 40  # counted from the first image


def test_a_read_only_place_for_the_partial_file_only_warns(model, tmp_path):
    whole = code_histogram(model, Images(40), batch_size=4, progress=False)
    (tmp_path / "a file").write_text("x")
    missing = tmp_path / "a file" / "counts.partial.safetensors"  # unwritable, even for root
    with pytest.warns(UserWarning, match="will not resume"):
        counted = code_histogram(model, Images(40), batch_size=4, progress=False, resume=missing, save_every=2)
    assert torch.equal(counted, whole)
