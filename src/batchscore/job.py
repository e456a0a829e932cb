"""Wire the stages: source -> plan -> batches -> model -> postprocess -> sink.

The only module that knows every stage. Each stage takes and returns plain
data, so each is tested alone; this one is tested end to end.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .config import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, JobConfig
from .errors import ConfigError, InputError

RESULT_COLUMNS = ("label", "score", "scores")


@dataclass
class JobResult:
    output: str
    manifest: dict
    already_complete: bool = False
    warnings: list[str] = field(default_factory=list)


def _identity(item):
    return item


def _check_columns(schema, cfg: JobConfig) -> list[str]:
    """Validate the columns the job needs; return the output's input columns, in order."""
    import pyarrow as pa

    names = list(schema.names)
    listing = ", ".join(names)
    if cfg.text_column not in names:
        raise InputError(f"Column '{cfg.text_column}' not found; columns are: {listing}. Pass --text-column.")
    text_type = schema.field(cfg.text_column).type
    if pa.types.is_nested(text_type) or pa.types.is_binary(text_type) or pa.types.is_large_binary(text_type):
        raise InputError(
            f"Column '{cfg.text_column}' holds {text_type}, not text; pass --text-column naming a string column."
        )
    for option, column in (("--id-column", cfg.id_column),):
        if column is not None and column not in names:
            raise InputError(f"Column '{column}' not found; columns are: {listing}. Pass {option}.")
    keep = list(names) if cfg.keep_columns is None else list(cfg.keep_columns)
    missing = [c for c in keep if c not in names]
    if missing:
        raise InputError(f"Column '{missing[0]}' not found; columns are: {listing}. Fix --keep-columns.")
    out = list(dict.fromkeys(([cfg.id_column] if cfg.id_column else []) + keep))
    clash = [c for c in out if c in RESULT_COLUMNS]
    if clash:
        others = ",".join(c for c in out if c not in RESULT_COLUMNS) or "none"
        raise InputError(
            f"Input column '{clash[0]}' would clash with batchscore's output column of that name; "
            f"leave it out with --keep-columns {others}."
        )
    return out


def _progress_enabled(cfg: JobConfig) -> bool:
    return cfg.progress if cfg.progress is not None else sys.stderr.isatty()


def _model_stamp(model_id: str) -> list | None:
    """For a local model folder, its weight files' sizes and times: a rebuilt model is another model."""
    if not os.path.isdir(model_id):
        return None
    names = sorted(n for n in os.listdir(model_id) if n.endswith((".safetensors", ".bin", "config.json")))
    return [[n, os.path.getsize(os.path.join(model_id, n)), int(os.path.getmtime(os.path.join(model_id, n)))]
            for n in names]


def run_identity(cfg: JobConfig, source, loaded, out_columns: list[str]) -> dict:
    """Everything that changes which rows or which scores an output holds.

    An output can be resumed only by a run with the same identity. Batch size,
    workers and progress are left out: they change speed, not results.
    """
    return {
        "input": source.fingerprint or source.description,
        "limit": cfg.limit,
        "chunk_rows": cfg.chunk_rows,
        "text_column": cfg.text_column,
        "columns": out_columns,
        "model": loaded.model_id,
        "revision": loaded.revision,
        "model_files": _model_stamp(loaded.model_id),
        "top_k": cfg.top_k,
        "max_length": loaded.max_length,
        "precision": loaded.precision,
    }


