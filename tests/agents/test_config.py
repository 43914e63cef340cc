"""Configs as command lines: every field a documented flag, bad values named, resume rules, the
run-control fields both agents share (multi-process ones included)."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import pytest

from agents.a2c import A2CConfig, _resolve_config
from agents.config import (
    build_parser,
    config_from_dict,
    config_table,
    config_to_dict,
    field_docs,
    flag_name,
    load_config,
    parse_config,
    save_config,
)
from agents.runner import RunConfig, initialize_processes
from agents.tuner import TunerConfig
from tests.agents.conftest import tiny_config, tiny_tuner_config


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
    ("num_envs", 3, r"num_envs must be divisible by num_devices \* num_processes = 2"),
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


# ------------------------------------------------------------------------------------ RunConfig
CONFIGS = {"a2c": (A2CConfig, tiny_config), "tuner": (TunerConfig, tiny_tuner_config)}
MULTI = dict(coordinator="10.0.0.1:1234", num_processes=2, parallel="shard_map")


@pytest.fixture(params=sorted(CONFIGS))
def config_kind(request):
    return CONFIGS[request.param]


def test_both_agents_share_the_run_control_fields(config_kind):
    config_class, _ = config_kind
    assert issubclass(config_class, RunConfig)
    run_fields = [f.name for f in dataclasses.fields(RunConfig)]
    assert set(run_fields) <= {f.name for f in dataclasses.fields(config_class)}
    # the agent's own fields first, the run-control fields after them, every one documented
    assert list(field_docs(config_class))[-len(run_fields):] == run_fields
    assert field_docs(config_class)["coordinator"] == field_docs(RunConfig)["coordinator"]


def test_the_tuner_keeps_its_own_run_defaults():
    assert (TunerConfig().total_steps, TunerConfig().updates_per_call, TunerConfig().checkpoint_every) == (
        20_000_000, 20, 200)
    assert (A2CConfig().total_steps, A2CConfig().updates_per_call, A2CConfig().checkpoint_every) == (
        5_000_000, 50, 500)


def test_every_field_of_both_clis_is_documented_in_help(config_kind):
    config_class, _ = config_kind
    help_text = " ".join(build_parser(config_class).format_help().split())
    assert "Run control shared by every agent's config" in help_text  # the inherited flags' group
    for name, doc in field_docs(config_class).items():
        assert flag_name(name) in help_text
        assert " ".join(doc.split())[:40] in help_text


def test_inherited_fields_take_their_docs_from_the_declaring_class():
    @dataclasses.dataclass(frozen=True)
    class Child(Toy):
        """A child config.

        Attributes:
            extra: An extra field.
        """

        extra: int = 1
        steps: int = 20  # a new default, the doc stays Toy's

    docs = field_docs(Child)
    assert list(docs) == ["extra", "steps", "rate", "name", "sizes", "flag", "limit"]
    assert docs["steps"].startswith("How many steps") and docs["extra"] == "An extra field."
    assert parse_config(Child, [])[0].steps == 20


def test_a_multi_process_config_is_valid(config_kind):
    _, make = config_kind
    config = make(**MULTI, process_id=1, num_envs=16)
    assert config.total_devices == 2 and not config.single_device


@pytest.mark.parametrize("overrides, message", [
    (dict(MULTI, process_id=2), r"process_id must be an integer in \[0, num_processes=2\), got 2"),
    (dict(MULTI, process_id=-1), r"process_id must be an integer in \[0, num_processes=2\), got -1"),
    (dict(process_id=1), r"process_id must be an integer in \[0, num_processes=1\), got 1"),
    (dict(coordinator="10.0.0.1:1234"), r"coordinator must be given \(host:port\) exactly when num_processes > 1"),
    (dict(num_processes=2, parallel="shard_map"), "coordinator must be given .* exactly when num_processes > 1"),
    (dict(MULTI, coordinator="10.0.0.1"), "coordinator must be host:port with a port in"),
    (dict(MULTI, coordinator="10.0.0.1:99999"), "coordinator must be host:port with a port in"),
    (dict(MULTI, parallel="pmap"), r"parallel must be 'shard_map' with num_processes=2 \(jax.pmap runs in one "),
    (dict(MULTI, num_envs=15), r"num_envs must be divisible by num_devices \* num_processes = 2, got 15"),
    (dict(num_processes=0), "num_processes must be an integer >= 1, got 0"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(num_devices=True), "num_devices must be an integer >= 1, got True"),
    (dict(join_timeout_s=0), "join_timeout_s must be an integer >= 1, got 0"),
    (dict(heartbeat_timeout_s=2.5), "heartbeat_timeout_s must be an integer >= 1, got 2.5"),
])
def test_bad_run_control_values_are_rejected_by_name(config_kind, overrides, message):
    _, make = config_kind
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_a_config_saved_before_the_multi_process_fields_still_loads(config_kind, tmp_path):
    config_class, make = config_kind
    saved = config_to_dict(make(seed=3))
    for name in ("coordinator", "num_processes", "process_id"):
        del saved[name]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert load_config(config_class, tmp_path / "config.json") == make(seed=3)


def test_resume_takes_the_process_flags_from_the_command_line(tmp_path):
    saved = A2CConfig(total_steps=10_000, num_envs=16, out=str(tmp_path), **MULTI)
    save_config(saved, tmp_path / "config.json")
    resumed = _resolve_config(["--resume", str(tmp_path), "--coordinator", "10.0.0.2:99", "--process-id", "1"])
    assert resumed.parallel == "shard_map"  # from the saved config: the flags alone need not be valid
    assert (resumed.coordinator, resumed.process_id, resumed.num_processes) == ("10.0.0.2:99", 1, 2)
    with pytest.raises(SystemExit, match=r"num_processes=4 \(saved 2\)"):
        _resolve_config(["--resume", str(tmp_path), "--num-processes", "4", "--process-id", "1"])


def test_joining_processes_after_jax_started_is_a_clear_error_not_a_hang():
    jax.devices()  # JAX has started in this process
    config = tiny_config(**MULTI, num_envs=16, join_timeout_s=5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="must run before any JAX operation"):
        initialize_processes(config)
    assert time.monotonic() - start < 5


def test_one_process_needs_no_joining():
    initialize_processes(tiny_config())  # a no-op: no coordinator, nothing to join
