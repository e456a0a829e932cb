"""Read a Delta Lake or Iceberg table back with every reader we promise, and check that they agree.

Plain helpers (no fixtures): ``from table_readers import read_delta, read_iceberg, assert_all_readers_agree``.

Delta   ``read_delta(location, key, version=None, reader="deltalake" | "polars" | "duckdb", storage_options=None)``
Iceberg ``read_iceberg(catalog, "ns.table", key, snapshot_id=None, reader="pyiceberg" | "polars" | "duckdb",
        properties=None, catalog_name="batchscore")``; `catalog` is a SQL catalog URI (sqlite:///..., postgresql://...)
        or a pyiceberg Catalog. The catalog name matters for SQL catalogs (a column of their tables): batchscore
        uses "batchscore".
Both    ``assert_all_readers_agree(location_or_catalog, key, identifier=None, ...)``: Iceberg when `identifier` is
        given, Delta otherwise; returns the agreed rows (normalised, sorted by key).

Rows come back as a pyarrow Table, ``normalise``d and sorted by `key` (a column or a list of columns; the other
plain columns break ties). Readers differ in types that mean the same (string / large_string / string_view,
dictionary-encoded strings, nullability, the name of UTC), and in column order: ``normalise`` irons out the
types, and the comparison takes the columns in the first reader's order.

S3 (e.g. the moto server of tests/stores.py): for an ``s3://`` location without explicit options, the options
come from the environment the ``s3_server`` fixture sets (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...):
``S3Config.from_env()``; ``S3Config.from_server(s3_server)`` does the same from the fixture's value.

DuckDB. DuckDB 2.0.1 has no delta/iceberg/httpfs extension that loads offline: the PyPI packages that ship them
(duckdb-extension-delta, -iceberg, -httpfs, the meta-package duckdb-extensions) stop at 1.5.5 and DuckDB
refuses their files ("built specifically for DuckDB version 'v1.5.5'"). So ``duckdb_extension`` loads one only
when a build for this very DuckDB version is there (its extension directory, or a ``duckdb_extension_<name>``
package with ``extensions/v<version>/<name>.duckdb_extension``), and otherwise the DuckDB reader reads the
snapshot's data files, listed by deltalake / pyiceberg, with DuckDB's own ``read_parquet``:
- Delta: per partition, ``read_parquet([...], union_by_name=true)`` plus the partition values from the add
  actions (delta-rs percent-encodes partition folders, so hive_partitioning would misread them); tables with
  deletion vectors or column mapping are refused (NotImplementedError).
- Iceberg: ``read_parquet([...], schema=MAP {field_id: {name, type, default_value}})`` so columns are matched by
  Iceberg field id (renames and added columns read right); snapshots with delete files are refused.
On S3, that DuckDB reads through an fsspec s3fs filesystem registered on the connection (no httpfs needed).
``duckdb_mode(kind)`` says which path a read takes. Extensions are never installed or auto-loaded (no network).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import pyarrow as pa

__all__ = [
    "S3Config",
    "read_delta",
    "read_iceberg",
    "assert_all_readers_agree",
    "normalise",
    "duckdb_connect",
    "duckdb_extension",
    "duckdb_mode",
    "DELTA_READERS",
    "ICEBERG_READERS",
    "CATALOG_NAME",
]

CATALOG_NAME = "batchscore"  # batchscore.tables.catalog.DEFAULT_NAME


# --------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Config:
    """Where an S3-compatible server is and how to sign for it; turned into each library's options."""

    endpoint: str  # http://127.0.0.1:PORT
    key_id: str = "testing"
    secret: str = "testing"
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: dict | None = None) -> S3Config | None:
        """From AWS_ENDPOINT_URL & co. (what the s3_server fixture puts in os.environ); None without an endpoint."""
        env = os.environ if env is None else env
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if not endpoint:
            return None
        return cls(
            endpoint=endpoint,
            key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
            secret=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    @classmethod
    def from_server(cls, server: Any) -> S3Config:
        """From tests/stores.py's S3Server."""
        return cls.from_env({**server.env, "AWS_ENDPOINT_URL": server.endpoint})  # type: ignore[return-value]

    def delta_options(self) -> dict[str, str]:
        """deltalake / polars storage_options. Commits are safe against concurrent writers without a lock:
        delta-rs 1.x writes _delta_log/N.json with `If-None-Match: *`, which moto honours (HTTP 412 -> retry).
        AWS_S3_ALLOW_UNSAFE_RENAME is not needed (and changes nothing) with delta-rs 1.6."""
        options = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": self.region,
        }
        if self.endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
        return options

    def iceberg_properties(self) -> dict[str, str]:
        """pyiceberg catalog / FileIO properties (polars.scan_iceberg takes the same as storage_options)."""
        return {
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": self.key_id,
            "s3.secret-access-key": self.secret,
            "s3.region": self.region,
        }

    def duckdb_secret_sql(self, name: str = "moto") -> str:
        """CREATE SECRET for DuckDB's httpfs (used only when the extensions load)."""
        parts = urlsplit(self.endpoint)
        return (
            f"CREATE OR REPLACE SECRET {name} (TYPE s3, KEY_ID {_lit(self.key_id)}, SECRET {_lit(self.secret)}, "
            f"REGION {_lit(self.region)}, ENDPOINT {_lit(parts.netloc)}, URL_STYLE 'path', "
            f"USE_SSL {'true' if parts.scheme == 'https' else 'false'})"
        )

    def s3fs(self):
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint,
            key=self.key_id,
            secret=self.secret,
            client_kwargs={"region_name": self.region},
            skip_instance_cache=True,
            use_listings_cache=False,
        )


