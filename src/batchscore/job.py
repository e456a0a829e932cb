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

from ._version import __version__
from .config import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, JobConfig
from .errors import BatchscoreError, ConfigError, InputError, OutputError

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
    from .scorer import not_text

    names = list(schema.names)
    listing = ", ".join(names)
    if cfg.text_column not in names:
        raise InputError(f"Column '{cfg.text_column}' not found; columns are: {listing}. Pass --text-column.")
    text_type = not_text(schema.field(cfg.text_column).type)  # the library's rule (scorer.py)
    if text_type is not None:
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
        fix = f"pass another --result-prefix, e.g. {free}" if prefix else f"pass --result-prefix {free}"
        if clash[0] != cfg.id_column:  # the id column is always kept
            others = ",".join(c for c in out if c not in results) or "none"
            fix += f" (or leave it out with --keep-columns {others})"
        given = f" (--result-prefix {prefix})" if prefix else ""
        raise InputError(
            f"Input column '{clash[0]}' would clash with batchscore's output column of that name{given}; {fix}."
        )
    return out


def _progress_enabled(cfg: JobConfig, plan) -> bool:
    # Under a launcher every rank shares the terminal: rank 0's bar stands for all.
    return plan.main and (cfg.progress if cfg.progress is not None else sys.stderr.isatty())


@dataclass
class _Input:
    source: object  # the open Source
    reopen: object  # a picklable callable that opens it again (in DataLoader workers)
    out_columns: list[str]  # input columns the output keeps, in order
    read_columns: list[str]  # those plus the text column


def open_input(cfg: JobConfig, layout) -> _Input:
    """Open the input, refuse one that overlaps the output or lacks a needed column, in any of its files."""
    from .source import open_source

    if not cfg.input:
        raise ConfigError("No input given; pass INPUT (a file, folder, glob, URL or Hub dataset name).")
    # An output inside the input folder is never read back as input.
    reopen = functools.partial(
        open_source,
        cfg.input,
        text_column=cfg.text_column,
        split=cfg.split,
        dataset_config=cfg.dataset_config,
        encoding=cfg.encoding,
        exclude=layout.contains_url,
        csv_infer_types=cfg.csv_infer_types,
    )
    # Before reading: an input inside the output would be left out whole and look like no input at all.
    _check_overlap(layout, [_input_location(cfg.input)], cfg.input)
    source = reopen()
    _check_overlap(layout, [*source.files, source.root], cfg.input)
    out_columns = _check_columns(source.schema, cfg)
    read_columns = list(dict.fromkeys([*out_columns, cfg.text_column]))
    source.require(read_columns, cfg.text_column)  # in every file of a folder, not just the first
    return _Input(source, reopen, out_columns, read_columns)


def check_input(cfg: JobConfig, layout, given: _Input, held: str | None) -> tuple[int | None, int]:
    """Parse, before the model loads and before any output, the rows this process will score.

    A ragged row or bad byte at line 9,000,000 fails now, not hours in. Before
    --overwrite clears an old output, every row this process owns is parsed,
    whatever the format or store. A rerun of a finished job writes nothing, so
    it skips the check; remote text files are checked as they are scored.
    Returns (rows in the input, if now known; rows parsed).
    """
    from .output import listed_chunks
    from .plan import for_process, launcher_ranks

    source = given.source
    if not ((source.local and held != "complete") or (cfg.overwrite and held)):
        return source.num_rows, 0
    # --overwrite of a whole output clears every part, whichever rank clears it: then the whole input is checked.
    ranks = (0, 1) if cfg.overwrite and cfg.num_shards is None else launcher_ranks()
    plan = for_process(cfg, source.num_rows, *ranks)
    if held == "started" and not cfg.overwrite:
        plan = plan.with_committed(listed_chunks(layout))  # a resume checks only what it will redo
    before = source.rows_decoded
    rows = plan.check(source, given.read_columns)
    return rows, (source.rows_decoded - before) if source.read_rows is not None else rows


def score(input: str, output: str | None = None, *, config_file: str | None = None, **options) -> dict:
    """Score a file, folder, glob, URL or dataset into a Parquet output, as `batchscore score` does; return
    the manifest.

    `options` are the CLI's options with underscores (`model`, `text_column`,
    `top_k`, `chunk_rows`, `num_shards`, `shard_index`, `overwrite`, ...), then
    `config_file`'s values, then the defaults; BATCHSCORE_* environment
    variables are not read. Errors are `batchscore.errors.BatchscoreError`s
    carrying the CLI's exit code.

    Example::

        import batchscore

        manifest = batchscore.score("reviews.csv", "scored/", model="models/minilm-vader-sentiment", top_k="all")
        manifest["rows"], manifest["label_counts"]
    """
    from .config import OPTIONS, build_config

    unknown = sorted(set(options) - {o.name for o in OPTIONS})
    if unknown:
        raise ConfigError(
            f"Unknown option '{unknown[0]}'; options are the CLI's, with underscores (see `batchscore score --help`)."
        )
    cfg = build_config({**options, "input": input, "output": output}, env={}, config_file=config_file)
    return run_job(cfg).manifest


