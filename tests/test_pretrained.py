"""Hub-style checkpoints (simvq.runs.pretrained): save_pretrained / from_pretrained for image and audio
tokenizers, loaded in a fresh process with bit-equal codes and without unpickling; `simvq export-hf`
for tokenizer and prior runs (the prior's tokenizer in a subfolder); the refusals; push_to_hub and
repo ids against a stand-in for huggingface_hub (the tests never touch the network)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import simvq
from helpers import quick_run, tiny_audio_overrides, tiny_image_config
from simvq.cli import main
from simvq.runs import load_recipe, save_config
from simvq.runs.pretrained import export_run, layout_kind, load_pretrained_prior, save_pretrained
from simvq.runs.prior import PriorConfig, load_prior, tokenizer_fingerprint
from simvq.runs.weights import save_weights, weights_metadata
from simvq.tokenizer import AudioTokenizer, Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = str(Path(simvq.__file__).parents[1])


def fixed_images(count=4):
    return torch.rand(count, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def fixed_wav(count=2, samples=4321):
    return (torch.rand(count, samples, generator=torch.Generator().manual_seed(2)) * 2 - 1) * 0.3


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    config = tiny_image_config(tmp_path_factory.mktemp("image") / "run", "model.channel_multipliers=[1,1,2]", "model.dim=16",
                               "quantizer.codebook_size=64")
    run = quick_run(config, [fixed_images(8)])
    (run / "metrics.json").write_text(json.dumps({"usage": 0.5, "psnr": 17.25, "global_step": 3, "quantizer": "simvq"}))
    return run


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    config = load_recipe("configs/speech.yaml", tiny_audio_overrides(root, steps=3))
    return quick_run(config, [fixed_wav(2, 3200).unsqueeze(1)])


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_a_saved_tokenizer_loads_in_a_fresh_process_and_encodes_bit_equal(kind, image_run, audio_run, tmp_path):
    from safetensors.torch import load_file, save_file

    tokenizer = Tokenizer.from_run(image_run if kind == "image" else audio_run)
    inputs = fixed_images() if kind == "image" else fixed_wav()
    hub = tokenizer.save_pretrained(tmp_path / "hub")
    save_file({"inputs": inputs}, tmp_path / "inputs.safetensors")
    # the fresh process loads with torch.load and pickle switched off: nothing may unpickle
    script = (
        "import pickle, sys, torch\n"
        "def refuse(*args, **kwargs): raise AssertionError('unpickling while loading a pretrained tokenizer')\n"
        "torch.load = pickle.load = pickle.loads = refuse\n"
        "from safetensors.torch import load_file, save_file\n"
        "from simvq import Tokenizer\n"
        "tokenizer = Tokenizer.from_pretrained(sys.argv[1])\n"
        "codes = tokenizer.encode(load_file(sys.argv[2])['inputs'])\n"
        "save_file({'codes': codes, 'decoded': tokenizer.decode(codes)}, sys.argv[3])\n"
        "print(type(tokenizer).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(hub), str(tmp_path / "inputs.safetensors"), str(tmp_path / "out.safetensors")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ("Tokenizer" if kind == "image" else "AudioTokenizer")
    out = load_file(tmp_path / "out.safetensors")
    expected = tokenizer.encode(inputs)
    assert out["codes"].dtype == torch.int64 and torch.equal(out["codes"], expected)
    # decoding is the same computation (equal up to the other process's thread count's summation order)
    torch.testing.assert_close(out["decoded"], tokenizer.decode(expected), rtol=0, atol=1e-5)


def test_export_hf_writes_config_weights_and_a_card_with_the_metrics(image_run, tmp_path, capsys):
    assert main(["export-hf", str(image_run), str(tmp_path / "hub")]) == 0
    hub = tmp_path / "hub"
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    card = (hub / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: simvq\n") and "- image-tokenizer" in card
    assert "| psnr | 17.25 |" in card and "| usage | 0.5 |" in card and "codes `(B, 7, 7)` in [0, 64)" in card
    assert weights_metadata(hub / "model.safetensors")["simvq_kind"] == "tokenizer" and layout_kind(hub) == "tokenizer"
    tokenizer = Tokenizer.from_pretrained(hub)
    assert tokenizer.metrics["psnr"] == 17.25
    assert torch.equal(tokenizer.encode(fixed_images()), Tokenizer.from_run(image_run).encode(fixed_images()))
    # a directory save_pretrained wrote is also a run directory: from_run reads it as it is
    assert torch.equal(Tokenizer.from_run(hub).encode(fixed_images()), tokenizer.encode(fixed_images()))
    # and saving again (metrics carried over) gives the same card
    tokenizer.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_text() == card.replace(str(image_run), str(hub))


def test_an_audio_card_states_the_rate_and_hop(audio_run, tmp_path):
    AudioTokenizer.from_run(audio_run).save_pretrained(tmp_path / "hub")
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "- audio-tokenizer" in card and "16000 Hz" in card and "ceil(S / 320)" in card and "No evaluation was recorded" in card


def test_from_pretrained_refuses_missing_files_another_kind_and_corrupt_weights(image_run, audio_run, tmp_path):
    hub = Tokenizer.from_run(image_run).save_pretrained(tmp_path / "hub")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    no_weights = shutil.copytree(hub, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
        Tokenizer.from_pretrained(no_weights)
    no_config = shutil.copytree(hub, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config"):
        Tokenizer.from_pretrained(no_config)
    foreign = shutil.copytree(hub, tmp_path / "foreign")
    (foreign / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    with pytest.raises(ValueError, match="is not a simvq tokenizer config: architectures: unknown key"):
        Tokenizer.from_pretrained(foreign)
    with pytest.raises(ValueError, match="holds a image tokenizer .*not a AudioTokenizer"):
        AudioTokenizer.from_pretrained(hub)
    audio_hub = Tokenizer.from_run(audio_run).save_pretrained(tmp_path / "audio_hub")
    assert isinstance(Tokenizer.from_pretrained(audio_hub), AudioTokenizer)
    # non-finite weights: the same check as every other loader (simvq.utils.load_safetensors)
    from safetensors.torch import load_file, save_file

    corrupt = shutil.copytree(hub, tmp_path / "corrupt")
    state = load_file(corrupt / "model.safetensors")
    state["decoder.layers.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, corrupt / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="non-finite values .*decoder.layers.0.weight"):
        Tokenizer.from_pretrained(corrupt)
    # the CLI says each in one line
    with pytest.raises(SystemExit) as exit_info:
        main(["export-hf", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    # a training run's directory is not overwritten with the hub layout
    training = tmp_path / "training"
    (training / "checkpoints").mkdir(parents=True)
    (training / "checkpoints" / "last.ckpt").write_bytes(b"")
    tokenizer = Tokenizer.from_run(image_run)
    with pytest.raises(ValueError, match="training run's directory"):
        save_pretrained(tokenizer.model, tokenizer.config, training)


def make_prior_run(tokenizer_run: Path, directory: Path) -> Path:
    """A prior run directory (config.json, tokens.json, model.safetensors) without training it."""
    from simvq.models.prior import TokenPrior

    config = PriorConfig(tokenizer=str(tokenizer_run), out_dir=str(directory))
    config.model.dim, config.model.layers, config.model.heads = 16, 1, 2
    directory.mkdir(parents=True)
    save_config(config, directory)
    meta = {"tokenizer": str(tokenizer_run.resolve()), "tokenizer_sha256": tokenizer_fingerprint(tokenizer_run), "codebook_size": 64,
            "grid": [7, 7], "num_classes": 10, "train_tokens": 490}
    (directory / "tokens.json").write_text(json.dumps(meta))
    torch.manual_seed(0)
    save_weights(TokenPrior(64, grid=(7, 7), num_classes=10, dim=16, layers=1, heads=2), directory / "model.safetensors")
    (directory / "gen_metrics.json").write_text(json.dumps({"nll_bits_per_token": 4.5, "domain_fid": 12.0}))
    return directory


def test_a_prior_exports_with_its_tokenizer_in_a_subfolder_and_loads_anywhere(image_run, tmp_path):
    from simvq.train.prior import decode_codes, load_tokenizer_for, sample_codes

    prior_run = make_prior_run(image_run, tmp_path / "prior")
    assert main(["export-hf", str(prior_run), str(tmp_path / "hub")]) == 0
    moved = shutil.move(str(tmp_path / "hub"), str(tmp_path / "elsewhere"))  # the link to the tokenizer is relative
    hub = Path(moved)
    meta = json.loads((hub / "tokens.json").read_text())
    assert meta["tokenizer"] == "tokenizer" and meta["tokenizer_sha256"] == tokenizer_fingerprint(hub / "tokenizer")
    assert json.loads((hub / "config.json").read_text())["tokenizer"] == "tokenizer"
    assert "| nll_bits_per_token | 4.5 |" in (hub / "README.md").read_text() and layout_kind(hub) == "prior"

    prior, _, loaded_meta = load_pretrained_prior(hub)
    original, _, _ = load_prior(prior_run)
    assert all(torch.equal(a, b) for a, b in zip(prior.state_dict().values(), original.state_dict().values()))
    assert loaded_meta["tokenizer"] == str(hub / "tokenizer")
    tokenizer = load_tokenizer_for(loaded_meta)  # the fingerprint check of `simvq sample` passes
    codes = sample_codes(prior, 3, labels=torch.tensor([0, 1, 2]))
    reference = Tokenizer.from_run(image_run)
    assert torch.equal(decode_codes(tokenizer, codes), decode_codes(reference, codes))
    assert main(["sample", str(hub), "-n", "4", "--out", str(tmp_path / "samples.png")]) == 0

    with pytest.raises(ValueError, match="holds a simvq prior, not a tokenizer; its tokenizer is the subfolder"):
        Tokenizer.from_pretrained(hub)
    with pytest.raises(ValueError, match="holds a simvq tokenizer, not a prior"):
        load_pretrained_prior(hub / "tokenizer")
    # a tokenizer that changed since the prior was trained on it is not exported with it
    changed = shutil.copytree(image_run, tmp_path / "changed_tokenizer")
    stale = make_prior_run(changed, tmp_path / "stale_prior")
    model = Tokenizer.from_run(changed).model
    with torch.no_grad():
        model.quantizer.proj.weight.add_(0.01)
    save_weights(model, changed / "model.safetensors")
    with pytest.raises(ValueError, match="changed since this prior was trained on it"):
        export_run(stale, tmp_path / "stale_hub")
    assert not (tmp_path / "stale_hub").exists()


class FakeHub:
    """Stands in for huggingface_hub's HfApi and snapshot_download: records the calls, no network."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **options):
        FakeHub.calls.append(("create_repo", repo_id, options))

    def upload_folder(self, *, folder_path, repo_id, **options):
        FakeHub.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return type("CommitInfo", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()


def test_push_to_hub_creates_the_repo_and_uploads_the_layout(image_run, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.calls = []
    url = Tokenizer.from_run(image_run).push_to_hub("me/fmnist-simvq", private=True)
    assert url == "https://hub.invalid/me/fmnist-simvq/commit/1"
    assert FakeHub.calls[0] == ("create_repo", "me/fmnist-simvq", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert FakeHub.calls[1] == ("upload_folder", "me/fmnist-simvq", ["README.md", "config.json", "model.safetensors"])
    assert main(["export-hf", str(image_run), str(tmp_path / "hub"), "--push-to-hub", "me/other"]) == 0
    assert FakeHub.calls[-1] == ("upload_folder", "me/other", ["README.md", "config.json", "metrics.json", "model.safetensors"])


def test_a_repo_id_is_fetched_through_huggingface_hub(image_run, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    hub = Tokenizer.from_run(image_run).save_pretrained(tmp_path / "snapshot")
    asked = {}

    def snapshot_download(repo_id, **options):
        asked.update(repo_id=repo_id, **options)
        return str(hub)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    tokenizer = Tokenizer.from_pretrained("someone/fmnist-simvq", revision="v1")
    assert asked["repo_id"] == "someone/fmnist-simvq" and asked["revision"] == "v1"
    assert torch.equal(tokenizer.encode(fixed_images()), Tokenizer.from_run(image_run).encode(fixed_images()))

    def offline(repo_id, **options):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="no local directory, and the Hub gave no repo of that name"):
        Tokenizer.from_pretrained("someone/missing")
