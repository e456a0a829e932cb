"""Load the tokenizer and classifier once, place them with accelerate, run batches."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .errors import BatchscoreError, ConfigError, ModelError, first_line

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Where the precision asks for 16-bit weights, the weights are loaded in it; no autocast.
WEIGHT_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass
class LoadedModel:
    model: PreTrainedModel  # placed by accelerate, int8-quantized under --precision int8
    tokenizer: PreTrainedTokenizerBase
    accelerator: Accelerator
    model_id: str
    revision: str | None  # resolved commit when the Hub told us, else what was asked
    labels: list[str]  # id2label in id order
    max_length: int
    precision: str  # fp32 | bf16 | fp16, after resolving auto
    # On a GPU, for models that build their masks through transformers.masking_utils: run_batch settles on the
    # host what that code would ask the GPU (whether a batch has padding), one wait per batch fewer.
    mask_on_host: bool = False

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


class TokenBatch(Protocol):
    """What chunk_logits reads of a batch: its rows' positions in the chunk and their padded token tensors."""

    @property
    def positions(self) -> np.ndarray: ...

    @property
    def inputs(self) -> dict[str, torch.Tensor]: ...


def resolve_precision(precision: str, device_type: str) -> str:
    import torch

    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # on CPUs without bf16 matrix units, bf16 is slower than fp32 for these models


def model_max_length(tokenizer: PreTrainedTokenizerBase, config: PreTrainedConfig) -> int:
    # Tokenizers without a recorded limit report a huge sentinel; the position
    # table is the real limit then.
    limits = [
        n
        for n in (tokenizer.model_max_length, getattr(config, "max_position_embeddings", None))
        if isinstance(n, int) and 0 < n < 1_000_000
    ]
    return min(limits) if limits else 512


def load_model(
    model_id: str,
    revision: str | None,
    precision: str = "auto",
    max_length: int | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    on_config: Callable[[PreTrainedConfig], None] | None = None,
) -> LoadedModel:
    """Load once; safetensors only and no repo code unless the caller says it trusts the model.

    `on_config` sees the model's config once it is read and checked, before the tokenizer and weights load.
    """
    import torch
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Our own progress bar and summary line speak for the job; cron logs need no weight-loading bars.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # retry chatter when the Hub is unreachable
    local = os.path.isdir(model_id)
    if not local and (model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").replace("/", "", 1)):
        raise ModelError(f"Model directory '{model_id}' not found; check --model.")
    with _reading(model_id, local, "config.json"):
        config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
        architectures = list(config.architectures or [])
        labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"Model '{model_id}' is not a sequence classifier (architectures: "
            f"{', '.join(map(str, architectures or ['none']))}); pass a model fine-tuned for text classification."
        )
    if on_config is not None:
        on_config(config)
    weights = _weight_files(model_id) if local else []
    if local and not weights:
        raise ModelError(
            f"Model folder '{model_id}' has no weights (model.safetensors); copy the weights into it, "
            "or pass --model naming a complete model folder."
        )
    if local and not allow_pickle and not any(_is_safetensors(name) for name in weights):
        raise ModelError(_PICKLE_ONLY.format(model_id))
    with _reading(model_id, local, "tokenizer files (tokenizer.json, tokenizer_config.json)"):
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    # Both before the weights load: a bad pairing fails in seconds, not after minutes.
    _check_padding(tokenizer, config, model_id)
    _check_max_length(tokenizer, max_length, model_id)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(precision, device_type)
    if device_type == "cpu" and precision == "fp16":
        raise ConfigError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU.")
    if device_type != "cpu" and precision == "int8":
        raise ConfigError("--precision int8 is for CPUs; use bf16 or fp16 on a GPU.")
    # Pickled weights (.bin) can execute code when loaded: safetensors only unless allowed.
    use_safetensors = None if allow_pickle else True
    read = [n for n in weights if _is_safetensors(n)] or weights  # transformers takes safetensors when both
    with _reading(
        model_id, local, f"weights ({', '.join(read) or 'model.safetensors'})", safetensors_only=not allow_pickle
    ):
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_id,
            revision=revision,
            config=config,
            output_loading_info=True,
            # bf16/fp16 weights loaded as such, as pipeline(dtype=...) does: half the memory and
            # bandwidth, and no cast of every weight in every matmul as autocast over fp32 would do.
            dtype=getattr(torch, WEIGHT_DTYPES.get(precision, "float32")),
            use_safetensors=use_safetensors,
            trust_remote_code=trust_remote_code,
        )
    if info.get("missing_keys"):
        # A classification head filled with random weights scores noise: refuse.
        raise ModelError(
            f"Model '{model_id}' lacks trained weights for {len(info['missing_keys'])} parameters "
            f"(e.g. {sorted(info['missing_keys'])[0]}); pass a fine-tuned classifier."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"Model '{model_id}' has no fast (Rust) tokenizer; batchscore needs tokenizer.json.")

    accelerator = _accelerator()
    if device_type == "cpu":
        reuse_large_buffers()
    model.eval()
    if precision == "int8":
        model = quantize_int8(model)
    # evaluation_mode: place the model without wrapping it in DDP.
    model = accelerator.prepare_model(model, evaluation_mode=True)
    limit = model_max_length(tokenizer, config)
    if max_length and max_length > limit and accelerator.is_main_process:
        # Longer inputs than the position table would index past it: the limit holds, and the user is told.
        log.warning(
            f"--max-length {max_length} is more than model '{model_id}' takes; texts are truncated to its "
            f"limit of {limit} tokens (pass --max-length {limit} or less to silence this)."
        )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        accelerator=accelerator,
        model_id=model_id,
        revision=getattr(config, "_commit_hash", None) or revision,
        labels=labels,
        max_length=min(max_length, limit) if max_length else limit,
        precision=precision,
        mask_on_host=device_type == "cuda" and takes_prepared_masks(model),
    )


