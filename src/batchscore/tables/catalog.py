"""`--catalog`: which Iceberg catalog a table is in, and where its files go.

No catalog given: an embedded SQL catalog on a SQLite file, so Iceberg works
with nothing set up ($BATCHSCORE_HOME/iceberg/catalog.db, its warehouse the
folder `warehouse/` beside it). A `sqlite:///FILE` URI: that file, its
warehouse beside it. A `postgresql://...` URI: a SQL catalog in that
database, its warehouse $BATCHSCORE_HOME/iceberg/warehouse. Either URI takes
`?warehouse=URL` to put the warehouse elsewhere (s3://bucket/warehouse, ...).
Any other name is a catalog pyiceberg configures itself (~/.pyiceberg.yaml or
PYICEBERG_CATALOG__NAME__* variables): REST, Glue, Hive, ...
An s3:// warehouse of a SQL catalog takes its endpoint and region from
AWS_ENDPOINT_URL(_S3) and AWS_REGION, as boto3 and delta-rs do.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import BatchscoreError, ConfigError, OutputError
from . import first_line
from .extras import require

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

SQL_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgres")
DEFAULT_NAME = "batchscore"


def default_catalog_dir() -> str:
    from ..options import batchscore_home

    return os.path.join(batchscore_home(), "iceberg")


def _file_url(path: str) -> str:
    return "file://" + os.path.abspath(path)


def catalog_properties(catalog: str | None) -> tuple[str, dict[str, str]]:
    """The catalog's name and the properties pyiceberg's `load_catalog` takes for it ({} : its own configuration)."""
    if not catalog:
        folder = default_catalog_dir()
        return DEFAULT_NAME, {
            "type": "sql",
            "uri": "sqlite:///" + os.path.join(folder, "catalog.db"),
            "warehouse": _file_url(os.path.join(folder, "warehouse")),
        }
    scheme = catalog.split(":", 1)[0].lower() if "://" in catalog else ""
    if scheme not in SQL_SCHEMES:
        return catalog, {}
    parts = urlsplit(catalog)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "warehouse"]
    rest = urlencode([(k, v) for k, v in query if k != "warehouse"])
    uri = catalog.split("?", 1)[0] + (f"?{rest}" if rest else "")  # by hand: urlunsplit drops sqlite:///'s //
    if scheme in ("postgres", "postgresql"):
        # SQLAlchemy knows only the long name, and takes a bare postgresql:// for psycopg 3; the iceberg extra
        # installs psycopg2 (pyiceberg's sql-postgres).
        uri = _postgres_driver() + uri[len(scheme) :]
    if given:
        warehouse = given[-1] if "://" in given[-1] else _file_url(given[-1])
    elif scheme == "sqlite":
        database = parts.path[1:] if parts.path.startswith("/") else parts.path  # sqlite:///rel.db, sqlite:////abs.db
        warehouse = _file_url(os.path.join(os.path.dirname(os.path.abspath(database)), "warehouse"))
    else:
        warehouse = _file_url(os.path.join(default_catalog_dir(), "warehouse"))
    return DEFAULT_NAME, {"type": "sql", "uri": uri, "warehouse": warehouse, **_s3_from_env(warehouse)}


def _s3_from_env(warehouse: str) -> dict[str, str]:
    """pyiceberg's S3 properties for an s3:// warehouse, from the AWS variables that boto3, s3fs and delta-rs
    read by themselves but pyiceberg's FileIO does not: the endpoint (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL: a
    MinIO, Ceph or moto server) and the region (AWS_REGION, AWS_DEFAULT_REGION; without one pyiceberg asks AWS
    itself where the bucket is, which a private server cannot answer). Credentials it finds on its own."""
    if not warehouse.startswith(("s3://", "s3a://", "s3n://")):
        return {}
    found = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        found["s3.endpoint"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        found["s3.region"] = region
    return found


def _postgres_driver() -> str:
    """The SQLAlchemy scheme for the PostgreSQL driver installed: psycopg2 (the extra's), else psycopg 3."""
    import importlib.util

    return "postgresql+psycopg2" if importlib.util.find_spec("psycopg2") else "postgresql+psycopg"


def shown(catalog: str | None) -> str:
    """The catalog for a message, without a password."""
    if not catalog:
        return f"the default catalog ({os.path.join(default_catalog_dir(), 'catalog.db')})"
    parts = urlsplit(catalog) if "://" in catalog else None
    if parts is not None and parts.password:
        catalog = urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")))
    return f"catalog '{catalog}'"


def open_catalog(catalog: str | None, error: type[BatchscoreError] = OutputError) -> Catalog:
    """The catalog `--catalog` names, opened: exit 2 when pyiceberg cannot configure it, `error`'s exit code
    when it cannot be reached."""
    require("pyiceberg")

    name, properties = catalog_properties(catalog)
    uri = properties.get("uri", "")
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(uri[len("sqlite:///") :])) or ".", exist_ok=True)
    try:
        return _load_catalog(name, properties)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"The {shown(catalog)} needs the '{exc.name}' package; install it with: pip install 'batchscore[iceberg]'."
        ) from None
    except ValueError as exc:  # pyiceberg: no such catalog configured, or a property missing
        raise ConfigError(
            f"Cannot open the Iceberg {shown(catalog)}: {exc}. Pass --catalog sqlite:///FILE.db or "
            "postgresql://..., or configure the catalog for pyiceberg (~/.pyiceberg.yaml)."
        ) from None
    except Exception as exc:
        raise error(f"Cannot reach the Iceberg {shown(catalog)}: {first_line(exc)}; check that it runs.") from None


def _load_catalog(name: str, properties: dict[str, str]) -> Catalog:
    """pyiceberg's load_catalog; a SQL catalog that finds no tables of its own creates them, and two first runs
    doing that at once make one fail on the other's tables or rows (PostgreSQL: DuplicateTable, UniqueViolation):
    it is opened again, and finds them."""
    import time

    from pyiceberg.catalog import load_catalog

    for attempt in range(3):
        try:
            return load_catalog(name, **properties)
        except Exception as exc:
            said = str(exc)
            if attempt == 2 or ("already exists" not in said and "duplicate key" not in said):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def table_identifier(spec: str, error: type[BatchscoreError] = ConfigError) -> tuple[str, str]:
    """NAMESPACE.TABLE (the namespace may have dots of its own: a.b.table) as (namespace, table)."""
    namespace, _, name = spec.strip().rpartition(".")
    if not namespace or not name or "/" in spec:
        raise error(f"An Iceberg table is named NAMESPACE.TABLE (e.g. analytics.review_scores); got '{spec}'.")
    return namespace, name


def warehouse_of(catalog: Catalog) -> str | None:
    location: Any = catalog.properties.get("warehouse")
    return str(location).rstrip("/") if location else None
