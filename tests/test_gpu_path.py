"""The GPU path, tested where it can be: bf16 weights against the pipeline in bf16, and out-of-memory halving.

Both run on the CPU here (bf16 matmuls work on any x86 CPU, and the
out-of-memory error is simulated); the `gpu`-marked variants run the same
checks on a CUDA device when there is one.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from helpers import assert_ok, encode_texts, pipeline_oracle, run_score

# bf16 keeps 8 bits of mantissa: a probability near 0.5 can move by ~1e-2 between two bf16 computations
# that round differently (ours batches rows by length, the pipeline by position).
BF16_SCORE_TOLERANCE = 2e-2
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
    ),
]


def _texts(n=120):
    words = "the movie was great awful boring brilliant plot I loved hated it so much not really".split()
    rng = np.random.default_rng(3)
    return [" ".join(rng.choice(words, size=rng.integers(1, 60))) for _ in range(n)]


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_matches_the_pipeline_in_bf16(tmp_path, tiny_model, device):
    texts = _texts()
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), src)
    out = tmp_path / "out"
    assert_ok(run_score(src, tiny_model, out, "--precision", "bf16", "--chunk-rows", "50"))
    table = pq.read_table(out)
    expected = pipeline_oracle(tiny_model, texts, device=device, dtype=torch.bfloat16, batch_size=16)
    scores = np.array(table.column("score").to_pylist())
    want = np.array([e["score"] for e in expected])
    assert np.abs(scores - want).max() < BF16_SCORE_TOLERANCE
    # Labels agree except where the two bf16 computations straddle 0.5.
    clear = np.abs(want - 0.5) > BF16_SCORE_TOLERANCE
    assert clear.sum() > len(texts) // 2
    got = np.array(table.column("label").to_pylist())
    assert (got[clear] == np.array([e["label"] for e in expected])[clear]).all()


class _RunsOutOfMemory(torch.nn.Module):
    """Wraps a model; raises CUDA's out-of-memory error for any batch of more than `max_rows` rows."""

    def __init__(self, model, max_rows):
        super().__init__()
        self.inner, self.max_rows, self.sizes = model, max_rows, []

    @property
    def config(self):
        return self.inner.config

    def forward(self, **inputs):
        rows = inputs["input_ids"].shape[0]
        self.sizes.append(rows)
        if rows > self.max_rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(**inputs)


@pytest.mark.parametrize("device", DEVICES)
def test_out_of_memory_halves_the_batch_and_keeps_every_row(tiny_model, device):
    import dataclasses

    from batchscore.scoring.load import load_model
    from batchscore.scoring.run import chunk_logits

    loaded = load_model(tiny_model, None, "fp32")
    if device == "cuda":
        loaded.model.to("cuda")
    texts = _texts(40)
    work = encode_texts(loaded.tokenizer, texts, batch_tokens=100_000)
    assert max(b.num_rows for b in work.batches) > 3  # there is something to halve
    expected = chunk_logits(loaded, work.batches, len(texts))
    flaky = _RunsOutOfMemory(loaded.model, max_rows=3)
    halved = chunk_logits(dataclasses.replace(loaded, model=flaky), work.batches, len(texts))
    assert max(flaky.sizes) > 3 and max(s for s in flaky.sizes if s <= 3) <= 3
    np.testing.assert_allclose(halved, expected, rtol=1e-5, atol=1e-6)
    # And the scores of each row are the model's on that row alone.
    alone = chunk_logits(loaded, work.batches[:1], len(texts))
    first = work.batches[0].positions
    np.testing.assert_allclose(halved[first], alone[first], rtol=1e-5, atol=1e-6)


def test_a_single_row_that_runs_out_of_memory_is_an_error(tiny_model):
    import dataclasses

    from batchscore.scoring.load import load_model
    from batchscore.scoring.run import chunk_logits

    loaded = load_model(tiny_model, None, "fp32")
    work = encode_texts(loaded.tokenizer, ["one row"], batch_tokens=1000)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        chunk_logits(dataclasses.replace(loaded, model=_RunsOutOfMemory(loaded.model, max_rows=0)), work.batches, 1)