def run_job(cfg: JobConfig) -> JobResult:
    import pyarrow as pa
    import torch
    from tqdm.auto import tqdm

    from .batches import ChunkDataset
    from .model import load_model, run_batch
    from .postprocess import apply, result_columns, result_fields, score_function
    from .sink import ParquetSink, check_output
    from .source import open_source

    if not cfg.input:
        raise ConfigError("No input given; pass INPUT (a file, folder, glob, URL or Hub dataset name).")
    started = time.time()
    open_input = functools.partial(open_source, cfg.input, text_column=cfg.text_column, split=cfg.split,
                                   dataset_config=cfg.dataset_config, encoding=cfg.encoding)
    source = open_input()
    out_columns = _check_columns(source.schema, cfg)
    read_columns = list(dict.fromkeys([*out_columns, cfg.text_column]))
    # Before the model load, which can take minutes: a taken output fails at once.
    check_output(cfg.output_path, cfg.overwrite)
    if source.local_text and cfg.limit is None:
        # One cheap parse of local text files: a ragged row or bad byte at line
        # 9,000,000 fails now, before any output, not hours in.
        source.num_rows = source.scan(cfg.text_column)

    load_started = time.time()
    loaded = load_model(cfg.model_id, cfg.model_revision, cfg.precision, cfg.max_length,
                        allow_pickle=cfg.allow_pickle, trust_remote_code=cfg.trust_remote_code)
    load_seconds = time.time() - load_started
    function = score_function(loaded.model.config)
    on_gpu = loaded.device.type == "cuda"
    workers = cfg.num_workers if cfg.num_workers is not None else (min(4, os.cpu_count() or 1) if on_gpu else 0)
    if workers:
        # Tokenizers' own thread pool and forked workers don't mix; workers give the parallelism.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    batch_tokens = cfg.batch_tokens or (GPU_BATCH_TOKENS if on_gpu else CPU_BATCH_TOKENS)
    effective = cfg.to_dict() | {"max_length": loaded.max_length, "precision": loaded.precision,
                                 "num_workers": workers, "batch_tokens": batch_tokens}
    metadata = {"batchscore_version": __version__, "model": loaded.model_id, "revision": loaded.revision,
                "config": effective}
    fields = result_fields(cfg.top_k)
    schema = pa.schema([source.schema.field(c) for c in out_columns] + fields)
    identity = run_identity(cfg, source, loaded, out_columns)
    sink = ParquetSink(cfg.output_path, schema, metadata, identity, overwrite=cfg.overwrite)
    warnings: list[str] = []
    with sink:
        if sink.complete:
            return JobResult(cfg.output_path, sink.existing_manifest(), already_complete=True)
        if sink.committed:
            warnings.append(f"Resuming: {len(sink.committed)} chunks already committed in {cfg.output_path}.")
        done_rows = sum(s.get("rows", 0) for s in sink.committed_stats())
        dataset = ChunkDataset(
            open_input, read_columns=read_columns, chunk_rows=cfg.chunk_rows, limit=cfg.limit,
            skip=frozenset(sink.committed), text_column=cfg.text_column, out_columns=out_columns,
            tokenizer=loaded.tokenizer, max_length=loaded.max_length, batch_tokens=batch_tokens,
            # Multiples of 8 let fp16/bf16 matmuls use tensor cores; fp32 gains nothing.
            pad_multiple=8 if loaded.precision in ("bf16", "fp16") else None,
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_identity, num_workers=workers,
                                             pin_memory=on_gpu, prefetch_factor=2 if workers else None)
        known = [x for x in (source.num_rows, cfg.limit) if x is not None]
        first_commit = None
        with tqdm(total=min(known) if known else None, initial=done_rows, unit="rows", desc="scoring",
                  disable=not _progress_enabled(cfg), file=sys.stderr, dynamic_ncols=True) as bar:
            for work in loader:
                rows = work.chunk.num_rows
                logits = np.zeros((rows, len(loaded.labels)), dtype=np.float32)
                for batch in work.batches:
                    logits[batch.positions] = run_batch(loaded, batch.inputs)
                columns = result_columns(apply(function, logits), work.valid, loaded.labels, cfg.top_k)
                table = pa.Table.from_arrays(
                    [work.chunk.table.column(c) for c in out_columns] + [columns[f.name] for f in fields],
                    schema=schema)
                sink.write(work.chunk.index, table, chunk_stats(work, columns["label"]))
                if first_commit is None:
                    sink.flush()
                    first_commit = time.time() - started
                bar.update(rows)
        seconds = time.time() - started
        manifest = sink.finish({
            **metadata,
            "input": source.description,
            "input_files": source.files,
            "seconds": round(seconds, 3),
            "model_load_seconds": round(load_seconds, 3),
            "seconds_to_first_chunk": round(first_commit, 3) if first_commit is not None else None,
            "device": str(loaded.device),
            "resumed_chunks": len(sink.committed),
        }, empty_stats=chunk_stats(None, None))
    if manifest["rows"] == 0:
        warnings.append("The input has no rows; wrote an empty output with the schema.")
    return JobResult(cfg.output_path, manifest, warnings=warnings)


def chunk_stats(work, labels) -> dict:
    """Counts stored in each part's footer; the manifest sums them over parts."""
    import pyarrow.compute as pc

    if work is None:
        return {"rows": 0, "empty_text_rows": 0, "truncated_rows": 0, "real_tokens": 0, "padded_tokens": 0,
                "label_counts": {}}
    return {
        "rows": work.chunk.num_rows,
        "empty_text_rows": int((~work.valid).sum()),
        "truncated_rows": work.truncated_rows,
        "real_tokens": work.real_tokens,
        "padded_tokens": work.padded_tokens,
        # Counted in Arrow, not row by row in Python.
        "label_counts": {str(v["values"]): v["counts"] for v in pc.value_counts(labels.drop_null()).to_pylist()},
    }
