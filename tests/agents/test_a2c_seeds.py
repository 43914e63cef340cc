"""Several A2C seeds trained at once and summarised against the baselines (benchmarks/a2c_seeds.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from agents.a2c import make_train
from agents.policy import AgentPolicy
from benchmarks import a2c_seeds
from tests.agents.conftest import tiny_config


def _leaves(tree):
    return [np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf)
            for leaf in jax.tree_util.tree_leaves(tree)]


def test_blocked_training_equals_one_vmapped_call_and_each_single_seed(synthetic_params, tmp_path):
    training = make_train(tiny_config(), synthetic_params)
    seeds = [3, 7]
    states, seconds = a2c_seeds.train_seeds(training, seeds, tmp_path / "checkpoints", block=4)
    assert seconds > 0 and np.asarray(states.learner.update).tolist() == [training.config.num_updates] * 2
    whole, _ = jax.jit(jax.vmap(training))(a2c_seeds.seed_keys(seeds))
    for blocked, once in zip(_leaves(states.learner.params), _leaves(whole.learner.params), strict=True):
        np.testing.assert_allclose(blocked, once, rtol=1e-5, atol=1e-6)
    single, _ = jax.jit(training)(jax.random.key(7))  # seed 7 alone, as `python -m agents.a2c --seed 7`
    for stacked, alone in zip(_leaves(states.learner.params), _leaves(single.learner.params), strict=True):
        np.testing.assert_allclose(stacked[1], alone, rtol=1e-4, atol=1e-5)
    # the checkpoint holds both seeds, each loadable on its own
    policy = AgentPolicy.from_checkpoint(tmp_path / "checkpoints", seed_index=1)
    for loaded, trained in zip(_leaves(policy.params), _leaves(states.learner.params), strict=True):
        np.testing.assert_array_equal(loaded, trained[1])


def test_resume_after_the_last_block_changes_nothing(synthetic_params, tmp_path):
    training = make_train(tiny_config(), synthetic_params)
    first, _ = a2c_seeds.train_seeds(training, [0, 1], tmp_path / "checkpoints", block=2)
    again, seconds = a2c_seeds.train_seeds(training, [0, 1], tmp_path / "checkpoints", block=2, resume=True)
    assert seconds == 0.0  # every update was already done
    for a, b in zip(_leaves(first), _leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_with_another_config_or_other_seeds_is_refused_and_keeps_the_checkpoint(synthetic_params, tmp_path):
    folder = tmp_path / "checkpoints"
    training = make_train(tiny_config(total_steps=2 * tiny_config().steps_per_update), synthetic_params)
    first, _ = a2c_seeds.train_seeds(training, [0, 1], folder, block=1)
    longer = make_train(tiny_config(gae_lambda=0.5), synthetic_params)  # a scalar: the restore alone would pass
    with pytest.raises(a2c_seeds.ResumeMismatch, match=r"gae_lambda=0\.5 \(checkpoint 0\.95\).*total_steps="):
        a2c_seeds.train_seeds(longer, [0, 1], folder, block=1, resume=True)
    with pytest.raises(a2c_seeds.ResumeMismatch, match=r"seeds \[0, 1\], asked for \[0, 2\]"):
        a2c_seeds.train_seeds(training, [0, 2], folder, block=1, resume=True)
    again, seconds = a2c_seeds.train_seeds(training, [0, 1], folder, block=1, resume=True)  # untouched
    assert seconds == 0.0
    for a, b in zip(_leaves(first), _leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_where_a_run_reports_may_change_on_resume():
    saved = {"seeds": [0], "config": {"gamma": 0.99, "out": "a", "progress": True, "tensorboard": False}}
    a2c_seeds.check_resumable(saved, {"seeds": [0], "config": {"gamma": 0.99, "out": "b", "progress": False,
                                                                "tensorboard": True}})
    with pytest.raises(a2c_seeds.ResumeMismatch, match="gamma=0.9 "):
        a2c_seeds.check_resumable(saved, {"seeds": [0], "config": {"gamma": 0.9, "out": "a"}})


def test_resume_mismatch_on_the_command_line_is_a_usage_error(monkeypatch, tmp_path, capsys):
    def refusing_train_world(*args):
        raise a2c_seeds.ResumeMismatch("--resume: the run asked for differs from the checkpoint's: gamma=0.9")

    monkeypatch.setattr(a2c_seeds, "train_world", refusing_train_world)
    with pytest.raises(SystemExit) as exit_:
        a2c_seeds.main(["train", "--world", "dynamic", "--seeds", "0", "--out", str(tmp_path), "--resume"])
    assert exit_.value.code == 2 and "gamma=0.9" in capsys.readouterr().err


def test_several_devices_are_refused(synthetic_params):
    training = make_train(tiny_config(), synthetic_params)
    object.__setattr__(training, "config", tiny_config(num_devices=2))
    with pytest.raises(ValueError, match="num_devices must be 1"):
        a2c_seeds.train_seeds(training, [0], None, block=2)


def _returns(ratios: list[float], n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Baselines with known means and agent seeds that are exact multiples of the best one."""
    rng = np.random.default_rng(seed)
    best = rng.uniform(50, 100, n)
    returns = {name: best * scale for name, scale in zip(a2c_seeds.NON_PRIVILEGED, [0.5, 0.9, 0.3, 1.0, 0.6, 0.95])}
    returns["oracle-greedy"] = best * 1.5
    returns["boredom-aware"] = best * 2.0
    returns.update({f"a2c seed {s}": best * r for s, r in enumerate(ratios)})
    return returns


