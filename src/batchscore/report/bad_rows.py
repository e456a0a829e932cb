"""The report's "Bad records" section: a few of the quarantine's entries of each kind (--on-bad-row quarantine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..output.survey import Survey

PER_KIND = 3  # samples shown of each kind
RAW_CHARS = 300  # of a record's bytes, shown


def bad_samples(survey: Survey, kinds: dict[str, int], per_kind: int = PER_KIND) -> list[dict[str, Any]]:
    """Up to `per_kind` entries of each kind in `kinds`, in input order, read file by file until each has them."""
    import pyarrow.parquet as pq

    from ..output.layout import part_index

    layout, store = survey.layout, survey.store
    found: dict[str, list[dict[str, Any]]] = {}
    names = sorted(n for n in store.names(layout.quarantine) if part_index(n) is not None)
    columns = ["input_row", "source_file", "line", "row", "raw", "error_kind", "error_message"]
    for name in names:
        if all(len(found.get(k, [])) >= min(per_kind, n) for k, n in kinds.items()):
            break
        with layout.fs.open(f"{layout.quarantine}/{name}", "rb") as fh:
            entries = pq.read_table(fh, columns=columns).to_pylist()
        for entry in entries:
            taken = found.setdefault(entry["error_kind"], [])
            if len(taken) < per_kind:
                raw = entry.pop("raw")
                entry["raw"] = None if raw is None else raw[: RAW_CHARS * 4].decode("utf-8", "replace")[:RAW_CHARS]
                taken.append(entry)
    return [e for kind in sorted(found) for e in found[kind]]
