"""The one table of gymnasium registrations for recgym (one line of comment per id).

No id registers ``max_episode_steps``: every functional core truncates itself at its params'
``max_episode_steps`` (so a preset or a keyword that changes the limit cannot disagree with a
``TimeLimit`` wrapper, and ``gym.make`` and ``gym.make_vec`` give the same episodes), and the made
env's ``spec.max_episode_steps`` reports that limit. ``gym.make(id, max_episode_steps=n)`` still
adds gymnasium's ``TimeLimit`` for an earlier cut.
"""

from gymnasium.envs.registration import register, registry


def _register(env_id: str, **kwargs) -> None:
    # Re-importing recgym (e.g. under importlib.reload) must not warn about re-registration.
    if env_id not in registry:
        register(id=env_id, **kwargs)


# (entries are added by the environment modules' issues; keep one comment line per id)

# MovieLens user simulator, full dynamic world: habit (addiction), satiation (boredom), session budget
_register("RecGym-MovieLens-v0", entry_point="recgym.envs.movielens.env:MovieLensEnv",
          vector_entry_point="recgym.envs.movielens.env:MovieLensVectorEnv",
          kwargs={"preset": "dynamic"})
# MovieLens static world: no habit, no satiation, fixed length (myopic greedy is optimal)
_register("RecGym-MovieLensStatic-v0", entry_point="recgym.envs.movielens.env:MovieLensEnv",
          vector_entry_point="recgym.envs.movielens.env:MovieLensVectorEnv",
          kwargs={"preset": "static"})
# ML-Fairness-Gym-compatible MovieLens: deterministic clip(dot), liked genres x (1 + delta), 50 steps
_register("RecGym-MovieLensFairness-v0", entry_point="recgym.envs.movielens.env:MovieLensEnv",
          vector_entry_point="recgym.envs.movielens.env:MovieLensVectorEnv",
          kwargs={"preset": "fairness"})
# InTune-style DLRM ingestion-pipeline tuning (cores per stage, batch, prefetch; scenario=, action_mode=, track_optimum=)
_register(
    "RecGym-Pipeline-v0",
    entry_point="recgym.envs.pipeline.env:env_entry_point",
    vector_entry_point="recgym.envs.pipeline.env:vector_env_entry_point",
)