# Encoders whose transformers code builds the attention mask with masking_utils.create_bidirectional_mask and
# nothing more (no sliding window as ModernBERT has, no relative-position bias in the mask as MPNet's), so a 4-D
# mask handed over is used exactly as the one transformers would build. Each is checked in tests/test_gpu_path.py.
PREPARED_MASK_MODELS = frozenset({"distilbert", "bert", "roberta", "xlm-roberta"})


def takes_prepared_masks(model: PreTrainedModel) -> bool:
    """True for the encoders above under SDPA, as transformers' own classes: their mask code passes a mask that
    is already 4-D through unchecked. Every other model (decoders, custom code, other mask rules) gets the 2-D
    padding mask, as the pipeline gives it."""
    import sys

    config = model.config
    module = sys.modules.get(type(model).__module__)
    return (
        getattr(config, "model_type", None) in PREPARED_MASK_MODELS
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "is_encoder_decoder", False)
        and hasattr(module, "create_bidirectional_mask")
    )


def mask_decided_on_host(host: dict[str, torch.Tensor], moved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The device inputs with the attention mask transformers' SDPA path would build, decided from the host copy.

    transformers asks every batch's mask `mask.all()` on the device (no padding: no mask, so SDPA may take its
    flash kernel): a truth value read from the GPU, so the host waits for all queued work once per batch. The
    host copy answers the same question for free: no padding, no mask; padding, the mask as [rows, 1, 1, length]
    booleans (True: attend), which broadcast over heads and queries as transformers' own 4-D mask does.
    """
    mask = host.get("attention_mask")
    if mask is None:
        return moved
    decided = {k: v for k, v in moved.items() if k != "attention_mask"}
    if not bool(mask.all()):
        decided["attention_mask"] = moved["attention_mask"][:, None, None, :].bool()
    return decided


def model_head(model: str | None, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """The score function of a model's head (postprocess.score_function), from its config.json alone: for a
    caller that names the result columns before any process loads the weights (Spark's driver)."""
    from transformers import AutoConfig

    from .config import model_and_revision
    from .postprocess import score_function

    model_id, revision = model_and_revision(model, revision)
    with _reading(model_id, os.path.isdir(model_id), "config.json"):
        config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    return score_function(config)


@contextlib.contextmanager
def _reading(model_id: str, local: bool, files: str, safetensors_only: bool = False) -> Iterator[None]:
    """Whatever transformers raises while it reads a model's files is a ModelError naming the files and the fix.

    Damaged files fail deep inside transformers, safetensors, tokenizers or
    torch.load with any exception type (SafetensorError, UnpicklingError,
    EOFError, KeyError, AttributeError on a config.json of the wrong shape, ...):
    mapped here, once, for the three reads, rather than type by type.
    """
    try:
        yield
    except BatchscoreError:
        raise
    except Exception as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"Model '{model_id}' needs to run its own Python code; pass --trust-remote-code "
                "only if you trust its authors."
            ) from None
        if not local and isinstance(exc, (OSError, ValueError)):
            if safetensors_only and "safetensors" in str(exc).lower():
                raise ModelError(_PICKLE_ONLY.format(model_id)) from None
            raise ModelError(_not_found(model_id, exc)) from None  # not on the Hub, no network, gated
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        if local:
            raise ModelError(
                f"Model folder '{model_id}': cannot read its {files} ({reason}); the files are damaged "
                "or incomplete: copy or download the model again (the offline model: rebuild it "
                "with batchscore build-model)."
            ) from None
        raise ModelError(
            f"Model '{model_id}': cannot read its {files} from the Hugging Face cache ({reason}); "
            "delete the model's folder from the cache (huggingface-cli delete-cache) and run again "
            "to download it anew."
        ) from None


