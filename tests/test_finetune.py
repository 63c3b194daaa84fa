"""Fine-tuning (init.from): the README's example run for 2 steps on a folder of generated images from a
tiny Fashion-MNIST run trained 2 steps here; the quantizer kept or rebuilt; the optimizer resumed;
and the refusals, each one line naming init.from, before anything is written."""

import json
import shlex
from pathlib import Path

import pytest
import torch

from helpers import quick_run, tiny_audio_overrides
from simvq.cli import main
from simvq.runs import build_model, load_recipe
from simvq.runs.finetune import apply_weights, initial_state
from simvq.utils import load_safetensors

pytest.importorskip("lightning")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

README = Path(__file__).resolve().parents[1] / "README.md"
# the tiny model both runs share (appended to the README's overrides: later ones win)
TINY = ["model.channels=8", "model.num_res_blocks=0", "quantizer.codebook_size=64", "quantizer.options.seed=0",
        "trainer.max_steps=2", "trainer.log_every=1", "trainer.checkpoint_every=1", "trainer.progress_bar=false"]


def readme_command(prefix: str) -> list[str]:
    """The README's command that starts with ``prefix``, continuation lines joined, split as a shell would."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    command = ""
    for line in lines[start:]:
        command += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            break
    return shlex.split(command)


@pytest.fixture(scope="module")
def fmnist_run(tmp_path_factory):
    """The README's first step, `simvq train configs/fmnist.yaml --out runs/fmnist`, tiny and for 2 steps."""
    run = tmp_path_factory.mktemp("fmnist") / "run"
    command = readme_command("simvq train configs/fmnist.yaml --out")
    assert command[:3] == ["simvq", "train", "configs/fmnist.yaml"]
    assert main(["train", "configs/fmnist.yaml", "--out", str(run), "--no-eval", "data.batch_size=8", *TINY]) == 0
    return run


def write_images(folder: Path, count: int = 12) -> Path:
    """``count`` RGB PNGs of random rectangles on random backgrounds, of different sizes."""
    from PIL import Image, ImageDraw

    generator = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True)
    for index in range(count):
        width, height = 40 + 8 * (index % 4), 48 + 4 * (index % 3)
        colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=generator))
        image = Image.new("RGB", (width, height), colour)
        box = sorted(int(v) for v in torch.randint(0, min(width, height), (2,), generator=generator))
        ImageDraw.Draw(image).rectangle([box[0], box[0], box[1] + 4, box[1] + 4], fill=(255 - colour[0], 128, colour[2]))
        image.save(folder / f"{index}.png")
    return folder


def test_the_readme_example_fine_tunes_the_fmnist_tokenizer_on_a_folder_of_images(fmnist_run, tmp_path, capsys):
    command = readme_command("simvq train configs/folder.yaml init.from=")
    # the README's own paths, replaced by this test's
    replaced = {"init.from": str(fmnist_run), "data.root": str(write_images(tmp_path / "images")), "out_dir": str(tmp_path / "ft")}
    args = [f"{item.split('=')[0]}={replaced[item.split('=')[0]]}" if item.split("=")[0] in replaced else item for item in command[2:]]
    assert set(replaced) <= {item.split("=")[0] for item in command[2:]}
    assert main(["train", *args, *TINY, "data.batch_size=4", "data.num_workers=0", "--no-eval"]) == 0

    run = tmp_path / "ft"
    saved = json.loads((run / "config.json").read_text())
    assert saved["init"] == {"from": str(fmnist_run), "quantizer": "keep", "optimizer": "fresh"}
    assert saved["data"]["name"] == "image_folder" and saved["loss"]["discriminator"] is True  # configs/folder.yaml's recipe
    source, tuned = load_safetensors(fmnist_run / "model.safetensors"), load_safetensors(run / "model.safetensors")
    assert source.keys() == tuned.keys()
    # folder.yaml warms up over 1,000 steps: 2 steps (and its EMA) barely move the weights from the source's
    moved = max(float((tuned[name].float() - source[name].float()).abs().max()) for name in source)
    assert moved < 1e-3
    fresh = build_model(load_recipe(args[0], [*args[1:], *TINY])).state_dict()
    assert max(float((fresh[name].float() - source[name].float()).abs().max()) for name in source if "encoder" in name) > 0.05


def test_init_optimizer_resume_continues_the_source_runs_adam_state(fmnist_run, tmp_path):
    from simvq.utils import load_torch_file

    out = tmp_path / "resumed"
    assert main(["train", "configs/fmnist.yaml", "--out", str(out), "--no-eval", "data.batch_size=8", *TINY, "trainer.max_steps=1",
                 f"init.from={fmnist_run}", "init.optimizer=resume"]) == 0
    source = load_torch_file(fmnist_run / "checkpoints" / "last.ckpt")["optimizer_states"][0]["state"]
    resumed = load_torch_file(out / "checkpoints" / "last.ckpt")["optimizer_states"][0]["state"]
    assert set(source) == set(resumed)
    assert all(float(resumed[i]["step"]) == float(source[i]["step"]) + 1 for i in source)  # 2 source steps + 1