def test_summary_finds_the_best_baseline_and_the_ratios_per_seed_and_over_seeds():
    ratios = [1.1, 1.2, 1.3]
    summary = a2c_seeds.summarise(_returns(ratios), slice(None))
    assert summary["best"] == "matrix factorization" and summary["episodes"] == 50
    per_seed = summary["per_seed"]["matrix factorization"]
    for s, r in enumerate(ratios):
        assert per_seed[f"a2c seed {s}"][0] == pytest.approx(r)
        assert per_seed[f"a2c seed {s}"][1] == pytest.approx(r)  # exact multiples: no spread over episodes
    mean, low, high = summary["over_seeds"]["matrix factorization"]
    # t(0.975, 2) = 4.303, sd of (1.1, 1.2, 1.3) = 0.1
    assert mean == pytest.approx(1.2) and high - mean == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)
    assert low == pytest.approx(2 * mean - high)
    assert summary["pooled"]["matrix factorization"][0] == pytest.approx(1.2)
    assert summary["over_seeds"]["oracle-greedy"][0] == pytest.approx(1.2 / 1.5)
    assert summary["over_seeds"]["boredom-aware"][0] == pytest.approx(1.2 / 2.0)
    assert summary["all_baselines_pooled"]["most-popular"][0] == pytest.approx(1.2 / 0.5)


def test_summary_scores_only_the_episodes_asked_for():
    returns = _returns([1.0, 1.0])
    returns["a2c seed 0"] = returns["a2c seed 0"].copy()
    returns["a2c seed 0"][:10] *= 3.0  # only the first ten episodes differ
    held_out = a2c_seeds.summarise(returns, slice(10, None))
    assert held_out["episodes"] == 40
    assert held_out["per_seed"]["matrix factorization"]["a2c seed 0"][0] == pytest.approx(1.0)
    assert a2c_seeds.summarise(returns, slice(None))["per_seed"]["matrix factorization"]["a2c seed 0"][0] > 1.0


def test_one_seed_has_no_interval_over_seeds():
    mean, low, high = a2c_seeds.summarise(_returns([1.1]), slice(None))["over_seeds"]["matrix factorization"]
    assert mean == pytest.approx(1.1) and np.isnan(low) and np.isnan(high)


def test_report_prints_every_evaluated_world_on_all_and_held_out_episodes(tmp_path):
    import json

    from benchmarks.experiments.movielens_agent import world_folder

    returns = _returns([1.1, 1.3])
    result = {"all": a2c_seeds.summarise(returns, slice(None)), "held_out": a2c_seeds.summarise(returns, slice(20, None))}
    folder = world_folder(tmp_path, "static")
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps(result))
    text = a2c_seeds.report(tmp_path, ["dynamic", "static"])  # dynamic was not evaluated: left out
    rows = [line for line in text.splitlines() if line.startswith("| static")]
    assert len(rows) == 2 + 4  # summary rows (all, held out), then one row per seed and part
    assert "| 50 (all) | matrix factorization" in rows[0] and "**1.200 [" in rows[0]
    assert "| 30 (held out) |" in rows[1] and "dynamic" not in text
    assert "| static | 50 (all) | 1 |" in text and "1.300 [1.300, 1.300]" in text


def test_further_train_flags_are_a2c_config_overrides(monkeypatch, tmp_path):
    assert a2c_seeds.config_overrides([]) == {}
    assert a2c_seeds.config_overrides(["--rollout-steps", "8", "--learning-rate", "1e-3"]) == {
        "learning_rate": 1e-3, "rollout_steps": 8}
    seen = {}

    def fake_train_world(world, seeds, out_dir, total_steps, block, resume, memory_decays, overrides):
        seen.update(world=world, seeds=seeds, overrides=overrides)
        return {"world": world}

    monkeypatch.setattr(a2c_seeds, "train_world", fake_train_world)
    monkeypatch.setattr(a2c_seeds, "world_folder", lambda out, world: tmp_path)
    assert a2c_seeds.main(["train", "--world", "dynamic", "--seeds", "0", "1", "--out", str(tmp_path),
                           "--entropy-coef", "0.003"]) == 0
    assert seen == {"world": "dynamic", "seeds": [0, 1], "overrides": {"entropy_coef": 0.003}}


@pytest.mark.parametrize("flags", [["--slate-size", "3"], ["--num-devices", "2"], ["--env", "RecGym-Pipeline-v0"]])
def test_overriding_what_the_run_sets_itself_is_refused(flags):
    with pytest.raises(ValueError, match="set by the seeds run itself"):
        a2c_seeds.config_overrides(flags)


def test_unknown_or_misplaced_flags_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        a2c_seeds.config_overrides(["--no-such-flag", "1"])
    with pytest.raises(SystemExit):
        a2c_seeds.main(["report", "--out", str(tmp_path), "--rollout-steps", "8"])
    with pytest.raises(SystemExit):  # a value the config rejects
        a2c_seeds.config_overrides(["--rollout-steps", "eight"])
