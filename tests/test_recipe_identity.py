"""The image recipe trains exactly as it did before the recipe core was split out of it.

The reference numbers below were produced by the code of commit
7e39a70a648a374e333da5c358fc989f37cce9a6 (the last commit before ``simvq.train.core`` existed):

    git archive 7e39a70 src | tar -x -C /tmp/ref_src
    PYTHONPATH=/tmp/ref_src/src:tests python -c "import test_recipe_identity as t; t.print_reference('/tmp/ref')"

on an x86-64 CPU with AVX2 and no AVX-512, in float32 with one torch thread. A refactor that changes
the order of random draws, the loss, the optimiser or the weight EMA changes the codes or the checksum.

The kernels torch picks depend on the CPU: on an AVX-512 machine the convolutions and vectorised ops
round differently and the checksum moves in the third decimal (the codes stay equal). So the
fingerprint is taken in a child process held to the AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``: no-ops on an AVX2 machine), which reproduces the reference bit for bit on
both kinds.
"""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import tiny_image_config, train

pytest.importorskip("lightning")
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the reference was taken with x86-64 AVX2 kernels"),
]
AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}

RECIPES = {
    "plain": ("quantizer.name=simvq",),
    "gan_ema": ("quantizer.name=vq_ema", "loss.discriminator=true", "loss.discriminator_start=3",
                "loss.discriminator_channels=8", "loss.discriminator_layers=1", "optim.ema_decay=0.9", "optim.warmup_steps=4"),
}
SHARED = (
    "data.batch_size=8",
    "model.channel_multipliers=[1,1,2]",
    "model.dim=8",
    "quantizer.codebook_size=32",
    "trainer.max_steps=12",
    "trainer.log_every=4",
    "trainer.checkpoint_every=5",
    "trainer.precision=32-true",
)

# (codes of the first 2 test images, flattened, as text; float64 checksum of model.safetensors) per recipe
REFERENCE = {
    'plain': ('18 18 18 18 18 18 12 11 11 11 11 11 28 26 11 11 11 24 24 24 26 4 11 24 26 8 8 12 24 8 8 8 8 12 12 24 24 31 31 31 7 12 18 28 11 11 28 28 29 17 12 12 12 26 5 5 11 26 15 7 7 29 5 11 26 15 28 26 26 5 11 26 12 26 8 15 5 28 26 12 12 8 12 5 28 26 15 7 7 7 18 5 18 4 4 4 29 14', '30.401432083000213'),
    'gan_ema': ('4 17 6 6 6 6 6 17 21 21 28 28 28 28 13 21 28 28 28 18 24 27 28 28 18 18 18 24 27 28 18 8 8 8 24 24 24 24 4 4 24 24 4 4 4 4 4 4 4 17 28 24 24 24 9 17 17 28 18 24 24 17 17 17 28 18 5 5 3 17 17 28 18 18 14 14 17 17 28 18 18 14 14 17 17 28 18 24 24 24 6 27 4 10 10 10 10 10', '118.35928118046357'),
}


def recipe_fingerprint(out_dir, name: str) -> tuple[str, str]:
    from simvq.data import build_image_dataset
    from simvq.tokenizer import Tokenizer
    from simvq.utils import load_safetensors

    config = tiny_image_config(out_dir, *SHARED, *RECIPES[name])
    run_dir = train(config, evaluate=False)
    tokenizer = Tokenizer.from_run(run_dir)
    test = build_image_dataset(tokenizer.config.data, "test", seed=0)
    images = torch.stack([test[i] for i in range(2)])
    codes = " ".join(map(str, tokenizer.encode(images).flatten().tolist()))
    state = load_safetensors(run_dir / "model.safetensors")
    checksum = sum(float(t.double().sum()) + float((t.double().flatten() * torch.arange(t.numel(), dtype=torch.float64).sin()).sum())
                   for _, t in sorted(state.items()))
    return codes, repr(checksum)


def print_reference(out_dir):
    from pathlib import Path

    torch.set_num_threads(1)
    for name in RECIPES:
        print(f"{name!r}: {recipe_fingerprint(Path(out_dir) / name, name)!r},")


def fingerprint_with_avx2_kernels(out_dir, name: str) -> tuple[str, str]:
    """``recipe_fingerprint`` in a child process that uses torch's AVX2 kernels and one thread."""
    tests = Path(__file__).parent
    script = (f"import json, sys, torch; torch.set_num_threads(1); sys.path[:0] = {[str(tests), str(tests.parent / 'src')]!r}; "
              f"import test_recipe_identity as t; print(json.dumps(t.recipe_fingerprint({str(out_dir)!r}, {name!r})))")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **AVX2_KERNELS}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_image_recipe_trains_bit_identically_to_the_pre_refactor_code(tmp_path, name):
    codes, checksum = fingerprint_with_avx2_kernels(tmp_path, name)
    reference_codes, reference_checksum = REFERENCE[name]
    assert codes == reference_codes
    assert checksum == reference_checksum
