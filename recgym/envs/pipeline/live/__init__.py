"""The live pipeline: a real DLRM ingestion pipeline over MovieLens, and RecGym-PipelineLive-v0.

Modules, from the data up (``docs/environments/pipeline_live.md`` explains the whole):

* :mod:`~recgym.envs.pipeline.live.data` — the MovieLens ratings file as line-aligned chunks;
* :mod:`~recgym.envs.pipeline.live.stages` — the six stages' work on one element;
* :mod:`~recgym.envs.pipeline.live.trainer` — the DLRM and the trainer process;
* :mod:`~recgym.envs.pipeline.live.runtime` — the processes (launcher, workers) and their shared memory;
* :mod:`~recgym.envs.pipeline.live.monitor` — what an interval's measurement holds and how it is taken;
* :mod:`~recgym.envs.pipeline.live.pipeline` — the controller (:class:`LivePipeline`);
* :mod:`~recgym.envs.pipeline.live.env` — the gymnasium env (:class:`LivePipelineEnv`).

The calibration that turns measurements of this pipeline into a simulator profile is
:mod:`recgym.envs.pipeline.calibrate`.
"""

# Convenience imports (documented in their own modules, hence no ``__all__`` here).
from recgym.envs.pipeline.live.data import LiveSource, load_source  # noqa: F401
from recgym.envs.pipeline.live.monitor import Measurement  # noqa: F401
from recgym.envs.pipeline.live.pipeline import (  # noqa: F401
    Allocation,
    LivePipeline,
    LivePipelineError,
    StageHangError,
    WorkerFailedError,
)
from recgym.envs.pipeline.live.runtime import Fault  # noqa: F401
from recgym.envs.pipeline.live.stages import StageSettings  # noqa: F401
from recgym.envs.pipeline.live.trainer import ModelSettings  # noqa: F401
