"""wyckoff_hf.training.arguments on its own: the option checks, the --config overrides and the column checks,
called directly (no dataset is loaded and no model built)."""

import json
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import HfArgumentParser

from wyckoff_hf.training.arguments import (
    RECIPE_CONFIG,
    TASK_CONFIG_FIELDS,
    DataArguments,
    ModelArguments,
    TaskArguments,
    TrainArguments,
    check_arguments,
    check_columns,
    column_list,
    config_overrides,
)

REPO = Path(__file__).resolve().parents[1]
PARSER = HfArgumentParser((DataArguments, TaskArguments, ModelArguments, TrainArguments))


def parse(*argv: str) -> tuple[DataArguments, TaskArguments, ModelArguments, TrainArguments]:
    return PARSER.parse_args_into_dataclasses(list(argv))


def check(*argv: str) -> None:
    data_args, task_args, _, args = parse(*argv)
    check_arguments(PARSER, data_args, task_args, args)


def test_defaults_and_valid_combinations_pass_the_checks():
    check()
    check("--task", "property", "--target", "band_gap", "--classification-threshold", "0.0")
    check("--task", "property", "--target", "band_gap,formation_energy_per_atom", "--max-train-rows", "1")
    check("--condition", "band_gap,e_above_hull", "--augment-labellings", "--save-total-limit", "1")
    check("--push-to-hub", "--hub-model-id", "org/name", "--dataloader-num-workers", "0",
          "--calibration-stop-rounds", "0")


@pytest.mark.parametrize(("options", "message"), [
    (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps must be at least 1, got 0"),
    (["--dataloader-num-workers", "-1"], "--dataloader-num-workers must be at least 0, got -1"),
    (["--ddp-timeout", "0"], "--ddp-timeout must be at least 1, got 0"),
    (["--max-validation-rows", "0"], "--max-validation-rows must be at least 1, got 0"),
    (["--learning-rate", "0"], "--learning-rate must be positive, got 0.0"),
    (["--max-train-minutes", "-1"], "--max-train-minutes must be positive, got -1.0"),
    (["--condition", "band_gap,band_gap"], "--condition 'band_gap,band_gap': give comma-separated column names, "
                                           "each once"),
    (["--task", "property", "--target", "a,"], "--target 'a,': give comma-separated column names, each once"),
])
def test_a_bad_value_is_refused_with_argparses_one_line_error(options, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check(*options)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")


def test_comma_separated_columns_become_lists():
    assert column_list(None) == []
    assert column_list(" band_gap , e_above_hull") == ["band_gap", "e_above_hull"]
    _, task_args, _, _ = parse("--task", "property", "--target", "band_gap,formation_energy_per_atom")
    assert task_args.targets == ["band_gap", "formation_energy_per_atom"] and task_args.conditions == []


def test_without_config_the_generator_gets_the_recipe_and_init_from_keeps_its_own():
    parser = HfArgumentParser(ModelArguments)
    recipe = config_overrides(parser, ModelArguments())
    assert recipe == RECIPE_CONFIG and recipe is not RECIPE_CONFIG
    shipped = json.loads((REPO / "wyckoff_hf" / "pretrained" / "mp20-biternary" / "config.json").read_text())
    assert {key: shipped[key] for key in recipe} == recipe  # the defaults reproduce the shipped generator's shape
    assert config_overrides(parser, ModelArguments(init_from="runs/x")) == {}


def test_a_config_file_replaces_the_recipe_but_may_not_set_what_the_task_derives(tmp_path, capsys):
    parser = HfArgumentParser(ModelArguments)
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"num_hidden_layers": 2}))
    assert config_overrides(parser, ModelArguments(config=str(config))) == {"num_hidden_layers": 2}
    for derived in TASK_CONFIG_FIELDS:
        config.write_text(json.dumps({"num_hidden_layers": 2, derived: None}))
        with pytest.raises(SystemExit):
            config_overrides(parser, ModelArguments(config=str(config)))
        assert f"{derived} come from --task, --target or --condition" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_overrides(parser, ModelArguments(config=str(config), init_from="runs/x"))
    assert "--init-from takes the architecture of the model it starts from" in capsys.readouterr().err


def test_columns_must_exist_and_hold_numbers(capsys):
    parser = HfArgumentParser(TaskArguments)
    split = Dataset.from_dict({"band_gap": [0.0, 1.5], "count": [1, 2], "metal": [True, False], "formula": ["a", "b"]})
    check_columns(parser, "--target", ["band_gap", "count", "metal"], split)
    for name, problem in (("formula", "is not a numeric column"), ("bandgap", "no such column")):
        with pytest.raises(SystemExit):
            check_columns(parser, "--condition", [name], split)
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            f"--condition {name}: {problem} in the dataset (numeric columns: band_gap, count, metal)")
