"""Multi-process (gloo, CPU): every registered quantizer keeps identical parameters and buffers on
every rank when the ranks see different data (EMA, dead-code restarts, k-means, CVQ anchors, affine
statistics are all reduced or broadcast), and ``simvq train ... trainer.devices=2`` runs end to end
with the recipe's own cross-rank check."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from simvq.quantizers import build_quantizer, list_quantizers

WORLD_SIZE = 2
STEPS = 3


def fingerprints(module: torch.nn.Module) -> tuple[list[str], torch.Tensor]:
    """Sum and a pseudo-randomly weighted sum of every parameter and buffer, float64."""
    names, rows = [], []
    for name, tensor in module.state_dict().items():
        values = tensor.detach().flatten().double()
        weights = torch.linspace(-1.0, 2.0, values.numel(), dtype=torch.float64).sin()
        names.append(name)
        rows.append(torch.stack([values.sum(), (values * weights).sum()]))
    return names, torch.stack(rows)


def _on_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One process group for both checks below (starting processes is the slow part)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    _train_quantizers(rank, Path(out_dir) / "disagreements.json")
    _evaluate(rank, Path(out_dir) / "sharded.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_on_rank, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return out_dir


# more codes than a rank's batch holds: restarts drawn with replacement, vq_lc's table filled over steps
# from batches with different numbers of distinct vectors
LARGE_CODEBOOK = {"vq_reset": 128, "vq_lc": 128}


def _train_quantizers(rank: int, out_file: Path) -> None:
    disagreements = {}
    runs = [(name, 16) for name in list_quantizers()] + list(LARGE_CODEBOOK.items())
    for name, codebook_size in runs:
        torch.manual_seed(0)  # the same initial module on every rank, as DDP's broadcast makes it
        quantizer = build_quantizer(name, dim=8, codebook_size=codebook_size)
        params = [p for p in quantizer.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.1) if params else None
        for step in range(STEPS):
            # each rank its own batch, of another size and scale, as in data-parallel training
            generator = torch.Generator().manual_seed(1000 * rank + step)
            z = torch.randn(48 + 16 * rank, 8, generator=generator) * (1 + rank)
            out = quantizer(z)
            if optimizer is not None:
                optimizer.zero_grad()
                (out.loss + out.quantized.pow(2).mean()).backward()
                for p in params:  # what DDP does to the gradients
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= WORLD_SIZE
                optimizer.step()
        names, local = fingerprints(quantizer)
        gathered = [torch.zeros_like(local) for _ in range(WORLD_SIZE)]
        dist.all_gather(gathered, local)
        differ = torch.stack([(g != gathered[0]).any(1) for g in gathered]).any(0)
        disagreements[name if codebook_size == 16 else f"{name} K={codebook_size}"] = [n for n, bad in zip(names, differ.tolist()) if bad]
    if rank == 0:
        out_file.write_text(json.dumps(disagreements))


def test_every_quantizer_stays_identical_across_ranks(ranks_output):
    disagreements = json.loads((ranks_output / "disagreements.json").read_text())
    assert set(disagreements) == set(list_quantizers()) | {f"{name} K={size}" for name, size in LARGE_CODEBOOK.items()}
    assert {name: bad for name, bad in disagreements.items() if bad} == {}


@pytest.mark.slow
def test_simvq_train_runs_on_two_processes(tmp_path):
    pytest.importorskip("lightning")
    config = tmp_path / "tiny.yaml"
    config.write_text(textwrap.dedent(f"""
        out_dir: {tmp_path / "run"}
        data: {{batch_size: 8}}
        model: {{channels: 8, channel_multipliers: [1, 1], downsamplings: 1, num_res_blocks: 0, dim: 8}}
        quantizer: {{name: vq_reset, codebook_size: 32, options: {{seed: 0}}}}
        optim: {{ema_decay: 0.9}}
        trainer: {{max_steps: 4, log_every: 2, progress_bar: false, precision: 32-true}}
        eval: {{max_images: 30, fid_images: 0, grid_images: 4}}
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "simvq.cli", "train", str(config), "trainer.devices=2", "trainer.accelerator=cpu"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("run directory:") == 1  # every rank runs the command; rank 0 alone prints
    session = json.loads((tmp_path / "run" / "progress.json").read_text())["sessions"][-1]
    assert session["world_size"] == 2 and session["end_step"] == 4
    assert session["tensors_identical_across_ranks"] > 0  # the recipe compared every tensor across ranks
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())  # evaluated in 2 shards
    assert metrics["images"] == 30 and metrics["tokens"] == 30 * 14 * 14


def _evaluate(rank: int, out_file: Path) -> None:
    from simvq.data import build_image_dataset
    from simvq.metrics.image import code_histogram, evaluate_reconstructions
    from simvq.train.config import load_config
    from simvq.train.run_files import build_model

    config = load_config(None, EVAL_OVERRIDES)
    torch.manual_seed(0)
    model = build_model(config).eval()
    dataset = first_images(build_image_dataset(config.data, "test", seed=0), 64)
    metrics, counts = evaluate_reconstructions(model, dataset, max_images=45, batch_size=8, fid_images=0, progress=False,
                                               shard=(rank, WORLD_SIZE))
    histogram = code_histogram(model, dataset, batch_size=16, progress=False, shard=(rank, WORLD_SIZE))
    if rank == 1:  # a non-zero rank must hold the full numbers too
        torch.save({"metrics": metrics, "counts": counts, "histogram": histogram}, out_file)


def first_images(dataset, count):
    """The first ``count`` images as an in-memory data set (``images``: uint8, as the recipe's)."""

    class Head:
        images = dataset.images[:count]

        def __len__(self):
            return count

    return Head()


