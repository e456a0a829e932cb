"""--on-bad-row quarantine, for one process of a job: where its bad records go, what each scored chunk sets
aside (split), how many it has met, and the budget they are held to (budget). The job asks it; nothing else does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .budget import Budget


@dataclass
class Quarantine:
    """--on-bad-row quarantine, for one process: where the bad records go, and how many it has met."""

    place: str  # the quarantine folder, as the user would type it
    budget: Budget
    bad: int = 0  # bad records in this shard's committed chunks (an earlier run's included)
    records: int = 0  # records read in them
    kinds: dict = field(default_factory=dict)
    new_kinds: dict = field(default_factory=dict)  # met by this process (kinds also holds earlier runs')
    examples: dict = field(default_factory=dict)  # kind -> the first entry of that kind this process met

    def add(self, stats: dict) -> None:
        self.bad += stats.get("bad_rows", 0)
        self.records += stats.get("records", stats.get("rows", 0))
        for kind, count in (stats.get("bad_row_kinds") or {}).items():
            self.kinds[kind] = self.kinds.get(kind, 0) + count

    def set_aside(self, chunk: Any, columns: list, stats: dict) -> tuple[list, Any, dict]:
        """A scored chunk's output columns without the records that have no row, plus `error`; its quarantine
        entries; its footer stats with the bad records counted (they are no empty texts)."""
        from .rows import BAD
        from .split import split_chunk

        if BAD not in chunk.table.column_names:  # a reader without bad records (a Hub or saved dataset, a table)
            import pyarrow as pa

            columns = columns + [pa.nulls(chunk.num_rows, pa.string())]
            stats = stats | {"records": chunk.num_rows, "bad_rows": 0, "bad_rows_kept": 0, "bad_row_kinds": {}}
            self.add(stats)
            return columns, None, stats
        split = split_chunk(chunk.table, chunk.start)
        self._first_of_kinds(split.entries)
        columns = [c.filter(split.keep) for c in columns] + [split.errors]
        bad = sum(split.kinds.values())
        for kind, count in split.kinds.items():
            self.new_kinds[kind] = self.new_kinds.get(kind, 0) + count
        stats = (
            stats
            | split.stats
            | {
                "records": chunk.num_rows,
                "rows": chunk.num_rows - (bad - split.kept),
                "empty_text_rows": stats.get("empty_text_rows", 0) - bad,
            }
        )
        self.add(stats)
        return columns, split.entries, stats

    def _first_of_kinds(self, entries: Any) -> None:
        for entry in entries.slice(0, 1000).to_pylist():
            self.examples.setdefault(entry["error_kind"], entry)

    def log_lines(self) -> list[str]:
        """One line per kind of bad record this run met (not one per record), with its first, for the log."""
        lines = []
        for kind, entry in sorted(self.examples.items()):
            where = entry["source_file"] or "the input"
            if entry["line"] is not None:
                at = f"line {entry['line']:,}"
            elif entry["row"] is not None:
                at = f"row {entry['row']:,}"
            else:
                at = f"input row {entry['input_row']:,}"
            lines.append(
                f"Set aside {self.new_kinds.get(kind, 0):,} {kind} records in {self.place}; the first: {where}, "
                f"{at}: {entry['error_message']}."
            )
        return lines

    def check(self, final: bool) -> None:
        from .budget import over_budget

        if self.bad and self.budget.over(self.bad, self.records, final):
            raise over_budget(self.bad, self.budget, self.records, self.kinds, self.place)
