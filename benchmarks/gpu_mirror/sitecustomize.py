"""Make this Python look like the GPU machine's: the packages it lacks cannot be found.

`benchmarks/gpu_check.py --device cpu` puts this folder first on PYTHONPATH of every process it starts and
names, in BATCHSCORE_GPU_MIRROR_BLOCK, the top-level modules of the packages installed here that the GPU
machine does not have (`datasets`, `boto3`, `scipy`, ...). The CPU dry run then fails here, in `make test`,
whenever the job or the check comes to need one of them, instead of on the rare GPU lend.
"""

import os
import sys
from importlib.machinery import PathFinder

_BLOCKED = frozenset(name for name in os.environ.get("BATCHSCORE_GPU_MIRROR_BLOCK", "").split(",") if name)


class _PathFinderWithout:
    """The standard path finder, except that blocked top-level modules are not found: `import x` raises
    ModuleNotFoundError and `importlib.util.find_spec(x)` is None, as where x is not installed (libraries
    probe optional packages the second way)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.partition(".")[0] in _BLOCKED:
            return None
        return PathFinder.find_spec(fullname, path, target)

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()

    @staticmethod
    def find_distributions(*args, **kwargs):
        return PathFinder.find_distributions(*args, **kwargs)


if _BLOCKED:
    sys.meta_path[:] = [_PathFinderWithout if finder is PathFinder else finder for finder in sys.meta_path]
