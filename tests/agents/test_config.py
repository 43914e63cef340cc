"""Configs as command lines: every field a documented flag, bad values named, resume rules."""

from __future__ import annotations

import dataclasses

import pytest

from agents.a2c import A2CConfig, _resolve_config
from agents.config import (
    build_parser,
    config_from_dict,
    config_table,
    config_to_dict,
    field_docs,
    load_config,
    parse_config,
    save_config,
)


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy config.

    Attributes:
        steps: How many steps, a long description that goes on
            over a second line.
        rate: A rate.
        name: A name.
        sizes: Some sizes.
        flag: A switch.
        limit: An optional limit.
    """

    steps: int = 10
    rate: float = 0.5
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    flag: bool = True
    limit: int | None = None


def test_field_docs_come_from_the_attributes_section():
    docs = field_docs(Toy)
    assert list(docs) == ["steps", "rate", "name", "sizes", "flag", "limit"]
    assert docs["steps"] == "How many steps, a long description that goes on over a second line."


def test_a_field_without_a_doc_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        """Half documented.

        Attributes:
            a: Documented.
        """

        a: int = 1
        b: int = 2

    with pytest.raises(TypeError, match=r"fields without a doc.*\['b'\]"):
        field_docs(Undocumented)


def test_every_a2c_field_is_a_flag_whose_help_is_its_doc():
    help_text = " ".join(build_parser(A2CConfig).format_help().split())
    for name, doc in field_docs(A2CConfig).items():
        assert "--" + name.replace("_", "-") in help_text
        assert " ".join(doc.split())[:40] in help_text


def test_flags_parse_to_typed_values():
    config, given = parse_config(Toy, ["--steps", "20_000_000", "--sizes", "64", "64", "--no-flag", "--limit", "none"])
    assert config == Toy(steps=20_000_000, sizes=(64, 64), flag=False, limit=None)
    assert given == {"steps", "sizes", "flag", "limit"}
    assert parse_config(Toy, ["--limit", "7"])[0].limit == 7


def test_a_bad_value_exits_with_the_field_and_value(capsys):
    with pytest.raises(SystemExit):
        parse_config(A2CConfig, ["--gamma", "1.5"])
    assert "gamma must be in [0, 1], got 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("num_envs", 3, "num_envs must be divisible by num_devices=2"),
    ("optimizer", "sgd", "optimizer must be one of"),
    ("hidden_sizes", (), "hidden_sizes must be one or more integers"),
    ("checkpoint_every", 7, "checkpoint_every must be a multiple of updates_per_call"),
    ("learning_rate", float("nan"), "learning_rate must be finite and > 0"),
])
def test_a2c_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        A2CConfig(**{"num_devices": 2, field: value})


def test_json_round_trip(tmp_path):
    config = A2CConfig(hidden_sizes=(8, 4), seed=3)
    save_config(config, tmp_path / "config.json")
    assert load_config(A2CConfig, tmp_path / "config.json") == config
    assert config_from_dict(A2CConfig, config_to_dict(config)) == config
    with pytest.raises(TypeError, match="unknown A2CConfig field"):
        config_from_dict(A2CConfig, {"nope": 1})


def test_config_table_lists_every_flag_with_its_default():
    table = config_table(Toy)
    assert "| `--sizes` | `1 2` | Some sizes. |" in table
    assert table.count("\n") == 2 + len(dataclasses.fields(Toy)) - 1


def test_resume_uses_the_saved_config_and_refuses_conflicting_flags(tmp_path):
    saved = A2CConfig(seed=4, total_steps=10_000, num_envs=16, out=str(tmp_path))
    save_config(saved, tmp_path / "config.json")
    resumed = _resolve_config(["--resume", str(tmp_path), "--no-progress"])
    assert resumed.seed == 4 and resumed.total_steps == 10_000 and resumed.resume == str(tmp_path)
    assert resumed.progress is False
    assert _resolve_config(["--resume", str(tmp_path), "--seed", "4"]).seed == 4  # agreeing flags are fine
    with pytest.raises(SystemExit, match=r"seed=5 \(saved 4\)"):
        _resolve_config(["--resume", str(tmp_path), "--seed", "5"])
