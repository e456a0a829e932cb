"""How the model uses a CPU: its threads, the allocator, int8 weights.

Threads: the CPUs this process may run on, not the machine's. torch starts one
thread per visible core, ignoring CPU affinity (taskset, Slurm --cpus-per-task,
Kubernetes cpusets) and cgroup CPU quotas: on a busy or CPU-limited host the
extra threads oversubscribe the cores (measured: a small matmul 30x slower with
2 threads on a busy 2-core machine than with 1).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from transformers import PreTrainedModel

T = TypeVar("T")


# The CPU flags of a native bf16 matrix multiply: AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake) or AMX
# (Intel Sapphire Rapids and later). Without them torch computes bf16 in software: measured 5.5x slower than fp32
# on an AVX2 EPYC (reference-shaped DistilBERT, 600 real rows).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """This CPU's feature flags (Linux); empty where unknown."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# oneDNN's instruction sets (ONEDNN_MAX_CPU_ISA) that multiply bf16 natively; a cap below them (AVX2, AVX512_CORE,
# ...) leaves bf16 to the software path whatever the CPU has.
ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512", "ALL")


def native_bf16() -> bool | None:
    """Does this CPU multiply bf16 natively, as torch's oneDNN may use it? None where its flags are unknown (not
    Linux)."""
    flags = cpu_flags()
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if capped and not capped.startswith(ONEDNN_BF16_ISAS):
        return False
    return any(f in flags for f in NATIVE_BF16_FLAGS) if flags else None


def allowed_cpus() -> int:
    """CPUs in this process's affinity mask, capped by its cgroup CPU quota (v2 or v1) when one is set."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota in CPUs (e.g. 1.5), or None when unlimited or unknown."""
    try:
        with open(os.path.join(root, "cpu.max")) as fh:  # cgroup v2: "<quota|max> <period>"
            max_quota, max_period = fh.read().split()[:2]
        return None if max_quota == "max" else int(max_quota) / int(max_period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):  # cgroup v1
        try:
            with open(os.path.join(root, folder, "cpu.cfs_quota_us")) as fh:
                quota = int(fh.read())
            with open(os.path.join(root, folder, "cpu.cfs_period_us")) as fh:
                period = int(fh.read())
            return None if quota <= 0 else quota / period
        except (OSError, ValueError):
            continue
    return None


def model_threads(requested: int | None) -> int:
    """--threads, else the allowed CPUs shared among the ranks on this machine (torchrun / accelerate)."""
    if requested:
        return requested
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return max(1, allowed_cpus() // max(1, local_ranks))


def thread_share(threads: int, tasks: int) -> int:
    """The torch threads each of `tasks` side-by-side tasks gets out of `threads` (at least one)."""
    return max(1, threads // tasks)


def side_by_side(tasks: Sequence[Callable[[], T]], threads: int) -> list[T]:
    """Run the tasks at once, each on its own thread with an equal share of the torch threads; their results in order.

    Why: a narrow model's ops spread poorly over cores (measured on 2-core machines: a 1-layer, 64-wide BERT
    ran 1.23x to 1.75x faster on 2 threads than on 1), so two such models, one core each, finish 10% to 30%
    sooner than one after the other on both cores; wide models come out even. Daemon threads: a signal that
    ends the job does not wait for a chunk's scoring to finish.
    """
    import threading

    import torch

    share = thread_share(threads, len(tasks))
    results: list = [None] * len(tasks)
    failures: list[BaseException] = []

    def run(number: int, task: Callable[[], T]) -> None:
        try:
            # torch reads the count once per thread, when the thread first runs a parallel op.
            torch.set_num_threads(share)
            results[number] = task()
        except BaseException as exc:  # re-raised in the caller's thread
            failures.append(exc)

    workers = [threading.Thread(target=run, args=item, daemon=True) for item in enumerate(tasks)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    torch.set_num_threads(threads)  # the workers' setting is partly process-wide (MKL): give the caller its own back
    if failures:
        raise failures[0]
    return results


def quantize_int8(model: PreTrainedModel, full_range: bool | None = None) -> PreTrainedModel:
    """Dynamic int8 quantization of the Linear layers: int8 weights, one scale per output channel; activations
    quantized on the fly, to 8 bits where the CPU has VNNI (`full_range` None: ask the CPU), else to 7.

    Approximate: on 2,000 rows of real mixed text with the offline MiniLM, labels agree with fp32 on 98.4%
    (94.5% with torch's defaults: one weight scale per layer and 7-bit activations); docs/models.md.
    """
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if full_range is None:
        full_range = vnni_cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice, once per layer
        # One scale per output row of each weight: a layer's few large rows no longer coarsen all the others.
        quantized = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    if full_range:
        for module in quantized.modules():
            if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
                # torch quantizes activations to 7 bits (reduce_range) so that AVX2's 16-bit pairwise sums
                # cannot saturate; VNNI sums into 32 bits, so all 8 bits are safe there. Layers of version < 4
                # call linear_dynamic without reduce_range.
                module.version = 3
    return quantized


def vnni_cpu() -> bool:
    """Whether this CPU has AVX-512 VNNI and fbgemm may use it, where int8 activations may use their full 8 bits.
    FBGEMM_ENABLE_INSTRUCTIONS set to an instruction set without VNNI (AVX2, AVX512) makes fbgemm sum in 16 bits
    as on an AVX2 CPU, where 8-bit activations would saturate."""
    import torch

    forced = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    if forced and forced not in ("AVX512_E1", "AVX512_E1_256"):
        return False
    probe = getattr(torch.cpu, "_is_vnni_supported", None)  # private in torch 2.x; absent: assume no
    return bool(probe and probe())


# glibc's upper limit for M_MMAP_THRESHOLD on 64-bit: a 1536-token batch's
# widest activation (1536 x 3072 floats, 19 MB) stays below it.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, from glibc's malloc.h


@functools.cache  # once per process: glibc's settings are process-wide, and dlopen + mallopt
# racing with other threads' allocations in a long-lived process (a test session) crashed once.
def reuse_large_buffers() -> bool:
    """Keep large freed activations in the heap for the next batch; True when glibc took the setting.

    Every batch has a new shape, so its activations are new allocations of
    megabytes. Above glibc's mmap threshold each one is mapped, page-faulted
    and zeroed by the kernel, then unmapped when freed: measured at about 5% of
    an fp32 forward pass and 8% of an int8 one on 2 cores. Raising the mmap and
    trim thresholds lets freed buffers be reused instead, as jemalloc or
    tcmalloc (which PyTorch's CPU tuning guide suggests preloading) would.
    Thresholds the user set (MALLOC_*_THRESHOLD_, GLIBC_TUNABLES) win.
    """
    import ctypes
    import platform

    user_set = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & os.environ.keys() or "malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
    if user_set or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
