"""`batchscore status OUT`: how far a run is, read from the output alone; writes nothing, loads no model.

Everything comes from `output.survey`: the committed parts (their footers say when, where and by which shard
each chunk was scored, and the plan's total when the input's size was known), the shards' markers, the lease
records' heartbeats (object stores) or the kernel locks' holders (local disks, from /proc/locks).

Exit codes, for a scheduler's sensor: 0 complete, 10 in progress (a live writer holds the output),
11 stopped unfinished (nobody writes: a killed or failed run to rerun, or shards to run or finalize), and
the usual error codes (5: no output there, not a batchscore output).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import EXIT_IN_PROGRESS, EXIT_OK, EXIT_STOPPED
from .logs import duration


@dataclass
class ShardStatus:
    shard: int
    num_shards: int
    committed: int  # its chunks committed
    total: int | None  # its chunks in the plan (None: the input's size is not known yet)
    rows: int
    finished: bool  # it has left its marker: all its chunks are committed
    last_commit: float | None  # time.time() of its newest part


@dataclass
class Status:
    output: str
    state: str  # complete | in progress | stopped
    exit_code: int
    chunks_total: int | None
    chunks_committed: int
    rows_done: int
    shards: list[ShardStatus] = field(default_factory=list)
    holders: list[dict[str, Any]] = field(default_factory=list)
    rows_per_second: float | None = None
    eta_seconds: float | None = None
    damaged: list[int] = field(default_factory=list)
    other_runs: list[int] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    next_step: str | None = None
    notes: list[str] = field(default_factory=list)
    # --on-bad-row quarantine: records, bad_rows, bad_row_kinds, quarantined_rows, error_rows, quarantine
    bad_records: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def status(spec: str, finalize_target: str | None = None) -> Status:
    """`finalize_target`: what `batchscore finalize` is given for this output, where it is not `spec` (a table's
    staged run is finalized through its table)."""
    from .output.survey import survey

    found = survey(spec)
    url = found.layout.url()
    committed = len(found.parts)
    rows = sum(p.rows for p in found.parts)
    if found.complete:
        manifest = found.manifest or {}
        chunks = manifest["chunks"] if isinstance(manifest.get("chunks"), int) else committed
        rows = manifest["rows"] if isinstance(manifest.get("rows"), int) else rows
        done = Status(url, "complete", EXIT_OK, chunks, chunks, rows, rows_per_second=_rate(manifest))
        done.bad_records = _bad_records(manifest, found)
        return done
    total = found.num_chunks
    count = _shard_count(found)
    shards = []
    for index in range(count):
        mine = [p for p in found.parts if p.index % count == index]
        finished = any(m.get("shard") == index and m.get("num_shards") == count for m in found.markers)
        times = [p.progress["finished"] for p in mine if isinstance(p.progress.get("finished"), (int, float))]
        shards.append(
            ShardStatus(
                shard=index,
                num_shards=count,
                committed=len(mine),
                total=None if total is None else len(range(index, total, count)),
                rows=sum(p.rows for p in mine),
                finished=finished,
                last_commit=max(times, default=None),
            )
        )
    live = [h for h in found.holders if h.get("live")]
    state, code = ("in progress", EXIT_IN_PROGRESS) if live else ("stopped", EXIT_STOPPED)
    rate = _rows_per_second(found)
    chunk_rows = (found.identity or {}).get("chunk_rows")
    eta = None
    if rate and total is not None and isinstance(chunk_rows, int):
        eta = max(total - committed, 0) * chunk_rows / rate
    result = Status(
        url,
        state,
        code,
        total,
        committed,
        rows,
        shards=shards,
        holders=found.holders,
        rows_per_second=rate,
        eta_seconds=eta if live else None,
        damaged=found.damaged,
        other_runs=found.other_runs,
        foreign=found.foreign,
        notes=found.notes,
    )
    if not live:
        result.next_step = _next_step(finalize_target or found.layout.url(), shards, count)
    if found.parts:
        from .output.manifest import sum_stats

        result.bad_records = _bad_records(sum_stats([p.stats for p in found.parts]), found)
    return result


def _bad_records(counts: dict[str, Any], found: Any) -> dict[str, Any] | None:
    """The bad records counted so far (a run with --on-bad-row quarantine), and where they are."""
    if "bad_rows" not in counts:
        return None
    from .output.layout import quarantine_path

    keys = ("records", "bad_rows", "bad_row_kinds", "quarantined_rows", "error_rows")
    return {k: counts.get(k) for k in keys} | {"quarantine": quarantine_path(found.layout.url())}


def table_status(output_format: str, spec: str, catalog: str | None = None) -> Status:
    """The status of a Delta or Iceberg table output: its staged runs (each read as a folder output is), else
    batchscore's newest commit to it. A staged run that is complete but not committed (killed before its
    commit) is stopped: a rerun or a finalize commits it."""
    from .errors import OutputError
    from .output.table import open_table, staged_runs

    table = open_table(output_format, spec, catalog)
    flags = f" --output-format {output_format}" + (f" --catalog {catalog}" if catalog else "")
    runs = [status(run, finalize_target=f"{spec}{flags}") for run in staged_runs(table)]
    if not runs:
        last = table.latest_commit()
        if last is None:
            raise OutputError(
                f"{output_format.capitalize()} table '{spec}' has no run of batchscore, staged or committed."
            )
        m = last.manifest
        chunks = m["chunks"] if isinstance(m.get("chunks"), int) else 0
        rows = m["rows"] if isinstance(m.get("rows"), int) else 0
        where = "version" if output_format == "delta" else "snapshot"
        found = Status(spec, "complete", EXIT_OK, chunks, chunks, rows, rows_per_second=_rate(m))
        found.notes.append(
            f"last batchscore commit: {where} {last.version} ({m.get('config', {}).get('table_mode', 'append')})"
        )
        return found
    found = next((r for r in runs if r.state == "in progress"), runs[0])
    found.notes.append(f"staged in {found.output}, not yet committed to the table")
    found.output = spec
    if found.state == "complete":
        found.state, found.exit_code = "stopped", EXIT_STOPPED
        found.next_step = f"every chunk is staged: run batchscore finalize {spec}{flags} (or rerun the score command)"
    if len(runs) > 1:
        found.notes.append(f"{len(runs) - 1} other run(s) staged in the table as well")
    return found


def _rate(manifest: dict[str, Any]) -> float | None:
    seconds, rows = manifest.get("seconds"), manifest.get("rows")
    if isinstance(seconds, (int, float)) and seconds > 0 and isinstance(rows, int):
        return rows / seconds
    return None


def _shard_count(found: Any) -> int:
    """How many shards the run is split into: the markers', else what the parts' footers say, else 1."""
    counts: Counter[int] = Counter(m["num_shards"] for m in found.markers if isinstance(m.get("num_shards"), int))
    counts.update(p.shard[1] for p in found.parts if p.shard is not None)
    return counts.most_common(1)[0][0] if counts else 1


def _rows_per_second(found: Any) -> float | None:
    """Rows a second over the processes writing now (each shard's latest process: rows since it started)."""
    latest: dict[int, float] = {}
    for part in found.parts:
        started, shard = part.progress.get("started"), part.shard
        if isinstance(started, (int, float)) and shard is not None:
            latest[shard[0]] = max(latest.get(shard[0], 0.0), started)
    rate = 0.0
    for shard, started in latest.items():
        mine = [
            p for p in found.parts if p.shard is not None and p.shard[0] == shard and p.progress["started"] == started
        ]
        last = max(p.progress.get("finished") or started for p in mine)
        if last > started:
            rate += sum(p.rows for p in mine) / (last - started)
    return rate or None


def _next_step(url: str, shards: list[ShardStatus], count: int) -> str:
    if count > 1 and all(s.finished for s in shards):
        return f"every shard has finished: run batchscore finalize {url}"
    if count > 1:
        todo = [str(s.shard) for s in shards if not s.finished]
        return (
            f"nobody is writing it: run (or rerun) shard {', '.join(todo)} of {count}, then batchscore finalize {url}"
        )
    return "nobody is writing it: rerun the same batchscore score command to resume"


def _ago(when: float | None) -> str:
    return "never" if when is None else f"{duration(time.time() - when)} ago"


def describe(found: Status) -> list[str]:
    """The status as lines for people."""
    total = found.chunks_total
    share = f" ({found.chunks_committed / total:.0%})" if total else ""
    lines = [
        f"{found.output}: {found.state}",
        f"chunks: {found.chunks_committed:,} of {f'{total:,}' if total is not None else '?'} committed{share}; "
        f"rows: {found.rows_done:,}",
    ]
    if found.state != "complete":
        for s in found.shards:
            of = f"{s.total:,}" if s.total is not None else "?"
            name = "run" if s.num_shards == 1 else f"shard {s.shard} of {s.num_shards}"
            done = ", finished" if s.finished else ""
            lines.append(
                f"  {name}: {s.committed:,} of {of} chunks, {s.rows:,} rows, last commit {_ago(s.last_commit)}{done}"
            )
        for h in found.holders:
            who = f"{h.get('host')} pid {h.get('pid')}" if h.get("host") else f"pid {h.get('pid')}"
            if "heartbeat" in h:
                beat = f"heartbeat {duration(h['age'])} ago (ttl {h['ttl']:g}s){'' if h['live'] else ', expired'}"
            else:
                beat = f"holds the {h.get('mode')} lock {h.get('lock')}"
            lines.append(f"  writer ({h['shard']}): {who}, {beat}")
        if not found.holders:
            lines.append("  writer: none")
    if found.rows_per_second:
        eta = f"; ETA {duration(found.eta_seconds)}" if found.eta_seconds is not None else ""
        lines.append(f"rate: {found.rows_per_second:,.0f} rows/s{eta}")
    if found.damaged:
        lines.append(f"damaged parts (a rerun redoes them): chunks {', '.join(map(str, found.damaged[:20]))}")
    if found.other_runs:
        lines.append(f"parts of a run with other settings: chunks {', '.join(map(str, found.other_runs[:20]))}")
    if found.foreign:
        lines.append(f"files batchscore did not write: {', '.join(found.foreign[:10])}")
    bad = found.bad_records
    if bad:
        kinds = ", ".join(f"{n:,} {k}" for k, n in (bad.get("bad_row_kinds") or {}).items())
        lines.append(
            f"bad records: {bad['bad_rows']:,} of {bad['records']:,} read{f' ({kinds})' if kinds else ''}, "
            f"in {bad['quarantine']}"
        )
    lines += found.notes
    if found.next_step:
        lines.append(f"next: {found.next_step}")
    return lines