def _is_s3(location: str) -> bool:
    return location.startswith(("s3://", "s3a://"))


def _delta_options(location: str, storage_options: dict | None) -> dict | None:
    if storage_options is not None or not _is_s3(location):
        return storage_options
    s3 = S3Config.from_env()
    return s3.delta_options() if s3 else None


def _s3_of_delta_options(options: dict | None) -> S3Config | None:
    if not options:
        return S3Config.from_env()
    upper = {k.upper(): v for k, v in options.items()}
    return S3Config.from_env({**os.environ, **upper})


# --------------------------------------------------------------------------- normalising, sorting


def _norm_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _norm_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(_norm_type(t.value_type))
    if pa.types.is_list(t):
        return pa.list_(_norm_type(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_norm_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _norm_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_norm_type(t.key_type), _norm_type(t.item_type))
    if pa.types.is_timestamp(t) and t.tz in ("Etc/UTC", "UTC", "+00:00", "Z", "utc"):
        return pa.timestamp(t.unit, "UTC")
    return t


def normalise(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """Canonical types (string, binary, list, decoded dictionaries, tz "UTC"), every field nullable, no metadata;
    columns in the order `columns` gives (default: as they are)."""
    columns = list(table.column_names) if columns is None else columns
    arrays, fields = [], []
    for name in columns:
        column = table.column(name)
        target = _norm_type(column.type)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if column.type != target:
            column = column.cast(target)
        arrays.append(column)
        fields.append(pa.field(name, target, nullable=True))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _keys(key: str | list[str]) -> list[str]:
    return [key] if isinstance(key, str) else list(key)


def _sorted(table: pa.Table, key: str | list[str]) -> pa.Table:
    """`table` normalised (pyarrow cannot sort string_view) and sorted by `key`, then its other plain columns."""
    table = normalise(table)
    keys = _keys(key)
    missing = [k for k in keys if k not in table.column_names]
    if missing:
        raise KeyError(f"sort key {missing} not among the columns {table.column_names}")
    plain = [
        n
        for n in table.column_names
        if n not in keys
        and not pa.types.is_nested(table.schema.field(n).type)
        and not pa.types.is_dictionary(table.schema.field(n).type)
    ]
    return table.sort_by([(k, "ascending") for k in keys + plain])


# --------------------------------------------------------------------------- DuckDB


def duckdb_connect():
    """A DuckDB connection that never reaches for the network (no extension auto-install/auto-load), in UTC."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    con.execute("SET TimeZone = 'UTC'")
    return con


def duckdb_extension_file(name: str) -> Path | None:
    """The `name` extension built for this DuckDB version, as shipped by a `duckdb_extension_<name>` package."""
    import duckdb

    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if path.is_file():
            return path
    return None


def duckdb_extension(con, name: str) -> str | None:
    """Load extension `name` offline: from DuckDB's extension directory (installed before), else from a
    `duckdb_extension_<name>` package built for this DuckDB version. Returns where from, or None."""
    import duckdb

    try:
        con.execute(f"LOAD {name}")
        return "extension directory"
    except duckdb.Error:
        pass
    path = duckdb_extension_file(name)
    if path is None:
        return None
    try:
        con.execute(f"LOAD {_lit(str(path))}")
    except duckdb.Error:
        return None
    return str(path)


_MODES: dict[tuple[str, bool], str] = {}


def duckdb_mode(kind: str, s3: bool = False) -> str:
    """How the DuckDB reader reads `kind` ("delta" or "iceberg"): "delta_scan" / "iceberg_scan" (the extension
    loads; on S3 httpfs too) or "read_parquet" (the data files that deltalake / pyiceberg list)."""
    cache_key = (kind, s3)
    if cache_key not in _MODES:
        con = duckdb_connect()
        try:
            ok = duckdb_extension(con, kind) is not None and (not s3 or duckdb_extension(con, "httpfs") is not None)
        finally:
            con.close()
        _MODES[cache_key] = f"{kind}_scan" if ok else "read_parquet"
    return _MODES[cache_key]


def _lit(value: Any) -> str:
    """A SQL literal."""
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_types(con, schema: pa.Schema) -> dict[str, str]:
    """DuckDB's type for each field of an Arrow schema."""
    con.register("__schema_probe", schema.empty_table())
    try:
        return {row[0]: row[1] for row in con.execute("DESCRIBE SELECT * FROM __schema_probe").fetchall()}
    finally:
        con.unregister("__schema_probe")


def _duckdb_arrow(relation) -> pa.Table:
    table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.fetch_arrow_table()
    return pa.table(table)


def _register_s3(con, s3: S3Config | None) -> None:
    if s3 is not None:
        con.register_filesystem(s3.s3fs())


# --------------------------------------------------------------------------- Delta


def _delta_table(location: str, version: int | None, storage_options: dict | None):
    from deltalake import DeltaTable

    return DeltaTable(location, version=version, storage_options=storage_options)


def _delta_deltalake(location: str, version: int | None, storage_options: dict | None) -> pa.Table:
    # Through delta-rs's own DataFusion, not DeltaTable.to_pyarrow_table(): with deltalake 1.6.6 + pyarrow 26,
    # the pyarrow-dataset path aborts the interpreter at exit about one run in three
    # ("terminate called without an active exception", exit 134).
    from deltalake import QueryBuilder

    dt = _delta_table(location, version, storage_options)
    result = QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all()
    table = pa.table(result)
    schema = pa.schema(dt.schema().to_arrow())
    return table.select(schema.names)


def _delta_polars(location: str, version: int | None, storage_options: dict | None) -> pa.Table:
    import polars as pl

    return pl.read_delta(location, version=version, storage_options=storage_options).to_arrow()


def _delta_duckdb(location: str, version: int | None, storage_options: dict | None) -> pa.Table:
    s3 = _s3_of_delta_options(storage_options) if _is_s3(location) else None
    if duckdb_mode("delta", s3=s3 is not None) == "delta_scan" and version is None:
        con = duckdb_connect()
        duckdb_extension(con, "delta")
        if s3 is not None:
            duckdb_extension(con, "httpfs")
            con.execute(s3.duckdb_secret_sql())
        return _duckdb_arrow(con.sql(f"SELECT * FROM delta_scan({_lit(location)})"))
    return _delta_duckdb_files(location, version, storage_options, s3)


def _delta_duckdb_files(location: str, version: int | None, storage_options: dict | None, s3) -> pa.Table:
    """DuckDB's read_parquet over the data files of the version, partition values from the add actions."""
    dt = _delta_table(location, version, storage_options)
    metadata = dt.metadata()
    features = set(dt.protocol().reader_features or [])
    if {"deletionVectors", "columnMapping"} & features or metadata.configuration.get(
        "delta.columnMapping.mode", "none"
    ) not in ("none", None):
        raise NotImplementedError(f"DuckDB without the delta extension cannot read {location}: {sorted(features)}")
    schema = pa.schema(dt.schema().to_arrow())
    parts = list(metadata.partition_columns)
    con = duckdb_connect()
    _register_s3(con, s3)
    types = _duckdb_types(con, schema)
    uris = dt.file_uris()
    if not uris:
        return _duckdb_arrow(con.from_arrow(schema.empty_table()))
    groups: dict[tuple, list[str]] = {}
    if parts:
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        by_path = {unquote(a["path"]): tuple(a.get(f"partition.{p}") for p in parts) for a in actions}
        for uri in uris:
            found = [values for rel, values in by_path.items() if uri.endswith("/" + rel) or uri == rel]
            if len(found) != 1:
                raise RuntimeError(f"cannot match {uri} to one add action of {location}")
            groups.setdefault(found[0], []).append(uri)
    else:
        groups[()] = list(uris)
    selects = []
    for values, files in groups.items():
        extra = "".join(
            f", CAST({_lit(None if v is None else str(v))} AS {types[p]}) AS {_ident(p)}" for p, v in zip(parts, values)
        )
        file_list = "[" + ", ".join(_lit(f) for f in files) + "]"
        # the files' own columns, less any copy of a partition column (the log's value is the truth)
        own = f"COLUMNS(lambda c: c NOT IN ({', '.join(_lit(p) for p in parts)}))" if parts else "*"
        selects.append(
            f"SELECT {own}{extra} FROM read_parquet({file_list}, union_by_name = true, hive_partitioning = false)"
        )
    union = " UNION ALL BY NAME ".join(selects)
    present = {row[0] for row in con.execute(f"DESCRIBE {union}").fetchall()}
    columns = ", ".join(
        f"CAST({_ident(n) if n in present else 'NULL'} AS {types[n]}) AS {_ident(n)}" for n in schema.names
    )
    return _duckdb_arrow(con.sql(f"SELECT {columns} FROM ({union})"))


DELTA_READERS: dict[str, Callable[[str, int | None, dict | None], pa.Table]] = {
    "deltalake": _delta_deltalake,
    "polars": _delta_polars,
    "duckdb": _delta_duckdb,
}


def read_delta(
    location: str | os.PathLike,
    key: str | list[str],
    version: int | None = None,
    *,
    reader: str = "deltalake",
    storage_options: dict | None = None,
) -> pa.Table:
    """The rows of the Delta table at `location` (a path or URL; `version`: time travel) read by `reader`,
    sorted by `key`. s3:// without storage_options: the S3 server of the environment (S3Config.from_env)."""
    location = os.fspath(location)
    options = _delta_options(location, storage_options)
    return _sorted(DELTA_READERS[reader](location, version, options), key)


# --------------------------------------------------------------------------- Iceberg


def _iceberg_properties(properties: dict | None) -> dict:
    if properties is not None:
        return dict(properties)
    s3 = S3Config.from_env()
    return s3.iceberg_properties() if s3 else {}


def _iceberg_table(catalog: Any, identifier: str, properties: dict, catalog_name: str):
    if isinstance(catalog, str):
        from pyiceberg.catalog.sql import SqlCatalog

        catalog = SqlCatalog(catalog_name, uri=catalog, **properties)
    return catalog.load_table(identifier)


def _s3_of_iceberg(properties: dict) -> S3Config | None:
    if "s3.endpoint" not in properties:
        return S3Config.from_env()
    return S3Config(
        endpoint=properties["s3.endpoint"],
        key_id=properties.get("s3.access-key-id", "testing"),
        secret=properties.get("s3.secret-access-key", "testing"),
        region=properties.get("s3.region", "us-east-1"),
    )


def _iceberg_pyiceberg(table, snapshot_id: int | None, properties: dict) -> pa.Table:
    return table.scan(snapshot_id=snapshot_id).to_arrow()


def _iceberg_polars(table, snapshot_id: int | None, properties: dict) -> pa.Table:
    import polars as pl

    storage = {k: v for k, v in {**table.io.properties, **properties}.items() if k.startswith("s3.")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "install polars_iceberg for faster planning"; region guessing
        frame = pl.scan_iceberg(table, snapshot_id=snapshot_id, storage_options=storage or None).collect()
    return frame.to_arrow()


def _iceberg_duckdb(table, snapshot_id: int | None, properties: dict) -> pa.Table:
    s3 = _s3_of_iceberg({**table.io.properties, **properties}) if _is_s3(table.metadata_location) else None
    if duckdb_mode("iceberg", s3=s3 is not None) == "iceberg_scan":
        con = duckdb_connect()
        duckdb_extension(con, "iceberg")
        if s3 is not None:
            duckdb_extension(con, "httpfs")
            con.execute(s3.duckdb_secret_sql())
        snap = "" if snapshot_id is None else f", snapshot_from_id => {int(snapshot_id)}"
        return _duckdb_arrow(con.sql(f"SELECT * FROM iceberg_scan({_lit(table.metadata_location)}{snap})"))
    return _iceberg_duckdb_files(table, snapshot_id, s3)


def _iceberg_duckdb_files(table, snapshot_id: int | None, s3: S3Config | None) -> pa.Table:
    """DuckDB's read_parquet over the snapshot's data files, columns matched by Iceberg field id."""
    scan = table.scan(snapshot_id=snapshot_id)
    schema = scan.projection()  # the snapshot's schema when time travelling
    arrow_schema = schema.as_arrow()
    tasks = list(scan.plan_files())
    if any(task.delete_files for task in tasks):
        raise NotImplementedError("DuckDB without the iceberg extension: this snapshot has delete files")
    con = duckdb_connect()
    _register_s3(con, s3)
    if not tasks:
        return _duckdb_arrow(con.from_arrow(arrow_schema.empty_table()))
    types = _duckdb_types(con, arrow_schema)
    mapping = ", ".join(
        f"{f.field_id}: {{name: {_lit(f.name)}, type: {_lit(types[f.name])}, default_value: NULL}}"
        for f in schema.fields
    )
    files = "[" + ", ".join(_lit(task.file.file_path) for task in tasks) + "]"
    columns = ", ".join(_ident(f.name) for f in schema.fields)
    return _duckdb_arrow(
        con.sql(f"SELECT {columns} FROM read_parquet({files}, schema = MAP {{{mapping}}}, hive_partitioning = false)")
    )


ICEBERG_READERS: dict[str, Callable[[Any, int | None, dict], pa.Table]] = {
    "pyiceberg": _iceberg_pyiceberg,
    "polars": _iceberg_polars,
    "duckdb": _iceberg_duckdb,
}


def read_iceberg(
    catalog: Any,
    identifier: str,
    key: str | list[str],
    snapshot_id: int | None = None,
    *,
    reader: str = "pyiceberg",
    properties: dict | None = None,
    catalog_name: str = CATALOG_NAME,
) -> pa.Table:
    """The rows of Iceberg table `identifier` ("ns.table") in `catalog` (SQL catalog URI or pyiceberg Catalog;
    `snapshot_id`: time travel) read by `reader`, sorted by `key`. `properties`: catalog / FileIO properties
    (default: the S3 server of the environment, if any: S3Config.from_env().iceberg_properties())."""
    props = _iceberg_properties(properties)
    table = _iceberg_table(catalog, identifier, props, catalog_name)
    return _sorted(ICEBERG_READERS[reader](table, snapshot_id, props), key)


# --------------------------------------------------------------------------- agreement


def _diff(name: str, got: pa.Table, ref_name: str, ref: pa.Table, key: list[str]) -> str:
    if got.schema != ref.schema:
        return f"{name} schema:\n{got.schema}\n{ref_name} schema:\n{ref.schema}"
    if got.num_rows != ref.num_rows:
        return f"{name} has {got.num_rows} rows, {ref_name} {ref.num_rows}"
    rows_got, rows_ref = got.to_pylist(), ref.to_pylist()
    bad = [i for i, (a, b) in enumerate(zip(rows_got, rows_ref)) if a != b]
    shown = "\n".join(
        f"  row {i}: {name}={rows_got[i]!r}\n  {'':>{len(str(i)) + 5}}{ref_name}={rows_ref[i]!r}" for i in bad[:5]
    )
    return f"{len(bad)} of {got.num_rows} rows differ between {name} and {ref_name}:\n{shown}"


def assert_all_readers_agree(
    location: Any,
    key: str | list[str],
    identifier: str | None = None,
    *,
    version: int | None = None,
    snapshot_id: int | None = None,
    storage_options: dict | None = None,
    properties: dict | None = None,
    catalog_name: str = CATALOG_NAME,
    expected: pa.Table | None = None,
    readers: list[str] | None = None,
) -> pa.Table:
    """Read the table with every reader and assert the same columns and rows (after ``normalise``, sorted by
    `key`); with `expected`, also equal to it. Iceberg when `identifier` is given (`location` is then the
    catalog), Delta otherwise. Returns the agreed rows."""
    keys = _keys(key)
    results: dict[str, pa.Table] = {}
    if identifier is None:
        for reader in readers or list(DELTA_READERS):
            results[reader] = read_delta(location, keys, version, reader=reader, storage_options=storage_options)
    else:
        props = _iceberg_properties(properties)
        table = _iceberg_table(location, identifier, props, catalog_name)
        for reader in readers or list(ICEBERG_READERS):
            results[reader] = _sorted(ICEBERG_READERS[reader](table, snapshot_id, props), keys)
    (ref_name, ref), *others = results.items()
    columns = list(ref.column_names)
    ref = normalise(ref, columns)
    problems = []
    for name, got in others:
        if set(got.column_names) != set(columns):
            problems.append(f"{name} columns {sorted(got.column_names)} != {ref_name} columns {sorted(columns)}")
            continue
        got = normalise(got, columns)
        if not got.equals(ref):
            problems.append(_diff(name, got, ref_name, ref, keys))
    if expected is not None:
        if set(expected.column_names) != set(columns):
            problems.append(f"expected columns {sorted(expected.column_names)} != read {sorted(columns)}")
        else:
            want = normalise(_sorted(expected, keys), columns)
            if want.schema != ref.schema:  # compare values; types may legitimately be narrower in `expected`
                try:
                    want = want.cast(ref.schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    problems.append(f"expected cannot be cast to what was read: {exc}")
            if not problems and not want.equals(ref):
                problems.append(_diff(ref_name, ref, "expected", want, keys))
    assert not problems, "readers disagree:\n" + "\n\n".join(problems)
    return ref
