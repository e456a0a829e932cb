"""Wire the stages: source -> plan -> batches -> model -> postprocess -> sink.

The only module that knows every stage. Each stage takes and returns plain
data, so each is tested alone; this one is tested end to end.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .config import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, JobConfig
from .errors import ConfigError, InputError, OutputError

RESULT_COLUMNS = ("label", "score", "scores")


@dataclass
class JobResult:
    output: str
    manifest: dict
    already_complete: bool = False
    warnings: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None  # (shard, num_shards) when the manifest is left to others


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
    prefix = cfg.result_prefix or ""
    results = [prefix + name for name in RESULT_COLUMNS]
    clash = [c for c in out if c in results]
    if clash:
        # HF datasets nearly always have a `label` column: a prefix keeps it beside the prediction.
        import itertools

        candidates = itertools.chain(("pred_", "batchscore_"), (f"pred{i}_" for i in itertools.count(2)))
        free = next(p for p in candidates if not any(p + name in out for name in RESULT_COLUMNS))
        fix = (f"pass another --result-prefix, e.g. {free}" if prefix else f"pass --result-prefix {free}")
        if clash[0] != cfg.id_column:  # the id column is always kept
            others = ",".join(c for c in out if c not in results) or "none"
            fix += f" (or leave it out with --keep-columns {others})"
        given = f" (--result-prefix {prefix})" if prefix else ""
        raise InputError(f"Input column '{clash[0]}' would clash with batchscore's output column of that "
                         f"name{given}; {fix}.")
    return out


def _progress_enabled(cfg: JobConfig, plan) -> bool:
    # Under a launcher every rank shares the terminal: rank 0's bar stands for all.
    return plan.main and (cfg.progress if cfg.progress is not None else sys.stderr.isatty())


def run_job(cfg: JobConfig) -> JobResult:
    import pyarrow as pa
    import torch
    from tqdm.auto import tqdm

    from .batches import ChunkDataset, InputEnd
    from .model import load_model, run_batch
    from .output import Layout, OutputWriter, check_output, finalize, run_identity, wait_for_shards
    from .postprocess import apply, result_columns, result_fields, score_function
    from .source import open_source
    from .threads import model_threads

    if not cfg.input:
        raise ConfigError("No input given; pass INPUT (a file, folder, glob, URL or Hub dataset name).")
    started = time.time()
    layout = Layout.open(cfg.output_path)
    # An output inside the input folder is never read back as input.
    open_input = functools.partial(open_source, cfg.input, text_column=cfg.text_column, split=cfg.split,
                                   dataset_config=cfg.dataset_config, encoding=cfg.encoding,
                                   exclude=layout.contains_url, csv_infer_types=cfg.csv_infer_types)
    source = open_input()
    _check_overlap(layout, source, cfg.input)
    out_columns = _check_columns(source.schema, cfg)
    read_columns = list(dict.fromkeys([*out_columns, cfg.text_column]))
    source.require(read_columns, cfg.text_column)  # in every file of a folder, not just the first
    # Before the model load, which can take minutes: a taken output fails at once.
    held = check_output(layout, cfg.overwrite)
    if (source.local and held != "complete") or (cfg.overwrite and held):
        # One parse of every kept column: a ragged row or bad byte at line
        # 9,000,000 fails now, before any output, not hours in. Before --overwrite
        # clears an old output, every input is parsed, whatever its format or store.
        # A rerun of a finished job writes nothing, so it skips the parse.
        source.num_rows = source.scan(read_columns, cfg.limit)

    threads = model_threads(cfg.threads)
    torch.set_num_threads(threads)
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
    fields = result_fields(cfg.top_k, cfg.result_prefix)
    schema = pa.schema([source.schema.field(c) for c in out_columns] + fields)
    identity = run_identity(cfg, source, loaded, out_columns)
    plan = shard_plan(cfg, loaded.accelerator)
    sink = OutputWriter(layout, schema, metadata, identity, overwrite=plan.overwrite,
                        shard=plan.shard, num_shards=plan.num_shards)
    warnings: list[str] = []
    if plan.clear_first and not plan.main:
        plan.wait()  # for rank 0 to clear the old output
    with sink:
        if plan.clear_first and plan.main:
            plan.wait()
        if sink.complete:
            return JobResult(cfg.output_path, sink.manifest, already_complete=True)
        warnings.extend(sink.warnings)
        if sink.committed:
            warnings.append(f"Resuming: {len(sink.committed)} chunks already committed in {cfg.output_path}.")
        dataset = ChunkDataset(
            open_input, read_columns=read_columns, chunk_rows=cfg.chunk_rows, limit=cfg.limit,
            skip=frozenset(sink.committed), shard=plan.shard, num_shards=plan.num_shards,
            text_column=cfg.text_column, out_columns=out_columns,
            tokenizer=loaded.tokenizer, max_length=loaded.max_length, batch_tokens=batch_tokens,
            # Multiples of 8 let fp16/bf16 matmuls use tensor cores; fp32 gains nothing.
            pad_multiple=8 if loaded.precision in ("bf16", "fp16") else None,
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_identity, num_workers=workers,
                                             pin_memory=on_gpu, prefetch_factor=2 if workers else None)
        known = [x for x in (source.num_rows, cfg.limit) if x is not None]
        total = plan.rows_to_do(min(known), cfg.chunk_rows, sink.committed) if known else None
        first_commit, num_chunks = None, None
        with tqdm(total=total, unit="rows", desc=f"scoring{plan.label}", disable=not _progress_enabled(cfg, plan),
                  file=sys.stderr, dynamic_ncols=True) as bar:
            for work in loader:
                if isinstance(work, InputEnd):
                    num_chunks = work.num_chunks
                    continue
                rows = work.chunk.num_rows
                logits = np.zeros((rows, len(loaded.labels)), dtype=np.float32)
                for batch in work.batches:
                    logits[batch.positions] = run_batch(loaded, batch.inputs)
                columns = result_columns(apply(function, logits), work.valid, loaded.labels, cfg.top_k,
                                         cfg.result_prefix)
                table = pa.Table.from_arrays(
                    [work.chunk.table.column(c) for c in out_columns] + [columns[f.name] for f in fields],
                    schema=schema)
                sink.write(work.chunk.index, table, chunk_stats(work, columns[fields[0].name]))
                if first_commit is None:
                    sink.flush()
                    first_commit = time.time() - started
                bar.update(rows)
        sink.finish_shard({
            "input": source.description,
            "input_files": source.files,
            "seconds": round(time.time() - started, 3),
            "model_load_seconds": round(load_seconds, 3),
            "seconds_to_first_chunk": round(first_commit, 3) if first_commit is not None else None,
            "device": str(loaded.device),
            "host": socket.gethostname(),
            "resumed_chunks": len(sink.committed),
            "threads": threads,
        }, num_chunks, empty_stats=chunk_stats(None, None))
        shard_summary = sink.shard_stats()
    if not (plan.finalizes and plan.main):
        return JobResult(cfg.output_path, shard_summary, warnings=warnings, shard=(plan.shard, plan.num_shards))
    if plan.num_shards > 1:
        # Rank 0 of a distributed run. Waiting on the disk, not a collective
        # barrier: after a resume one rank may have hours less to do than another,
        # longer than any NCCL/gloo timeout. If a rank dies, the launcher stops us.
        wait_for_shards(layout, plan.num_shards)
    done = finalize(layout, wait=plan.num_shards > 1)
    warnings.extend(done.warnings)
    manifest = done.manifest
    if manifest["rows"] == 0:
        warnings.append("The input has no rows; wrote an empty output with the schema.")
    return JobResult(cfg.output_path, manifest, warnings=warnings)


def _check_overlap(layout, source, spec: str) -> None:
    """The output may never be the input, nor hold it (an output inside the input folder is excluded instead)."""
    for location in [*source.files, source.root]:
        if location and layout.contains_url(location):
            raise OutputError(f"Output '{layout.url()}' would overwrite or hold the input '{spec}' ({location}); "
                              "write the output outside the input.")


@dataclass
class ShardPlan:
    """Which chunks this process scores, and who writes the manifest.

    Under `accelerate launch` / `torchrun` each rank is a shard; with
    --num-shards K --shard-index I, rank r of W is shard I + K*r of K*W, so a
    distributed run can itself be one independent worker.
    """

    shard: int
    num_shards: int
    main: bool  # rank 0: shows progress; finalizes a distributed run
    finalizes: bool  # False for independent workers: `batchscore finalize` comes later
    overwrite: str | None  # None | "all" | "shard", see ParquetSink
    clear_first: bool  # distributed --overwrite: rank 0 clears before the others look
    wait: object  # a barrier across ranks

    @property
    def label(self) -> str:
        return f" (shard {self.shard} of {self.num_shards})" if self.num_shards > 1 else ""

    def rows_to_do(self, num_rows: int, chunk_rows: int, committed) -> int:
        chunks = -(-num_rows // chunk_rows)
        return sum(min(chunk_rows, num_rows - c * chunk_rows) for c in range(self.shard, chunks, self.num_shards)
                   if c not in committed)


def shard_plan(cfg: JobConfig, accelerator) -> ShardPlan:
    rank, world = accelerator.process_index, accelerator.num_processes
    independent = cfg.num_shards is not None
    shard, num_shards = (cfg.shard_index + cfg.num_shards * rank, cfg.num_shards * world) if independent \
        else (rank, world)
    overwrite = None
    if cfg.overwrite:
        overwrite = "shard" if independent else ("all" if rank == 0 else None)
    return ShardPlan(shard, num_shards, main=accelerator.is_main_process, finalizes=not independent,
                     overwrite=overwrite, clear_first=cfg.overwrite and not independent and world > 1,
                     wait=accelerator.wait_for_everyone)


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
