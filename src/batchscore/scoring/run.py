"""Run: a chunk's batches through the loaded model, logits back in row order, one copy to the host per chunk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from .load import LoadedModel


class TokenBatch(Protocol):
    """What chunk_logits reads of a batch: its rows' positions in the chunk and their padded token tensors."""

    @property
    def positions(self) -> np.ndarray: ...

    @property
    def inputs(self) -> dict[str, torch.Tensor]: ...


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


def rescore(loaded: LoadedModel, batches: Iterable[TokenBatch], wanted: np.ndarray, logits: np.ndarray) -> int:
    """Score again in `loaded` the rows of `batches` that `wanted` marks (by position), their logits put in place in
    `logits`; how many rows that was. Each batch's marked rows go through as one smaller batch, padded as they were.
    """
    import torch

    count = 0
    with torch.inference_mode():
        for batch in batches:
            picked = wanted[batch.positions]
            if not picked.any():
                continue
            index = torch.from_numpy(np.flatnonzero(picked))
            inputs = {name: tensor.index_select(0, index) for name, tensor in batch.inputs.items()}
            logits[batch.positions[picked]] = run_batch(loaded, inputs).cpu().numpy()
            count += len(index)
    return count