def run_job(cfg: JobConfig, process_started: float | None = None) -> JobResult:
    """Score cfg.input into cfg.output_path. `process_started` (time.time() of the process start, which the
    CLI passes) makes `startup_seconds` include interpreter start-up and imports; else it counts from here."""
    import pyarrow as pa

    from .model import load_model
    from .output import Layout, OutputWriter, check_output, run_identity
    from .plan import for_process
    from .postprocess import result_fields
    from .threads import model_threads

    started = time.time()
    layout = Layout.open(cfg.output_path)
    given = open_input(cfg, layout)
    # Before the model load, which can take minutes: a taken output fails at once.
    held = check_output(layout, cfg.overwrite)
    num_rows, rows_checked = check_input(cfg, layout, given, held)
    source = given.source
    source.num_rows = num_rows

    threads = model_threads(cfg.threads)
    import torch

    torch.set_num_threads(threads)
    load_started = time.time()
    loaded = load_model(
        cfg.model_id,
        cfg.model_revision,
        cfg.precision,
        cfg.max_length,
        allow_pickle=cfg.allow_pickle,
        trust_remote_code=cfg.trust_remote_code,
    )
    load_seconds = time.time() - load_started
    on_gpu = loaded.device.type == "cuda"
    workers = cfg.num_workers if cfg.num_workers is not None else (min(4, os.cpu_count() or 1) if on_gpu else 0)
    batch_tokens = cfg.batch_tokens or (GPU_BATCH_TOKENS if on_gpu else CPU_BATCH_TOKENS)
    effective = cfg.to_dict() | {
        "max_length": loaded.max_length,
        "precision": loaded.precision,
        "num_workers": workers,
        "batch_tokens": batch_tokens,
    }
    metadata = {
        "batchscore_version": __version__,
        "model": loaded.model_id,
        "revision": loaded.revision,
        "config": effective,
    }
    fields = result_fields(cfg.top_k, cfg.result_prefix)
    schema = pa.schema([source.schema.field(c) for c in given.out_columns] + fields)
    identity = run_identity(cfg, source, loaded, given.out_columns)
    accelerator = loaded.accelerator
    plan = for_process(
        cfg, num_rows, accelerator.process_index, accelerator.num_processes, wait=accelerator.wait_for_everyone
    )
    sink = OutputWriter(
        layout, schema, metadata, identity, overwrite=plan.overwrite, shard=plan.shard, num_shards=plan.num_shards
    )
    if plan.clear_first and not plan.main:
        plan.wait()  # for rank 0 to clear the old output
    with sink:
        if plan.clear_first and plan.main:
            plan.wait()
        if sink.complete:
            return JobResult(cfg.output_path, sink.manifest, already_complete=True)
        warnings = list(sink.warnings)
        if sink.committed:
            warnings.append(f"Resuming: {len(sink.committed)} chunks already committed in {cfg.output_path}.")
        plan = plan.with_committed(sink.committed)
        startup = time.time() - (process_started or started)
        scored = score_chunks(cfg, plan, given, loaded, sink, schema, fields, workers, batch_tokens)
        sink.finish_shard(
            {
                "input": source.description,
                "input_files": source.files,
                "seconds": round(time.time() - started, 3),
                "startup_seconds": round(startup, 3),
                "model_load_seconds": round(load_seconds, 3),
                "seconds_to_first_chunk": _round(scored.first_commit and scored.first_commit - started),
                "device": str(loaded.device),
                "host": socket.gethostname(),
                "resumed_chunks": len(sink.committed),
                "rows_read": scored.rows_read,
                "rows_checked": rows_checked,
                "threads": threads,
            },
            scored.num_chunks,
            empty_stats=chunk_stats(None, None),
        )
        shard_summary = sink.shard_stats()
    if not (plan.finalizes and plan.main):
        return JobResult(cfg.output_path, shard_summary, warnings=warnings, shard=(plan.shard, plan.num_shards))
    return _finish(cfg, layout, plan, warnings)