EVAL_OVERRIDES = ["model.channels=8", "model.channel_multipliers=[1,1]", "model.downsamplings=1", "model.num_res_blocks=0",
                  "model.dim=8", "quantizer.codebook_size=32", "quantizer.options.seed=0"]


def test_sharded_evaluation_gives_the_numbers_of_one_process(ranks_output):
    from simvq.data import build_image_dataset
    from simvq.metrics.image import code_histogram, evaluate_reconstructions
    from simvq.train.config import load_config
    from simvq.train.run_files import build_model

    sharded = torch.load(ranks_output / "sharded.pt", weights_only=True)
    config = load_config(None, EVAL_OVERRIDES)
    torch.manual_seed(0)
    model = build_model(config).eval()
    dataset = first_images(build_image_dataset(config.data, "test", seed=0), 64)
    metrics, counts = evaluate_reconstructions(model, dataset, max_images=45, batch_size=8, fid_images=0, progress=False)
    assert torch.equal(sharded["counts"], counts)
    assert torch.equal(sharded["histogram"], code_histogram(model, dataset, batch_size=16, progress=False))
    assert sharded["metrics"].keys() == metrics.keys()
    for key, value in metrics.items():
        assert sharded["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-8), key  # float32 sums per batch


def _evaluate_with_rfid(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    from simvq.metrics.image import evaluate_reconstructions

    model, dataset = _eval_model_and_images()
    # the reference statistics are computed in shards too (an empty cache), then written by rank 0
    metrics, _ = evaluate_reconstructions(model, dataset, max_images=8, batch_size=8, fid_images=FID_IMAGES, progress=False,
                                          shard=(rank, WORLD_SIZE), fid_cache_dir=Path(out_dir) / "fid")
    if rank == 1:  # a non-zero rank must hold the rFID too
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
    dist.destroy_process_group()


def _eval_model_and_images():
    from simvq.data import build_image_dataset
    from simvq.train.config import load_config
    from simvq.train.run_files import build_model

    config = load_config(None, EVAL_OVERRIDES)
    torch.manual_seed(0)
    return build_model(config).eval(), first_images(build_image_dataset(config.data, "test", seed=0), 64)


FID_IMAGES = 3  # shards of 2 and 1 images: uneven, as most are


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # the ranks run one thread; float32 convolutions differ in the last bits across thread counts
def test_sharded_rfid_equals_the_rfid_of_one_process(tmp_path):
    """Each rank extracts the Inception features of its shard of the rFID subset (reconstructions
    and reference); the gathered features give every rank the statistics one process computes."""
    pytest.importorskip("scipy")
    import numpy as np

    from simvq.metrics.image import evaluate_reconstructions

    sharded_dir = tmp_path / "sharded"
    sharded_dir.mkdir()
    mp.spawn(_evaluate_with_rfid, args=(str(tmp_path / "init"), str(sharded_dir)), nprocs=WORLD_SIZE, join=True)
    sharded = json.loads((sharded_dir / "metrics.json").read_text())
    model, dataset = _eval_model_and_images()
    metrics, _ = evaluate_reconstructions(model, dataset, max_images=8, batch_size=8, fid_images=FID_IMAGES, progress=False,
                                          fid_cache_dir=tmp_path / "single")
    assert metrics["rfid_images"] == sharded["rfid_images"] == FID_IMAGES
    assert sharded["rfid"] == pytest.approx(metrics["rfid"], rel=1e-9)  # the same features, in the same order
    (single,), (shards,) = list((tmp_path / "single").glob("*.npz")), list((sharded_dir / "fid").glob("*.npz"))
    with np.load(single) as one, np.load(shards) as two:  # the reference statistics
        for name in ("mu", "sigma"):
            np.testing.assert_allclose(two[name], one[name], rtol=1e-9, atol=1e-12)



def _codec_and_utterances():
    """A tiny seeded codec and three voiced utterances of different lengths (uneven shards 2 + 1)."""
    from helpers import voiced_clip
    from simvq.models import AudioCodec

    torch.manual_seed(0)
    model = AudioCodec(channels=4, dim=16, decoder_width=32, decoder_blocks=1, codebook_size=64).eval()
    return model, [torch.from_numpy(voiced_clip(seconds, seed)).view(1, -1) for seconds, seed in ((0.5, 0), (0.6, 1), (0.7, 2))]


def _evaluate_audio(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    from simvq.metrics.audio import evaluate_codec

    model, utterances = _codec_and_utterances()
    metrics, counts = evaluate_codec(model, utterances, use_dnsmos=False, coverage_dim=16, progress=False, shard=(rank, WORLD_SIZE))
    (Path(out_dir) / f"audio_rank{rank}.json").write_text(json.dumps({"metrics": metrics, "counts": counts.tolist()}))
    dist.destroy_process_group()


@pytest.mark.usefixtures("one_thread")  # as the ranks: equal float32 results need equal thread counts
def test_sharded_audio_evaluation_gives_the_numbers_of_one_process(tmp_path):
    """Each rank scores its share of the utterances; every rank ends with one process's metrics
    (the same per-utterance scores averaged in the same order) and the summed code histogram."""
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    from simvq.metrics.audio import evaluate_codec

    mp.spawn(_evaluate_audio, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    model, utterances = _codec_and_utterances()
    metrics, counts = evaluate_codec(model, utterances, use_dnsmos=False, coverage_dim=16, progress=False)
    assert metrics["utterances"] == 3
    for rank in range(WORLD_SIZE):
        sharded = json.loads((tmp_path / f"audio_rank{rank}.json").read_text())
        assert sharded["counts"] == counts.tolist()
        assert sharded["metrics"] == metrics, rank  # exactly: no value is recomputed or re-summed differently
