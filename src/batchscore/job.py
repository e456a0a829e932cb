"""Wire the stages: input -> plan -> scoring -> output.

The only module that knows every stage. A `Job` runs them phase by phase
(open, check, load, write, finish); each stage takes and returns plain data,
so each is tested alone, and this one end to end. The per-chunk scoring
itself is the scoring core's (`scoring.open_scorers`), shared with the
library's `Scorer`.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import JobConfig
from .errors import BatchscoreError, ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from .output import Existing, Output, OutputWriter
    from .output.table import Table
    from .plan import Plan
    from .quarantine.tally import Quarantine
    from .scoring import Scorers, ScoringRules

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    output: str
    manifest: dict
    already_complete: bool = False
    warnings: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None  # (shard, num_shards) when the manifest is left to others
    report: str | None = None  # the page `--report` wrote beside the complete output


def _identity(item: Any) -> Any:
    return item


@dataclass
class ScoredSoFar:
    """What this process's loop over its chunks has seen."""

    num_chunks: int | None = None  # chunks in the whole input, as the reader found
    rows_read: int = 0  # input rows parsed by this process's readers
    first_commit: float | None = None  # when the first part was committed (time.time())


def score(input: str, output: str | None = None, *, config_file: str | None = None, **options: Any) -> dict:
    """Score a file, folder, glob, URL or dataset into a Parquet output, as `batchscore score` does; return
    the manifest.

    `options` are the CLI's options with underscores (`model`, `text_column`,
    `top_k`, `chunk_rows`, `num_shards`, `shard_index`, `overwrite`, ...), then
    `config_file`'s values, then the defaults; BATCHSCORE_* environment
    variables are not read. Errors are `batchscore.errors.BatchscoreError`s
    carrying the CLI's exit code; the warnings the CLI prints are logged
    (logger `batchscore.job`).

    Example::

        import batchscore

        manifest = batchscore.score("reviews.csv", "scored/", model="models/minilm-vader-sentiment", top_k="all")
        manifest["rows"], manifest["label_counts"]
    """
    from .config import build_config
    from .options import OPTIONS

    unknown = sorted(set(options) - {o.name for o in OPTIONS})
    if unknown:
        raise ConfigError(
            f"Unknown option '{unknown[0]}'; options are the CLI's, with underscores (see `batchscore score --help`)."
        )
    cfg = build_config({**options, "input": input, "output": output}, env={}, config_file=config_file)
    result = run_job(cfg)
    for warning in result.warnings:  # what the CLI prints: a resumed run, a cache that refused writes, ...
        log.warning(warning)
    return result.manifest


def run_job(cfg: JobConfig, process_started: float | None = None) -> JobResult:
    """Score cfg.input into cfg.output_path. `process_started` (time.time() of the process start, which the
    CLI passes) makes `startup_seconds` include interpreter start-up and imports; else it counts from here."""
    return Job(cfg, process_started).run()


