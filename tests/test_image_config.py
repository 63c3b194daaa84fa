"""Recipe configs: YAML + dotted overrides, checked by OmegaConf against the dataclass schemas and
converted to the fields' types."""

from pathlib import Path

import pytest

from simvq.cli import build_parser
from simvq.train.config import TokenizerConfig, load_config, read_run_config, save_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_overrides_are_coerced_to_field_types():
    config = load_config(CONFIGS / "fmnist.yaml", [
        "quantizer.name=vq_ema",
        "quantizer.codebook_size=65536",
        "optim.lr=3e-4",
        "optim.grad_clip=null",
        "optim.betas=[0.5,0.9]",
        "model.channel_multipliers=[1,2,2,4]",
        "model.downsamplings=3",
        "loss.discriminator=true",
        "trainer.devices=2",
        "quantizer.options.beta=0.5",
        "quantizer.options.seed=3",
        "quantizer.options.rotation_trick=yes",
    ])
    assert config.quantizer.name == "vq_ema"
    assert config.quantizer.codebook_size == 65536 and type(config.quantizer.codebook_size) is int
    assert config.optim.lr == 3e-4 and type(config.optim.lr) is float
    assert config.optim.grad_clip is None
    assert config.optim.betas == (0.5, 0.9)
    assert config.model.channel_multipliers == (1, 2, 2, 4)
    assert config.loss.discriminator is True
    assert config.trainer.devices == 2
    # options are YAML-parsed and passed as they are: only these keys reach build_quantizer
    assert config.quantizer.options == {"beta": 0.5, "seed": 3, "rotation_trick": True}  # YAML 1.1: yes -> true
    # untouched values come from the YAML file, not the dataclass defaults
    assert config.out_dir == "runs/fmnist" and config.trainer.max_steps == 5000


def test_bad_overrides_name_the_key():
    with pytest.raises(ValueError, match="codebook_sise"):
        load_config(None, ["quantizer.codebook_sise=3"])
    with pytest.raises(ValueError, match="quantizer.codebook_size"):
        load_config(None, ["quantizer.codebook_size=lots"])
    with pytest.raises(ValueError, match="loss.discriminator"):
        load_config(None, ["loss.discriminator=maybe"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, ["quantizer.codebook_size"])


def test_unknown_keys_and_wrong_types_are_one_line_naming_the_key(tmp_path, capsys):
    with pytest.raises(ValueError) as error:
        load_config(None, ["trainer.max_stepz=3"])
    assert str(error.value) == "trainer.max_stepz: unknown key (did you mean 'max_steps'?)"
    with pytest.raises(ValueError) as error:
        load_config(None, ["optim.lr=abc"])
    assert str(error.value) == "optim.lr: expected a float, got 'abc'"
    with pytest.raises(ValueError, match=r"^optim.betas: expected a list of 2 items"):
        load_config(None, ["optim.betas=[1,2,3]"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("trainer:\n  max_steps: lots\n")
    with pytest.raises(ValueError, match=r"^trainer.max_steps: expected an integer, got 'lots'"):
        load_config(recipe)
    recipe.write_text("model:\n  widthh: 3\n")
    with pytest.raises(ValueError, match=r"^model.widthh: unknown key"):
        load_config(recipe)
    # a text field keeps the text it is given; a nullable one reads null as None
    config = load_config(None, ["loss.reconstruction_range=[-1, 1]", "data.root=null", "trainer.devices=auto"])
    assert (config.loss.reconstruction_range, config.data.root, config.trainer.devices) == ("[-1, 1]", None, "auto")

    from simvq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(CONFIGS / "fmnist.yaml"), "trainer.max_stepz=3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "simvq train: error: trainer.max_stepz: unknown key (did you mean 'max_steps'?)\n"


def test_a_recipe_names_its_kind_and_the_image_schema_refuses_another():
    from simvq.train.config import load_recipe

    assert load_recipe(CONFIGS / "fmnist.yaml").recipe == "image"
    with pytest.raises(ValueError, match="^recipe: "):
        load_config(None, ["recipe=audio"])


# the prior's recipe is not a tokenizer's: loaded and checked by test_prior_train.py
NOT_TOKENIZER_RECIPES = {"prior.yaml"}


def test_every_recipe_loads_and_round_trips(tmp_path):
    from simvq.train.config import load_recipe

    kinds = set()
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.name in NOT_TOKENIZER_RECIPES:
            continue
        config = load_recipe(path)
        kinds.add(config.recipe)
        save_config(config, tmp_path)
        assert to_dict(read_run_config(tmp_path)) == to_dict(config), path.name
    assert kinds == {"image", "audio"}
    assert to_dict(load_config(None)) == to_dict(TokenizerConfig())


def test_cli_parses_train_and_eval():
    args = build_parser().parse_args(["train", "configs/fmnist.yaml", "quantizer.name=vq_ema", "quantizer.codebook_size=65536"])
    assert args.config == "configs/fmnist.yaml"
    assert args.overrides == ["quantizer.name=vq_ema", "quantizer.codebook_size=65536"]
    from simvq.train.commands import _split_flags

    args = build_parser().parse_args(["train", "configs/fmnist.yaml", "--out", "runs/y", "a.b=1", "--no-eval", "c.d=2"])
    _split_flags(args)
    assert (args.out, args.no_eval, args.overrides) == ("runs/y", True, ["a.b=1", "c.d=2"])
    args = build_parser().parse_args(["eval", "runs/x", "--fid-images", "0"])
    assert args.run == "runs/x" and args.fid_images == 0


def test_demo_recipe_ships_with_the_package_and_is_the_repository_file():
    from simvq.experiments.demo import DEMO_RECIPE

    config = load_config(DEMO_RECIPE)
    assert config.quantizer.codebook_size == 8192 and config.data.name == "fashion_mnist"
    repository_copy = Path(__file__).resolve().parents[1] / "configs" / "demo_fmnist.yaml"
    assert repository_copy.resolve() == Path(str(DEMO_RECIPE)).resolve()  # one file, linked
