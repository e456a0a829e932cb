"""`batchscore redrive OUT FILE`: the quarantined records of an output, written back as an input file in their
own format (CSV/TSV with their file's header), to fix and score again."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, InputError, OutputError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".ndjson": "json"}


@dataclass
class Redriven:
    records: int  # written to the file
    without_raw: int  # left out: no bytes read from a file (an undecodable Parquet page, a rejected text)
    path: str


def redrive(output: str, target: str, only_without_row: bool = False) -> Redriven:
    """Write the raw records of `output`'s quarantine to `target` (a new local file), in input order."""
    import os

    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from .location import Location
    from .output.layout import quarantine_path

    place = quarantine_path(output)
    location = Location.at(place)
    if not location.fs.exists(location.path):
        raise OutputError(f"No quarantine at '{place}': the run of '{output}' set no record aside.")
    if os.path.exists(target):
        raise ConfigError(f"'{target}' exists; redrive writes a new file: pass another path.")
    table = ds.dataset(location.path, format="parquet", filesystem=location.fs).to_table()
    if only_without_row:
        table = table.filter(pc.invert(table.column("has_output_row")))
    table = table.sort_by("input_row")
    # A record is written where its bytes were read from a file (a text the tokenizer rejected was not: it is
    # in its output row).
    sources = table.column("source_file").to_pylist()
    raws = [r if f else None for f, r in zip(sources, table.column("raw").to_pylist())]
    files = sorted({f for f, r in zip(sources, raws) if r is not None})
    formats = {_format(f) for f in files}
    if len(formats) > 1:
        raise InputError(
            f"The quarantine holds records of several formats ({', '.join(sorted(formats))}); none written."
        )
    header = _header(files[0]) if files and formats != {"json"} else b""
    kept = [r for r in raws if r is not None]
    if not kept:  # no file: an empty one would look like records to fix
        return Redriven(0, len(raws), target)
    with open(target, "xb") as fh:
        fh.write(header)
        for raw in kept:
            fh.write(raw.rstrip(b"\r") + b"\n")
    return Redriven(len(kept), len(raws) - len(kept), target)


def _format(path: str) -> str:
    from .input.streams import split_compression

    name = split_compression(path)[0].lower()
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt
    return "parquet"


def _header(source: str) -> bytes:
    """The header line of a CSV/TSV input file, as it was."""
    from .input.streams import open_stream
    from .location import Location

    where = Location.at(source)
    try:
        with open_stream(where.fs, where.path) as stream:
            line = stream.readline()
    except OSError as exc:
        raise InputError(f"Cannot read the header of '{source}' ({exc}); it is needed for the CSV/TSV file.") from None
    return line if line.endswith(b"\n") else line + b"\n"