class Job:
    """One run of `batchscore score`, phase by phase. Everything that can be refused is refused before the
    model loads (open, check); nothing is written before the writer holds the output (write)."""

    def __init__(self, cfg: JobConfig, process_started: float | None = None):
        from .scoring import CLI_HINTS, rules_for

        self.cfg = cfg
        self.started = time.time()
        self.process_started = process_started or self.started
        self.specs = cfg.model_specs
        # Each model's rules (one for a run of one model); known before any loads, so columns are checked first.
        self.all_rules: list[ScoringRules] = rules_for(self.specs, cfg.text_column, cfg.batch_tokens, CLI_HINTS)
        self.rules = self.all_rules[0]
        self.warnings: list[str] = []

    def run(self) -> JobResult:
        self.open()
        self.check()
        self.load()
        result = self.write()
        if self.table is not None and result.shard is None and "table" not in result.manifest:
            from .output.table import publish

            if self.cfg.report:  # from the staged parts, which go with the commit
                shown = f"{self.cfg.output_format} table {self.cfg.output_path}"
                result.report = self._write_report(result, self.output.layout.spec, shown)
            result.manifest = publish(self.table, self.output, result.manifest)  # the one table commit
        elif self.cfg.report and result.shard is None and self.table is None:
            result.report = self._write_report(result, result.output)
        return result

    def _write_report(self, result: JobResult, output: str, shown_as: str | None = None) -> str:
        """--report: the page of the complete `output` beside the output the user named, where the manifest says
        (also on a rerun of a complete one), for the CLI and `batchscore.score` alike. A page that cannot be
        written is the error's exit code; the output is complete and stays so. The report package is imported
        only here."""
        from .output.layout import report_path
        from .report import write_report

        page = result.manifest.get("report") or report_path(result.output)
        return write_report(output, page, shown_as=shown_as).path

    # --- 1. open: output, input, columns, plan ------------------------------------------------------------------

    def open(self) -> None:
        from .output import Output, check_output
        from .plan import for_process, launcher_ranks
        from .preflight import check_places, open_cache, open_input

        cfg = self.cfg
        if cfg.output_format == "parquet":
            self.table: Table | None = None
            self.output: Output = Output.open(cfg.output_path)
            self.input = open_input(cfg, self.output.layout.location, self.all_rules)
        else:
            from .location import Location
            from .output.table import open_table, staging_folder

            # A table's rows are staged as a folder output's parts are, in a folder of the table's named by the job.

            table = self.table = open_table(cfg.output_format, cfg.output_path, cfg.catalog)
            staged = functools.partial(staging_folder, table, cfg)
            self.input = open_input(cfg, table.location, self.all_rules, lambda source: Location.at(staged(source)))
            self.output = Output.open(staged(self.input.source))
        # Before the model load, which can take minutes: a taken output fails at once.
        self.existing: Existing = check_output(self.output, cfg.overwrite)
        # A table's place is the table's (its staging folder is inside): no cache or page may be in it.
        check_places(cfg, self.output.layout.location if self.table is None else self.table.location, self.input)
        self.quarantine = self._open_quarantine()
        self.cache = open_cache(cfg.cache, self.specs)
        # Under torchrun / accelerate launch the ranks are known before accelerate starts, so the check covers
        # this rank's share before the model loads; `load` makes sure accelerate agrees.
        self.ranks = launcher_ranks()
        self.plan: Plan = for_process(cfg, self.input.source.num_rows, *self.ranks)

    def _open_quarantine(self) -> Quarantine | None:
        """--on-bad-row quarantine: where the bad records go, and how many the run may set aside."""
        from .quarantine.budget import parse_budget
        from .quarantine.split import ERROR_COLUMN
        from .quarantine.tally import Quarantine

        cfg = self.cfg
        if cfg.on_bad_row != "quarantine":
            return None
        if ERROR_COLUMN in self.input.out_columns:
            raise ConfigError(
                f"The input has a column '{ERROR_COLUMN}', which --on-bad-row quarantine adds to the output (why a "
                "row has no results); leave it out with --keep-columns, or rename it."
            )
        from .options import DEFAULT_MAX_BAD_ROWS

        budget = parse_budget(cfg.max_bad_rows or DEFAULT_MAX_BAD_ROWS)
        # A table's run stages its quarantine with its parts; the commit publishes it beside the table (write).
        return Quarantine(self.output.layout.url(self.output.layout.quarantine), budget)

    # --- 2. check: parse this process's rows before the model loads ---------------------------------------------

    def check(self) -> None:
        """Parse, before the model loads and before any output, the rows this process will score.

        A ragged row or bad byte at line 9,000,000 fails now, not hours in. Before
        --overwrite clears an old output, every row it clears is parsed, whatever
        the format or store. A rerun of a finished job writes nothing, so it skips
        the check; remote text files are checked as they are scored. The plan
        learns the input's row count here when the format did not tell it.
        Under --on-bad-row quarantine no record stops the run, so the input is
        read once, as it is scored (but before --overwrite clears an old output).
        """
        cfg, source, held = self.cfg, self.input.source, self.existing.state
        self.rows_checked = 0
        if not ((source.local and held != "complete") or (cfg.overwrite and held)):
            return
        if self.quarantine is not None and not (cfg.overwrite and held):
            return
        checked = self.plan
        if cfg.overwrite and cfg.num_shards is None:
            checked = checked.whole()  # a whole --overwrite clears every part, whichever rank clears it
        elif held == "started" and not cfg.overwrite:
            checked = checked.with_committed(self.existing.chunks)  # a resume checks only what it will redo
        before = source.rows_decoded
        rows = checked.check(source, self.input.read_columns)
        self.rows_checked = (source.rows_decoded - before) if source.read_rows is not None else rows
        self.plan = self.plan.with_rows(rows)

    # --- 3. load: the model, once -------------------------------------------------------------------------------

    def load(self) -> None:
        import torch

        from .scoring import open_scorers
        from .scoring.cpu import model_threads

        cfg = self.cfg
        self.threads = model_threads(cfg.threads)
        torch.set_num_threads(self.threads)
        load_started = time.time()
        self.scorer: Scorers = open_scorers(
            self.all_rules,
            cache=self.cache,
            allow_pickle=cfg.allow_pickle,
            trust_remote_code=cfg.trust_remote_code,
            check=self._check_head_columns,
            calibrating=True,
        )
        self.all_rules = [model.rules for model in self.scorer.models]  # completed by each model's head
        self.rules = self.all_rules[0]
        self.load_seconds = time.time() - load_started
        accelerator = self.scorer.models[0].loaded.accelerator
        if (accelerator.process_index, accelerator.num_processes) != self.ranks:
            raise ConfigError(
                f"accelerate runs this as process {accelerator.process_index} of {accelerator.num_processes}, "
                f"but RANK/WORLD_SIZE say {self.ranks[0]} of {self.ranks[1]}; launch with torchrun or "
                "accelerate launch (they set both)."
            )

    def _check_head_columns(self, rules: ScoringRules) -> None:
        """The columns the model's head adds (a multi-label head's `labels`), checked against the kept input
        columns once the model's config is read: before its weights load, and before anything is written."""
        from .scoring import CLI_HINTS

        if rules.adds_head_columns:
            rules.check_columns(self.input.schema.names, self.cfg.keep_columns, self.cfg.id_column, CLI_HINTS)

    # --- 4. write: take the output, resume, score every chunk still to do ---------------------------------------

    def write(self) -> JobResult:
        from .output import OutputWriter

        cfg, plan, scorer = self.cfg, self.plan, self.scorer
        # A few forked workers read and tokenize ahead of a GPU; on CPU they would take the model's cores.
        self.workers = cfg.num_workers
        if self.workers is None:
            self.workers = min(4, os.cpu_count() or 1) if scorer.on_gpu else 0
        self.schema = self._schema()
        identity = self._identity()
        if self.quarantine is not None and self.table is not None:
            from .output.table import commit_id, quarantine_of

            self.quarantine.place = quarantine_of(self.table, commit_id(identity, cfg.table_mode))
        if self.table is not None:
            done = self._already_in_table(identity)
            if done is not None:
                return done
        calibration = self._calibrate()
        scorer = self.scorer
        loaded = scorer.models[0].loaded
        effective = cfg.to_dict() | {
            "max_length": loaded.max_length,
            "precision": loaded.precision,
            "num_workers": self.workers,
            "batch_tokens": scorer.batch_tokens,
        }
        metadata = {
            "batchscore_version": __version__,
            "model": loaded.model_id,
            "revision": loaded.revision,
            **({"models": self._models()} if len(scorer.models) > 1 else {}),
            "config": effective,
            **({"quarantine": self.quarantine.place} if self.quarantine is not None else {}),
            **({"calibration": calibration} if calibration is not None else {}),
        }
        sink = OutputWriter(self.output, self.schema, metadata, identity, plan.overwrite, plan.shard)
        wait = loaded.accelerator.wait_for_everyone  # a barrier across ranks
        if plan.clear_first and not plan.main:
            wait()  # for rank 0 to clear the old output
        with sink:
            if plan.clear_first and plan.main:
                wait()
            if sink.complete:
                return JobResult(cfg.output_path, sink.manifest or {}, already_complete=True)
            self.warnings.extend(sink.warnings)
            if sink.committed:
                self.warnings.append(f"Resuming: {len(sink.committed)} chunks already committed in {cfg.output_path}.")
            self.plan = plan = plan.with_committed(sink.committed)
            startup = time.time() - self.process_started
            if self.quarantine is not None:  # the chunks an earlier run committed count against the budget too
                for stats in sink.committed_stats():
                    self.quarantine.add(stats)
                self.quarantine.check(final=False)  # a rerun with the budget that stopped it scores nothing more
            try:
                scored = self._score_chunks(sink)
            finally:
                if self.quarantine is not None:  # also when the budget stops the run
                    for line in self.quarantine.log_lines():
                        log.warning(line)
            self._finish_cache()
            if self.quarantine is not None:
                self.quarantine.check(final=True)
            assert scored.num_chunks is not None  # every reader ends with an InputEnd
            empty = self.scorer.empty_stats().as_footer()
            sink.finish_shard(self._run_facts(sink, scored, startup), scored.num_chunks, empty)
            shard_summary = sink.shard_stats()
        if not (plan.finalizes and plan.main):
            return JobResult(
                cfg.output_path, shard_summary, warnings=self.warnings, shard=(plan.shard.index, plan.shard.count)
            )
        return self.finish()

    def _calibrate(self) -> dict | None:
        """--precision fastest: each such model in the precision this output's writers use, calibrated on a sample
        of the input unless the output records one already (calibration.py); the record, for the parts' metadata
        and so the manifest. A rerun of a complete output scores nothing, so it calibrates nothing."""
        from .calibration import calibrating, settle

        if not calibrating(self.scorer) or (self.existing.state == "complete" and not self.cfg.overwrite):
            return None
        record, models = settle(self.cfg, self.scorer, self.output, self.input.reopen, self.plan)
        self.scorer = self.scorer.with_models(models)
        return record

    def _already_in_table(self, identity: dict) -> JobResult | None:
        """A table output that has this run's commit already (a rerun after the commit): nothing to score; the
        staging folder a kill left behind the commit goes. A table whose columns clash is refused (exit 5)."""
        from .output.table import commit_id, described, drop_staging

        assert self.table is not None
        self.table.check_schema(self.schema)
        cid = commit_id(identity, self.cfg.table_mode)
        found = self.table.committed(cid)
        if found is None:
            return None
        drop_staging(self.output)
        info = described(self.table, found.version, self.cfg.table_mode, cid) | {"already_committed": True}
        manifest = found.manifest | {"table": info}
        return JobResult(self.cfg.output_path, manifest, already_complete=True)

    def _schema(self) -> pa.Schema:
        import pyarrow as pa

        schema = self.input.schema
        fields = [schema.field(c) for c in self.input.out_columns] + self.scorer.fields
        if self.quarantine is not None:
            from .quarantine.split import error_field

            fields.append(error_field())
        return pa.schema(fields)

    def _identity(self) -> dict:
        from .calibration import calibrating, min_agreement
        from .output import run_identity

        identity = run_identity(self.cfg, self.input.source, self.scorer.identity_parts(), self.input.out_columns)
        if calibrating(self.scorer):  # its bar decides the precision; the sample's size only how well it is judged
            identity |= {"min_agreement": min_agreement(self.cfg)}
        # Quarantining changes which rows the output holds (and adds `error`); its budget changes neither.
        return identity | ({"on_bad_row": "quarantine"} if self.quarantine is not None else {})

    def _models(self) -> list[dict]:
        """Each model of a run of several, as it was loaded, for the parts' metadata."""
        return [
            {
                "model": s.loaded.model_id,
                "revision": s.loaded.revision,
                "prefix": s.rules.prefix,
                "max_length": s.loaded.max_length,
                "precision": s.loaded.precision,
            }
            for s in self.scorer.models
        ]

    def _run_facts(self, sink: OutputWriter, scored: ScoredSoFar, startup: float) -> dict:
        loaded, source = self.scorer.models[0].loaded, self.input.source
        return {
            "input": source.description,
            "input_files": source.files,
            "seconds": round(time.time() - self.started, 3),
            "startup_seconds": round(startup, 3),
            "model_load_seconds": round(self.load_seconds, 3),
            "seconds_to_first_chunk": _round(scored.first_commit and scored.first_commit - self.started),
            "device": str(loaded.device),
            "host": socket.gethostname(),
            "resumed_chunks": len(sink.committed),
            "rows_read": scored.rows_read,
            "rows_checked": self.rows_checked,
            "threads": self.threads,
            **self.cache_facts,  # set by _finish_cache, just before
        }

    def _score_chunks(self, sink: OutputWriter) -> ScoredSoFar:
        """Read, tokenize, score and commit every chunk this process still has to do."""
        import pyarrow as pa
        import torch

        from .plan import InputEnd
        from .progress import Progress
        from .scoring.feed import ChunkDataset, quiet_worker

        plan, scorer, given = self.plan, self.scorer, self.input
        if self.workers:
            # Tokenizers' own thread pool and forked workers don't mix; workers give the parallelism.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        dataset = ChunkDataset(
            plan, given.reopen, given.read_columns, given.out_columns, scorer.worker_step, source=given.source
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            collate_fn=_identity,
            num_workers=self.workers,
            pin_memory=scorer.on_gpu,
            prefetch_factor=2 if self.workers else None,
            worker_init_fn=quiet_worker,
        )
        scored = ScoredSoFar()
        last = time.time()  # when this process's previous chunk was scored (or its loop began)
        cfg = self.cfg
        # A bar on a terminal (or with --progress); lines every --progress-every seconds in a log; nothing with
        # --no-progress. Under a launcher every rank shares stderr: rank 0's progress stands for all.
        bar = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        every = cfg.progress_every if plan.main and cfg.progress is not False and not bar else 0
        with Progress(plan.rows_to_do(), plan.shard.label, bar=plan.main and bar, every=every) as progress:
            for work in loader:
                if isinstance(work, BatchscoreError):  # a DataLoader worker's, with its one-line message
                    raise work
                if isinstance(work, InputEnd):
                    # Every worker ends with one; they agree on the chunk count.
                    scored.num_chunks = work.num_chunks
                    scored.rows_read += work.rows_read
                    continue
                scored.rows_read += work.chunk.rows_read
                scoring_started = time.time()
                chunk = work.chunk
                result = scorer.score(work, progress.batch)
                columns = [chunk.table.column(c) for c in given.out_columns]
                columns += [result.columns[f.name] for f in scorer.fields]
                stats = result.stats.as_footer()
                entries = None
                if self.quarantine is not None:
                    columns, entries, stats = self.quarantine.set_aside(chunk, columns, stats)
                table = pa.Table.from_arrays(columns, schema=self.schema)
                now = time.time()
                stats |= {"progress": self._chunk_progress(last, scoring_started, now)}
                last = now
                sink.write(chunk.index, table, stats, entries)
                if self.quarantine is not None:
                    self.quarantine.check(final=False)  # a count budget stops the run as soon as it is spent
                if scored.first_commit is None:
                    sink.flush()
                    scored.first_commit = time.time()
                progress.chunk(chunk.num_rows)
        return scored

    def _finish_cache(self) -> None:
        """Add the run's last new results to the cache. A cache that cannot take them (full, read-only) costs the
        next run their scoring, not this run its output: a warning, not an error. Every write the cache refused,
        here or in the middle of the run, is counted in the manifest's `cache_write_failures`."""
        # Recorded by every run (None: no cache), so each shard's facts hold it and a sharded manifest sums it.
        report = self.scorer.finish()
        self.cache_facts: dict[str, Any] = {"cache_write_failures": None if report is None else report.write_failures}
        if report is None:
            return
        for message in report.refused:
            self.warnings.append(f"The cache kept none of this run's last new results: {message}")
        if report.skipped:
            path, why = next(iter(report.skipped.items()))
            self.warnings.append(
                f"Skipped {len(report.skipped)} cache file(s) that are damaged or not this identity's (their texts "
                f"were scored again), e.g. {path}: {why}; `batchscore cache compact` removes the damaged ones "
                "batchscore wrote and names the others, which are left for you to move out of the cache."
            )

    def _chunk_progress(self, last: float, scoring_started: float, now: float) -> dict:
        """Where and when a chunk was scored, for its part's footer: `batchscore status` and the report's time
        plot read them (stragglers show per shard). Not summed into the manifest (not whole numbers)."""
        plan = self.plan
        return {
            "shard": [plan.shard.index, plan.shard.count],
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": round(self.started, 3),  # this process's start: rows/s so far and the ETA count from it
            "finished": round(now, 3),
            "seconds": round(now - last, 3),  # since this process's previous chunk: reading and waiting included
            "scoring_seconds": round(now - scoring_started, 3),
            "input_chunks": plan.num_chunks,  # the plan's total when known before reading (else None)
        }

    # --- 5. finish: the manifest and _SUCCESS -------------------------------------------------------------------

    def finish(self) -> JobResult:
        """Write the manifest and _SUCCESS (rank 0 of a distributed run waits for the others first)."""
        from .output import finalize, wait_for_shards
        from .output.layout import report_path

        count = self.plan.shard.count
        if count > 1:
            # Rank 0 of a distributed run. Waiting on the disk, not a collective
            # barrier: after a resume one rank may have hours less to do than another,
            # longer than any NCCL/gloo timeout. If a rank dies, the launcher stops us.
            wait_for_shards(self.output, count)
        report = report_path(self.cfg.output_path) if self.cfg.report else None  # written by `run`, after
        done = finalize(self.output, wait=count > 1, report=report)
        self.warnings.extend(done.warnings)
        manifest = done.manifest
        if manifest["rows"] == 0:
            self.warnings.append("The input has no rows; wrote an empty output with the schema.")
        return JobResult(self.cfg.output_path, manifest, warnings=self.warnings)


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