def _chunk_with_and_without_padding(loaded, texts):
    work = encode_texts(loaded.tokenizer, texts, batch_tokens=400)
    padded = [bool((b.inputs["attention_mask"] == 0).any()) for b in work.batches]
    assert any(padded) and not all(padded)  # both kinds of batch
    return work


def _roberta_family(path, config_class, model_class):
    """A tiny RoBERTa-style classifier on the bert tokenizer (padding id 0, as its positions count from it)."""
    from transformers import AutoTokenizer

    from helpers import tokenizer_dir

    torch.manual_seed(0)
    config = config_class(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        pad_token_id=0, num_labels=2, max_position_embeddings=514,
    )  # fmt: skip
    model_class(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(path)
    return str(path)


def _asked_by_transformers(work, *args):
    """What `work(*args)` returns, and how many truth values code in transformers read from tensors meanwhile."""
    import traceback

    asked = []
    real_bool = torch.Tensor.__bool__

    def recording_bool(tensor):
        if "transformers" in traceback.extract_stack(limit=2)[0].filename:
            asked.append(1)
        return real_bool(tensor)

    torch.Tensor.__bool__ = recording_bool
    try:
        return work(*args), len(asked)
    finally:
        torch.Tensor.__bool__ = real_bool


def test_masks_decided_on_the_host_give_the_same_logits_and_ask_the_device_nothing(
    tmp_path, tiny_model, multilabel_model
):
    """The GPU path's host-side mask (mask_decided_on_host), run on the CPU: the same logits as transformers' own
    mask, and no truth value read from a tensor inside transformers (on a GPU, each is a wait for the device)."""
    import dataclasses

    from transformers import (
        RobertaConfig,
        RobertaForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    from batchscore.scoring.load import load_model, takes_prepared_masks
    from batchscore.scoring.run import chunk_logits

    texts = ["good"] * 8 + [" ".join(["fine film"] * n) for n in range(1, 60)] + ["", "bad"]
    roberta = _roberta_family(tmp_path / "roberta", RobertaConfig, RobertaForSequenceClassification)
    xlmr = _roberta_family(tmp_path / "xlmr", XLMRobertaConfig, XLMRobertaForSequenceClassification)
    for model in (tiny_model, multilabel_model, roberta, xlmr):  # each of PREPARED_MASK_MODELS
        loaded = load_model(model, None, "fp32")
        assert takes_prepared_masks(loaded.model)
        work = _chunk_with_and_without_padding(loaded, texts)
        expected = chunk_logits(loaded, work.batches, len(texts))
        host_masks = dataclasses.replace(loaded, mask_on_host=True)
        got, asked = _asked_by_transformers(chunk_logits, host_masks, work.batches, len(texts))
        assert asked == 0
        _, asked = _asked_by_transformers(chunk_logits, loaded, work.batches, len(texts))
        assert asked == len(work.batches)  # transformers' own mask: one question per batch
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_models_with_their_own_mask_code_keep_the_2d_mask(tiny_model):
    from batchscore.scoring.load import load_model, takes_prepared_masks

    loaded = load_model(tiny_model, None, "fp32")
    assert not loaded.mask_on_host  # the CPU path is the pipeline's, unchanged
    assert not takes_prepared_masks(_RunsOutOfMemory(loaded.model, 1))  # its module builds no masks
    config = loaded.model.config
    for name, value, usual in (("_attn_implementation", "eager", "sdpa"), ("is_decoder", True, False)):
        setattr(config, name, value)
        try:
            assert not takes_prepared_masks(loaded.model), name
        finally:
            setattr(config, name, usual)
    assert takes_prepared_masks(loaded.model)
