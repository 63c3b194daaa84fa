"""CVQ-VAE (cvq): re-anchoring of unused codes and the contrastive term, by the official formulas."""

import pytest
import torch
import torch.nn.functional as F

from simvq import build_quantizer
from simvq.quantizers import CVQ


def build(name, dim=8, codebook_size=32, **options):
    return build_quantizer(name, dim=dim, codebook_size=codebook_size, seed=0, **options)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="distance"):
        CVQ(8, 16, distance="manhattan")
    with pytest.raises(ValueError, match="anchor"):
        CVQ(8, 16, anchor="nowhere")
    with pytest.raises(ValueError, match="usage_decay"):
        CVQ(8, 16, usage_decay=0.0)


def test_cvq_reanchors_unused_codes_by_the_official_rule():
    quantizer = CVQ(3, 4, seed=0)
    with torch.no_grad():
        quantizer.embedding.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -0.2, 0.0], [0.0, 0.0, -1.0]]))
    before = quantizer.embedding.clone()
    generator = torch.Generator().manual_seed(0)
    # features only near the +x and +y codes (+ a positive z offset): codes 2 and 3 go unused
    x = torch.cat([torch.tensor([[2.0, 0.1, 0.3]]), torch.tensor([[0.1, 2.0, 0.3]])]).repeat(5, 1)
    x = x + 0.05 * torch.randn(10, 3, generator=generator)
    out = quantizer(x)
    cosine = F.normalize(x, dim=1) @ F.normalize(before, dim=1).T
    assert torch.equal(out.codes, cosine.argmax(1))
    share = torch.bincount(out.codes, minlength=4).double() / 10
    assert share[2] == 0 and share[3] == 0
    usage = 0.01 * share
    torch.testing.assert_close(quantizer.usage.double(), usage)
    alpha = torch.exp(-(usage * 4 * 10) / 0.01 - 1e-3)
    anchors = x[cosine.argmax(0)]  # the feature closest (in cosine) to each code
    expected = before * (1 - alpha[:, None].float()) + anchors * alpha[:, None].float()
    torch.testing.assert_close(quantizer.embedding.detach(), expected)
    # unused codes moved (almost entirely) onto features, used ones stayed put
    assert cosine.max(0).values[2:].max() < 0.5
    moved = F.normalize(x, dim=1) @ F.normalize(quantizer.embedding.detach(), dim=1).T
    assert moved.max(0).values[2:].min() > 0.99
    torch.testing.assert_close(quantizer.embedding[:2].detach(), before[:2], rtol=0, atol=1e-6)


def test_cvq_contrastive_term_matches_the_official_formula():
    quantizer = build("cvq", codebook_size=8, contrastive=True)
    z = torch.randn(40, 8)
    similarity = F.normalize(z, dim=1) @ F.normalize(quantizer.embedding, dim=1).T
    ordered, _ = similarity.sort(dim=0)  # as the official code: ascending along the tokens
    positive = ordered[-max(1, 40 // 8) :].mean(0, keepdim=True)
    negative = ordered[: 40 // 2]
    logits = torch.cat([positive, negative]).T / 0.07
    expected = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    out = quantizer(z)
    torch.testing.assert_close(out.losses["contrastive"], expected)
    out.losses["contrastive"].backward()
    assert quantizer.embedding.grad.abs().sum() > 0
