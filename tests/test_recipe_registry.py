"""The registry of recipe kinds (``simvq.runs.registry``): every kind switch is a lookup there, and a
new modality is one file plus one ``register_recipe`` call. The toy kind below (tiny vectors, defined
here and nowhere in the package) trains two steps through ``simvq train``, is evaluated by
``simvq eval`` and loads through ``Tokenizer.from_run``."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from simvq.runs import registry
from simvq.runs.registry import Named, Recipe, get_recipe, recipe_names, register_recipe
from simvq.runs.schemas import OptimConfig, QuantizerConfig, TrainerConfig

SOURCE = Path(__file__).resolve().parents[1] / "src" / "simvq"

# ----------------------------------------------------------------------------- the toy modality: one "file"


@dataclass
class ToyData:
    dim: int = 6
    examples: int = 64
    batch_size: int = 16
    seed: int = 0


@dataclass
class ToyModel:
    dim: int = 4  # the code dimension


@dataclass
class ToyLoss:
    quantizer_weight: float = 1.0
    discriminator: bool = False
    discriminator_start: int = 0


@dataclass
class ToyConfig:
    recipe: str = "toy"
    out_dir: str = "runs/toy"
    data: ToyData = field(default_factory=ToyData)
    model: ToyModel = field(default_factory=ToyModel)
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(codebook_size=16, options={"seed": 0}))
    loss: ToyLoss = field(default_factory=ToyLoss)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=2, log_every=1, checkpoint_every=1, precision="32-true",
                                                                         channels_last=False, progress_bar=False))


class ToyAutoencoder(torch.nn.Module):
    """Vectors ``(B, data.dim)`` -> codes ``(B,)`` -> vectors."""

    def __init__(self, config: ToyConfig):
        from simvq import build_quantizer

        super().__init__()
        self.encoder = torch.nn.Linear(config.data.dim, config.model.dim)
        self.quantizer = build_quantizer(config.quantizer.name, dim=config.model.dim, codebook_size=config.quantizer.codebook_size,
                                         **config.quantizer.options)
        self.decoder = torch.nn.Linear(config.model.dim, config.data.dim)

    def forward(self, vectors):
        out = self.quantizer(self.encoder(vectors))
        return self.decoder(out.quantized), out

    def encode(self, vectors):
        return self.quantizer.encode(self.encoder(vectors))


def toy_vectors(data: ToyData) -> torch.Tensor:
    return torch.randn(data.examples, data.dim, generator=torch.Generator().manual_seed(data.seed))


def toy_modality(config: ToyConfig):
    from torch.utils.data import DataLoader, TensorDataset

    from simvq.train.recipe import Modality

    class ToyModality(Modality):
        def prepare(self, batch, config):
            return batch[0]

        def reconstruction_loss(self, reconstruction, vectors, config):
            loss = torch.nn.functional.mse_loss(reconstruction, vectors)
            return loss, {"train/reconstruction": loss}

        def train_loader(self, config, start_step):
            return DataLoader(TensorDataset(toy_vectors(config.data)), batch_size=config.data.batch_size, shuffle=True, drop_last=True)

    return ToyModality(config)


def evaluate_toy(run, *, progress=True, device=None, write=True, report=None, shard=(0, 1)) -> dict:
    from simvq.runs import load_run_model
    from simvq.runs.files import METRICS_FILE

    model, config, run_dir = load_run_model(run, device=device)
    with torch.no_grad():
        codes = model.encode(toy_vectors(config.data))
    metrics = {"usage": codes.unique().numel() / config.quantizer.codebook_size, "tokens": codes.numel()}
    if report is not None:
        report(metrics)
    if write:
        (run_dir / METRICS_FILE).write_text(json.dumps(metrics))
    return metrics


class VectorTokenizer:
    def __init__(self, model, config):
        self.model, self.config = model, config

    def encode(self, vectors):
        return self.model.encode(vectors)


TOY = Recipe("toy", schema=ToyConfig, build_model=ToyAutoencoder, modality=toy_modality, evaluate_run=evaluate_toy,
             tokenizer=VectorTokenizer)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setattr(registry, "_RECIPES", dict(registry._RECIPES))  # the registration ends with the test
    register_recipe(TOY)
    return TOY


# ----------------------------------------------------------------------------- tests


def test_a_new_modality_registers_and_trains_two_steps_through_the_cli(toy_registered, tmp_path, capsys):
    pytest.importorskip("lightning")
    from simvq.cli import main
    from simvq.runs import load_recipe, read_run_config
    from simvq.tokenizer import Tokenizer

    config_file = tmp_path / "toy.yaml"
    config_file.write_text(f"recipe: toy\nout_dir: {tmp_path / 'run'}\ndata:\n  examples: 48\n")
    assert load_recipe(config_file).data.examples == 48
    assert main(["train", str(config_file), "optim.lr=0.01"]) == 0
    run_dir = tmp_path / "run"
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["global_step"] == 2 and (run_dir / "model.safetensors").is_file()
    config = read_run_config(run_dir)
    assert isinstance(config, ToyConfig) and config.optim.lr == 0.01
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert trained["tokens"] == 48 and 0 < trained["usage"] <= 1

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == trained
    tokenizer = Tokenizer.from_run(run_dir)
    assert isinstance(tokenizer, VectorTokenizer) and tokenizer.encode(torch.randn(3, 6)).shape == (3,)


def test_a_config_file_is_read_once(monkeypatch):
    from simvq.runs import config as config_module

    reads = []
    original = config_module.read_config_file
    monkeypatch.setattr(config_module, "read_config_file", lambda path: reads.append(path) or original(path))
    config = config_module.load_recipe(SOURCE.parents[1] / "configs" / "speech.yaml", ["trainer.max_steps=3"])
    assert config.recipe == "audio" and config.trainer.max_steps == 3 and len(reads) == 1


def test_an_unknown_kind_is_named_with_the_registered_ones(tmp_path):
    from simvq.runs import load_recipe

    path = tmp_path / "bad.yaml"
    path.write_text("recipe: video\n")
    with pytest.raises(ValueError, match=r"recipe: expected one of \['audio', 'image'\], got 'video' \(in .*bad.yaml\)"):
        load_recipe(path)
    with pytest.raises(ValueError, match="got 'video'"):
        get_recipe("video")


def test_registration_refuses_a_schema_of_another_kind_and_a_second_entry(toy_registered):
    with pytest.raises(ValueError, match="declares recipe='toy'"):
        register_recipe(Recipe("vectors", schema=ToyConfig, build_model=ToyAutoencoder, modality=toy_modality, evaluate_run=evaluate_toy))
    with pytest.raises(ValueError, match="already registered"):
        register_recipe(Recipe("toy", schema=ToyConfig, build_model=ToyAutoencoder, modality=toy_modality, evaluate_run=dict))
    assert register_recipe(TOY) is TOY  # the same entry again is no change
    assert recipe_names()[:2] == ["image", "audio"] and "toy" in recipe_names()


def test_every_named_part_of_the_built_in_kinds_exists():
    pytest.importorskip("lightning")
    import importlib

    for name in recipe_names():
        recipe = get_recipe(name)
        for part in (recipe.modality, recipe.evaluate_run, recipe.train, recipe.tokenizer):
            if isinstance(part, Named):
                module, _, attribute = part.path.partition(":")
                assert callable(getattr(importlib.import_module(module), attribute)), part.path


def string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_the_kind_names_are_spelled_in_the_registry_only():
    """Every switch on the recipe kind is a registry lookup: "image" and "audio" appear in the
    registry, as the schemas' ``recipe`` defaults, and as the data sets' nouns for their files."""
    allowed = {"runs/registry.py", "runs/schemas.py", "data/image_folder.py", "data/speech/datasets.py"}
    spelled = sorted(str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py") if {"image", "audio"} & string_constants(path))
    assert set(spelled) <= allowed, spelled
    assert "runs/registry.py" in spelled
