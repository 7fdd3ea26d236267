"""DDP started from a Hydra app, single runs and multiruns alike.

Lightning's DDP launcher starts ranks > 0 by re-running the script with the parent's
command line plus `hydra.run.dir=<run dir pattern>`. Under `-m` that command line holds the
sweep lists, so every child starts a sweep of its own (new output dirs, ranks waiting for
peers that never come: a hang). And with `hydra.job.chdir=false` the run dir it passes is
not the job's. csft replaces that command: a child re-runs exactly its parent's job (the
job's own overrides, the job's output dir, run mode) and writes nothing of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def job_subprocess_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that starts rank `local_rank` of the current Hydra job, and its cwd."""
    from hydra.core.hydra_config import HydraConfig

    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    module = spec.name if spec is not None else "csft.train"
    command = [
        sys.executable,
        "-m",
        module,
        *hydra_cfg.overrides.task,
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
    return command, os.getcwd()


def use_job_subprocess_command() -> None:
    """Make Lightning's subprocess launchers start DDP ranks with `job_subprocess_command`.

    Both pytorch_lightning's launcher and lightning_fabric's (which it imports from) hold a
    reference to the command builder, so both are replaced.
    """
    from lightning_fabric.strategies.launchers import subprocess_script as fabric_launcher
    from pytorch_lightning.strategies.launchers import subprocess_script as pl_launcher

    fabric_launcher._hydra_subprocess_cmd = job_subprocess_command
    pl_launcher._hydra_subprocess_cmd = job_subprocess_command


def end_process_group() -> None:
    """Close the DDP process group once every rank got here (no-op without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def isolated_job() -> Iterator[None]:
    """Let the next job of a multirun start DDP afresh.

    Lightning leaves the process group open and sets LOCAL_RANK & co. in the launching
    process; the next job would then believe its ranks were started externally and wait for
    peers that never come. Close the group and restore those variables after each job.
    """
    before = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
