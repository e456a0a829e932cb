"""Command line: a thin Click layer over the Python API (config.build_config, job.run_job, output, report,
cache). Heavy libraries (torch, transformers, datasets) are imported only inside the commands, so
`batchscore --help` answers at once."""

from . import inspect, run, tools  # noqa: F401  (each registers its commands on `main`)
from .shell import main

__all__ = ["main"]