def _check_padding(tokenizer: PreTrainedTokenizerBase, config: PreTrainedConfig, model_id: str) -> None:
    """Batches are padded: a tokenizer without a pad token borrows the model's own `pad_token_id`, or is refused.

    The model's id is the one it was trained to ignore (RoBERTa numbers positions
    around it, GPT-style classifiers find each row's last token by it); padded
    positions are masked out either way, so scores do not change.
    """
    if tokenizer.pad_token_id is not None:
        return
    pad_id = getattr(config, "pad_token_id", None)
    token = (
        tokenizer.convert_ids_to_tokens(pad_id) if isinstance(pad_id, int) and 0 <= pad_id < len(tokenizer) else None
    )
    if token is not None:
        tokenizer.pad_token = token
        if tokenizer.pad_token_id == pad_id:
            return
    raise ModelError(
        f"Model '{model_id}' has no padding token (none in its tokenizer, no usable pad_token_id in "
        "its config.json); set pad_token_id in its config.json (GPT-style models use their "
        "eos_token_id) or pad_token in its tokenizer_config.json."
    )


def _check_max_length(tokenizer: PreTrainedTokenizerBase, max_length: int | None, model_id: str) -> None:
    special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length is not None and max_length <= special:
        # The tokenizer cannot truncate below its special tokens: it would leave long texts whole.
        raise ConfigError(
            f"--max-length {max_length} leaves no room for text: the tokenizer of '{model_id}' adds "
            f"{special} special tokens to every text; use --max-length {special + 1} or more."
        )


_PICKLE_ONLY = (
    "Model '{}' has weights only as pickle (.bin), which can run code when loaded; pass --allow-pickle "
    "only if you trust it, or convert it to safetensors."
)


def _weight_files(path: str) -> list[str]:
    """The weight files in a model folder, sorted: safetensors (and their index) and pickles."""
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise ModelError(
            f"Cannot list model folder '{path}' ({exc.strerror or exc}); check --model and the folder's permissions."
        ) from None
    return sorted(n for n in names if _is_safetensors(n) or n.endswith((".bin", ".pt", ".pth", ".ckpt")))


def weights_bytes(model_id: str) -> int:
    """What a local model's weight files take on disk (safetensors when there are any); 0 for a Hub model,
    whose files are not known before they are fetched."""
    if not os.path.isdir(model_id):
        return 0
    names = _weight_files(model_id)
    chosen = [n for n in names if n.endswith(".safetensors")] or names
    return sum(os.path.getsize(os.path.join(model_id, n)) for n in chosen)


