import math

import pytest
import torch

from simvq.metrics import CodebookUsage


def test_codebook_usage_accumulates_against_hand_computation():
    meter = CodebookUsage(8)
    meter.update(torch.tensor([0, 0, 1]))
    meter.update(torch.tensor([[1, 2], [2, 2]]))
    assert meter.histogram().tolist() == [2, 2, 3, 0, 0, 0, 0, 0]
    assert meter.usage() == pytest.approx(3 / 8)
    assert meter.dead_fraction() == pytest.approx(5 / 8)
    probs = torch.tensor([2, 2, 3]) / 7
    assert meter.perplexity() == pytest.approx(torch.exp(-(probs * probs.log()).sum()).item(), rel=1e-6)
    stats = meter.compute()
    assert stats["tokens"] == 7 and stats["usage"] == pytest.approx(3 / 8)
    meter.reset()
    assert meter.total() == 0


def test_codebook_usage_uniform_perplexity_is_k():
    meter = CodebookUsage(16)
    meter.update(torch.arange(16).repeat(3))
    assert meter.perplexity() == pytest.approx(16.0, rel=1e-6)
    assert meter.usage() == 1.0


def test_codebook_usage_rejects_bad_codes():
    meter = CodebookUsage(4)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        meter.update(torch.tensor([4]))
    with pytest.raises(TypeError, match="integer"):
        meter.update(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="codebook_size"):
        CodebookUsage(1)


def test_codebook_usage_reduces_across_processes(tmp_path):
    """Two gloo processes each count their own codes; both see the sum."""
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store")), nprocs=2, join=True)


def _distributed_worker(rank, world_size, store_path):
    import torch.distributed as dist

    meter = CodebookUsage(4)  # constructed before init: the check happens at call time
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        meter.update(torch.tensor([rank, rank]))
        assert meter.histogram().tolist() == [2, 2, 0, 0]
        assert meter.usage() == 0.5
    finally:
        dist.destroy_process_group()


def test_local_usage_does_not_reduce_and_equals_usage_statistics(monkeypatch):
    import torch.distributed as dist

    from simvq.metrics import usage_statistics

    counts = torch.tensor([3, 0, 1, 0])
    local = CodebookUsage(4, distributed=False)
    local.update(torch.tensor([0, 0, 0, 2]))
    # a global count would call all_reduce once torch.distributed is up; the local one never does
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda *a, **k: (_ for _ in ()).throw(AssertionError("all_reduce called")))
    assert local.compute() == usage_statistics(counts)
    assert usage_statistics(counts)["usage"] == 0.5 and usage_statistics(counts)["tokens"] == 4
    assert usage_statistics(counts)["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    with pytest.raises(AssertionError, match="all_reduce"):
        CodebookUsage(4).compute()