def test_init_quantizer_reinit_keeps_the_autoencoder_and_rebuilds_the_quantizer(fmnist_run, tmp_path):
    config = load_recipe("configs/fmnist.yaml", [*TINY, f"out_dir={tmp_path / 'x'}", f"init.from={fmnist_run}", "init.quantizer=reinit",
                                                  "quantizer.codebook_size=32", "quantizer.options.seed=5"])
    initial = initial_state(config)
    assert not any(name.startswith("quantizer.") for name in initial.weights)
    torch.manual_seed(0)
    model = build_model(config)
    quantizer_before = {name: tensor.clone() for name, tensor in model.quantizer.state_dict().items()}
    apply_weights(model, initial)
    source = load_safetensors(fmnist_run / "model.safetensors")
    assert all(torch.equal(model.state_dict()[name], source[name]) for name in source if not name.startswith("quantizer."))
    assert all(torch.equal(model.quantizer.state_dict()[name], value) for name, value in quantizer_before.items())
    assert model.quantizer.codebook_size == 32


def test_a_save_pretrained_directory_is_a_source_too(fmnist_run, tmp_path):
    from simvq.tokenizer import Tokenizer

    hub = Tokenizer.from_run(fmnist_run).save_pretrained(tmp_path / "hub")
    config = load_recipe("configs/fmnist.yaml", [*TINY, f"out_dir={tmp_path / 'x'}", f"init.from={hub}"])
    initial = initial_state(config)
    assert initial.optimizer_state is None
    assert all(torch.equal(initial.weights[name], value) for name, value in load_safetensors(fmnist_run / "model.safetensors").items())


def refusal(capsys, *overrides, config="configs/fmnist.yaml", out=None) -> str:
    """``simvq train CONFIG ...`` refused: its one-line message."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", config, "--out", str(out), "--no-eval", *TINY, *overrides])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    return message


def test_init_mistakes_are_one_line_naming_init_from_and_write_nothing(fmnist_run, tmp_path, capsys):
    out = tmp_path / "never"
    message = refusal(capsys, f"init.from={tmp_path / 'missing'}", out=out)
    assert f"init.from: {tmp_path / 'missing'} does not exist" in message
    message = refusal(capsys, f"init.from={fmnist_run}", "model.channels=16", out=out)
    assert "init.from:" in message and "does not fit this config's model" in message
    assert "encoder.layers.0.weight (saved (8, 1, 3, 3), config (16, 1, 3, 3))" in message and "more" in message
    message = refusal(capsys, f"init.from={fmnist_run}", "quantizer.codebook_size=32", out=out)
    assert "quantizer.basis (saved (64, 64), config (32, 64))" in message and "init.quantizer=reinit" in message
    hub = tmp_path / "hub"
    from simvq.tokenizer import Tokenizer

    Tokenizer.from_run(fmnist_run).save_pretrained(hub)
    assert "holds no checkpoints/last.ckpt" in refusal(capsys, f"init.from={hub}", "init.optimizer=resume", out=out)
    assert "init.optimizer=resume" in refusal(capsys, f"init.from={fmnist_run}", "init.optimizer=resume", "init.quantizer=reinit", out=out)
    assert "init.quantizer must be one of" in refusal(capsys, f"init.from={fmnist_run}", "init.quantizer=new", out=out)
    assert "init.form: unknown key" in refusal(capsys, f"init.form={fmnist_run}", out=out)
    assert "without init.from" in refusal(capsys, "init.quantizer=reinit", out=out)
    # a tokenizer of the other kind, and a prior
    audio = quick_run(load_recipe("configs/speech.yaml", tiny_audio_overrides(tmp_path / "voices", steps=1)), [torch.zeros(1, 1, 640)])
    assert "is an audio tokenizer; this config trains an image one" in refusal(capsys, f"init.from={audio}", out=out)
    prior = tmp_path / "prior"
    prior.mkdir()
    (prior / "tokens.json").write_text("{}")
    assert "is a prior, not a tokenizer" in refusal(capsys, f"init.from={prior}", out=out)
    assert not out.exists()


def test_the_audio_recipe_takes_the_same_init_section(tmp_path):
    """The speech schema's init section: the source's weights checked and loaded, mismatches named."""
    root = tmp_path / "voices"
    source = quick_run(load_recipe("configs/speech.yaml", tiny_audio_overrides(root, steps=1)), [torch.zeros(1, 1, 640)])
    overrides = [*tiny_audio_overrides(root, steps=1), f"out_dir={tmp_path / 'ft'}", f"init.from={source}"]
    initial = initial_state(load_recipe("configs/speech.yaml", overrides))
    assert all(torch.equal(initial.weights[name], value) for name, value in load_safetensors(source / "model.safetensors").items())
    with pytest.raises(ValueError, match=r"init.from: .* does not fit this config's model \(shapes differ: .*quantizer"):
        initial_state(load_recipe("configs/speech.yaml", [*overrides, "quantizer.codebook_size=32"]))
    with pytest.raises(ValueError, match="is an image tokenizer; this config trains an audio one"):
        image = quick_run(load_recipe("configs/fmnist.yaml", [*TINY, f"out_dir={tmp_path / 'image'}"]), [torch.zeros(2, 1, 28, 28)], steps=1)
        initial_state(load_recipe("configs/speech.yaml", [*tiny_audio_overrides(root, steps=1), f"init.from={image}"]))