def free_memory_bytes(device: str) -> int | None:
    """Free memory where the weights will live: the GPU's, else the host's available memory; None if unknown."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_free_memory(models: list[tuple[str | None, str | None]]) -> None:
    """Several models in one run are all held at once: refuse up front, before any loads, when their weights
    together (as stored; bf16 on a GPU takes half of fp32 files) would not fit the device's free memory."""
    import torch

    from .config import model_and_revision

    total = sum(weights_bytes(model_and_revision(model, revision)[0]) for model, revision in models)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    free = free_memory_bytes(device)
    if free is not None and total > free:
        raise ModelError(
            f"The {len(models)} models' weights take {total / 2**30:.2f} GiB, more than the {free / 2**30:.2f} GiB "
            f"of free memory on {device}; score them in separate runs, or on a machine with more memory."
        )


def _is_safetensors(name: str) -> bool:
    return name.endswith(".safetensors") or name == "model.safetensors.index.json"


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
    """Whether this CPU has AVX-512 VNNI, where int8 activations may use their full 8 bits."""
    import torch

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


def _accelerator() -> Accelerator:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Under torchrun / accelerate launch on a machine without a GPU, accelerate
    # sets up CPU processes (gloo) only when asked for the CPU explicitly.
    cpu_ranks = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    try:
        return Accelerator(cpu=cpu_ranks)
    except ValueError:
        # Accelerate's state is a process-wide singleton; a second job in the
        # same process (tests, notebooks) may ask for another precision.
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(cpu=cpu_ranks)


def _not_found(model_id: str, exc: Exception) -> str:
    text = first_line(exc) if str(exc).strip() else type(exc).__name__
    if any(word in text.lower() for word in ("connect", "offline", "cached files", "network")):
        from .config import offline_model_dir

        return (
            f"Cannot reach the Hugging Face Hub for '{model_id}' and it is not in the local cache; "
            f"build the offline model with `batchscore build-model` (then pass --model {offline_model_dir()}; "
            "in the repo, `make model` gives models/minilm-vader-sentiment), or pass another local model "
            "directory."
        )
    return (
        f"Cannot load model '{model_id}' ({text.rstrip('.')}); pass --model with a local model "
        "directory, or check the Hub id and your network."
    )


def run_batch(loaded: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Float32 logits of one padded batch, left on the model's device; halves the batch on GPU out-of-memory.

    Nothing here waits for the device: the caller copies a whole chunk's logits
    back at once (`chunk_logits`), so host work and the GPU overlap.
    """
    import torch

    device = loaded.device
    rows = next(iter(inputs.values())).shape[0]
    try:
        with torch.inference_mode():
            moved = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            if loaded.mask_on_host:
                moved = mask_decided_on_host(inputs, moved)
            return loaded.model(**moved).logits.float()
    except torch.cuda.OutOfMemoryError:
        if rows == 1:
            raise
    # Halved outside the except block: while the error is being handled, its traceback keeps the failed
    # forward pass's frames, and with them its activations, alive; empty_cache could free none of them.
    moved = {}
    torch.cuda.empty_cache()
    half = rows // 2
    first = run_batch(loaded, {k: v[:half] for k, v in inputs.items()})
    second = run_batch(loaded, {k: v[half:] for k, v in inputs.items()})
    return torch.cat([first, second])


def chunk_logits(loaded: LoadedModel, batches: Iterable[TokenBatch], rows: int) -> np.ndarray:
    """Logits [rows, labels] of a chunk's batches, scattered back to row order; one copy to the host per chunk."""
    import torch

    device = loaded.device
    logits = np.zeros((rows, len(loaded.labels)), dtype=np.float32)
    with torch.inference_mode():
        outs, positions = [], []
        for batch in batches:
            outs.append(run_batch(loaded, batch.inputs))
            positions.append(batch.positions)
        if not outs:
            return logits
        # The batches' logits stay on the device in batch order and come back in one copy; the rows are put in
        # place on the host (a row position copied to the GPU per batch would be one more copy, from pageable
        # memory, per batch).
        stacked = torch.cat(outs)
        if device.type == "cpu":
            back = stacked.numpy()
        else:
            pinned = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            pinned.copy_(stacked, non_blocking=True)
            torch.cuda.current_stream(device).synchronize()  # the one wait per chunk
            back = pinned.numpy()
    logits[np.concatenate(positions)] = back
    return logits
