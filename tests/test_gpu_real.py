"""What only a real CUDA device can show: a real out-of-memory error halved away, and one copy of logits to the
host per chunk. `make gpu-check` runs these (and tests/test_gpu_path.py's gpu variants) on a GPU machine; here
they are skipped.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from helpers import assert_ok, encode_texts, run_score, tokenizer_dir

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# The allocator's cap for the out-of-memory test: well above what a few hundred rows of 512 tokens need in the
# reference shape, well below what 1,024 such rows in one batch need (the feed-forward activations alone: 6 GiB).
MEMORY_CAP_BYTES = 4 * 2**30


def _reference_shaped(path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    DistilBertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(path)
    return path


def _long_texts(n, seed=0):
    words = "the movie was great awful boring brilliant plot I loved hated it so much not really".split()
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=600)) for _ in range(n)]


class _Counting(torch.nn.Module):
    """Passes every batch through; records each batch's rows and whether it came back."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.tried, self.done = model, [], []

    @property
    def config(self):
        return self.inner.config

    def forward(self, **inputs):
        rows = inputs["input_ids"].shape[0]
        self.tried.append(rows)
        out = self.inner(**inputs)
        self.done.append(rows)
        return out


def test_a_real_out_of_memory_error_halves_the_batch_and_keeps_every_row(tmp_path):
    import dataclasses

    from batchscore.scoring.load import load_model
    from batchscore.scoring.run import chunk_logits

    loaded = load_model(str(_reference_shaped(tmp_path / "model")), None, "fp32")
    assert loaded.device.type == "cuda"
    texts = _long_texts(1024)
    one_batch = encode_texts(loaded.tokenizer, texts, batch_tokens=10**7)
    assert [b.num_rows for b in one_batch.batches] == [1024]
    small = encode_texts(loaded.tokenizer, texts, batch_tokens=32 * 512)
    expected = chunk_logits(loaded, small.batches, len(texts))

    counting = _Counting(loaded.model)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(MEMORY_CAP_BYTES / total)
    try:
        got = chunk_logits(dataclasses.replace(loaded, model=counting), one_batch.batches, len(texts))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert counting.tried[0] == 1024 and 1024 not in counting.done  # the allocator really refused the batch
    assert sum(counting.done) == 1024  # every row scored once, in halves
    # Freed before the retry: the halves that ran are large, not whittled down by memory the failure kept.
    assert max(counting.done) >= 128
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def _copies(work):
    """The host-device copies while `work` runs, from the profiler's memcpy records, by kind: e.g.
    "Memcpy DtoH (Device -> Pinned)". Our logits go to pinned memory; a `.item()` or a tensor's truth value (a
    wait for the GPU) copies into pageable memory; a copy to the GPU from pageable memory may wait too."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        work()
        torch.cuda.synchronize()
    return Counter(e.name for e in prof.events() if e.name.startswith("Memcpy"))


def _device_to_host(copies):
    return sum(n for name, n in copies.items() if "DtoH" in name)


def test_logits_come_back_to_the_host_once_per_chunk(tmp_path, tiny_model, record_property):
    from batchscore.scoring.load import load_model
    from batchscore.scoring.run import chunk_logits

    loaded = load_model(tiny_model, None, "bf16")
    assert loaded.device.type == "cuda" and loaded.mask_on_host
    texts = [t[: 10 + 7 * i] for i, t in enumerate(_long_texts(200, seed=1))]
    work = encode_texts(loaded.tokenizer, texts, batch_tokens=4096, pad_multiple=8)
    assert len(work.batches) > 5
    copies = _copies(lambda: chunk_logits(loaded, work.batches, len(texts)))
    record_property("batches", len(work.batches))
    record_property("copies", dict(copies))
    # One copy back, and no other wait: the padding question transformers would ask the GPU once per batch
    # (mask.all()) is answered on the host (mask_decided_on_host).
    assert copies["Memcpy DtoH (Device -> Pinned)"] == 1 and _device_to_host(copies) == 1


def test_a_whole_job_copies_logits_to_the_host_once_per_chunk(tmp_path, tiny_model, record_property):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [t[: 10 + 3 * i] for i, t in enumerate(_long_texts(300, seed=2))]}), src)
    out = tmp_path / "out"
    copies = _copies(
        lambda: assert_ok(run_score(src, tiny_model, out, "--chunk-rows", "100", "--batch-tokens", "2048"))
    )
    record_property("copies", dict(copies))
    assert len(list(out.glob("part-*.parquet"))) == 3
    # (Copies to the GPU are only recorded: loading the model copies its weights from pageable memory.)
    assert copies["Memcpy DtoH (Device -> Pinned)"] == 3 and _device_to_host(copies) == 3
