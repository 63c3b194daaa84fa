"""The DDP code paths of the in-place codebook updates (all_reduce, broadcast) on one process."""

import torch

from quantizer_references import clustered_data
from simvq import build_quantizer


def build(name, dim=8, codebook_size=32, **options):
    return build_quantizer(name, dim=dim, codebook_size=codebook_size, seed=0, **options)


def test_single_process_group_gives_the_same_updates(tmp_path):
    """With a 1-process gloo group the all_reduce/broadcast paths run and must change nothing."""
    import torch.distributed as dist

    data, _ = clustered_data()
    options = {"vq_reset": {}, "vq_kmeans": {}, "cvq": {}, "affine": {"affine": "running"}, "vq_lc": {}}
    reference = {}
    for name, extra in options.items():
        quantizer = build(name, codebook_size=16, **extra)
        quantizer(data), quantizer(data + 0.1)
        reference[name] = quantizer.state_dict()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for name, extra in options.items():
            quantizer = build(name, codebook_size=16, **extra)
            quantizer(data), quantizer(data + 0.1)
            for key, value in quantizer.state_dict().items():
                torch.testing.assert_close(value, reference[name][key], msg=f"{name}.{key}")
    finally:
        dist.destroy_process_group()
