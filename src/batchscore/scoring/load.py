"""Load a model once: its config checked first, then its tokenizer, then its weights in the run's precision,
placed by accelerate. Every way a model's files can be unusable is one ModelError naming the fix."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BatchscoreError, ConfigError, ModelError, first_line

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Where the precision asks for 16-bit weights, the weights are loaded in it; no autocast.
WEIGHT_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(kw_only=True)
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


def resolve_precision(precision: str, device_type: str) -> str:
    import torch

    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # on CPUs without bf16 matrix units, bf16 is slower than fp32 for these models


def warn_slow_bf16() -> None:
    """No silent slow path: bf16 on a CPU without native bf16 runs in software, several times slower than fp32."""
    from . import cpu

    if cpu.native_bf16() is False:
        log.warning(
            "--precision bf16 on this CPU, which has no native bf16 (no avx512_bf16 or amx_bf16 flag): torch "
            "computes it in software, measured 5.5x slower than fp32 on such a CPU; pass --precision fp32 (or "
            "int8) for speed."
        )


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
    if device_type == "cpu" and precision == "bf16":
        warn_slow_bf16()
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

    from .cpu import quantize_int8, reuse_large_buffers

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


def model_head(model: str | None, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """The score function of a model's head (heads.score_function), from its config.json alone: for a
    caller that names the result columns before any process loads the weights (Spark's driver)."""
    from transformers import AutoConfig

    from ..options import model_and_revision
    from .heads import score_function

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

    from ..options import model_and_revision

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
        from ..options import offline_model_dir

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