@dataclass
class _Scored:
    num_chunks: int | None = None  # chunks in the whole input, as the reader found
    rows_read: int = 0  # input rows parsed by this process's readers
    first_commit: float | None = None  # when the first part was committed (time.time())


def score_chunks(
    cfg: JobConfig, plan, given: _Input, loaded, sink, schema, fields, workers: int, batch_tokens: int
) -> _Scored:
    """Read, tokenize, score and commit every chunk this process still has to do."""
    import pyarrow as pa
    import torch
    from tqdm.auto import tqdm

    from .batches import ChunkDataset, quiet_worker
    from .model import chunk_logits
    from .plan import InputEnd
    from .postprocess import apply, result_columns, score_function

    on_gpu = loaded.device.type == "cuda"
    if workers:
        # Tokenizers' own thread pool and forked workers don't mix; workers give the parallelism.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dataset = ChunkDataset(
        plan,
        given.reopen,
        read_columns=given.read_columns,
        source=given.source,
        text_column=cfg.text_column,
        out_columns=given.out_columns,
        tokenizer=loaded.tokenizer,
        max_length=loaded.max_length,
        batch_tokens=batch_tokens,
        # Multiples of 8 let fp16/bf16 matmuls use tensor cores; fp32 gains nothing.
        pad_multiple=8 if loaded.precision in ("bf16", "fp16") else None,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        collate_fn=_identity,
        num_workers=workers,
        pin_memory=on_gpu,
        prefetch_factor=2 if workers else None,
        worker_init_fn=quiet_worker,
    )
    function = score_function(loaded.model.config)
    scored = _Scored()
    with tqdm(
        total=plan.rows_to_do(),
        unit="rows",
        desc=f"scoring{plan.label}",
        disable=not _progress_enabled(cfg, plan),
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        for work in loader:
            if isinstance(work, BatchscoreError):  # a DataLoader worker's, with its one-line message
                raise work
            if isinstance(work, InputEnd):
                # Every worker ends with one; they agree on the chunk count.
                scored.num_chunks = work.num_chunks
                scored.rows_read += work.rows_read
                continue
            rows = work.chunk.num_rows
            scored.rows_read += work.chunk.rows_read
            logits = chunk_logits(loaded, work.batches, rows)
            columns = result_columns(apply(function, logits), work.valid, loaded.labels, cfg.top_k, cfg.result_prefix)
            table = pa.Table.from_arrays(
                [work.chunk.table.column(c) for c in given.out_columns] + [columns[f.name] for f in fields],
                schema=schema,
            )
            sink.write(work.chunk.index, table, chunk_stats(work, columns[fields[0].name]))
            if scored.first_commit is None:
                sink.flush()
                scored.first_commit = time.time()
            bar.update(rows)
    return scored


def _finish(cfg: JobConfig, layout, plan, warnings: list[str]) -> JobResult:
    """Write the manifest and _SUCCESS (rank 0 of a distributed run waits for the others first)."""
    from .output import finalize, wait_for_shards

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


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def process_start_time() -> float | None:
    """time.time() at which this process started (Linux: from /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            age = float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return None


def _input_location(spec: str) -> str | None:
    """Where a path, glob or URL input lives (for a glob, the folder above its first wildcard); None for a name
    that is no local path (a Hub dataset)."""
    import glob

    location = spec
    if glob.has_magic(spec):
        location = spec[: min(spec.index(c) for c in "*?[" if c in spec)].rpartition("/")[0] or "."
    return location if "://" in location or os.path.exists(location) else None


def _check_overlap(layout, locations: list, spec: str) -> None:
    """The output may never be the input, nor hold it (an output inside the input folder is excluded instead)."""
    for location in locations:
        if location and layout.contains_url(location):
            where = f" ({location})" if location != spec else ""
            raise OutputError(
                f"Output '{layout.url()}' would overwrite or hold the input '{spec}'{where}; "
                "write the output outside the input."
            )


def chunk_stats(work, labels) -> dict:
    """Counts stored in each part's footer; the manifest sums them over parts."""
    import pyarrow.compute as pc

    if work is None:
        return {
            "rows": 0,
            "empty_text_rows": 0,
            "truncated_rows": 0,
            "real_tokens": 0,
            "padded_tokens": 0,
            "label_counts": {},
        }
    return {
        "rows": work.chunk.num_rows,
        "empty_text_rows": int((~work.valid).sum()),
        "truncated_rows": work.truncated_rows,
        "real_tokens": work.real_tokens,
        "padded_tokens": work.padded_tokens,
        # Counted in Arrow, not row by row in Python.
        "label_counts": {str(v["values"]): v["counts"] for v in pc.value_counts(labels.drop_null()).to_pylist()},
    }
