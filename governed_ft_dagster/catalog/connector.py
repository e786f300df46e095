"""The open-source Unity Catalog Spark connector (unitycatalog-spark 0.2.1): where the job uses it, and its settings.

What 0.2.1 does (its UCSingleCatalog, tag v0.2.1):
- It authenticates with one static bearer token, `spark.sql.catalog.<name>.token`, read once when Spark first
  initializes the catalog; nothing refreshes it, and setting the conf again does not reach the initialized catalog.
- Each table load sends `POST /api/2.1/unity-catalog/temporary-table-credentials` with the table id and
  `READ_WRITE`, and on any refusal again with `READ`; it puts the access key, secret and session token as static
  `fs.s3a.*` options on that table (for `s3://` locations only) and ignores the expiration: no renewal.
- `CREATE TABLE ... LOCATION` vends `PATH_CREATE_TABLE` for the location (`temporary-path-credentials`), lets Delta
  create the table and registers it (`POST /api/2.1/unity-catalog/tables`) as the session's principal; CTAS is two
  Delta commits (create, then write). `VERSION AS OF` by name fails (TABLE_OR_VIEW_NOT_FOUND; the reader option
  `versionAsOf` works), `ALTER TABLE` is not implemented, and `CREATE OR REPLACE` drops the registration before
  recreating it (a failed replace leaves the table unregistered). The Spark catalog's name must be the catalog's.

So the connector serves a job whose token and credentials outlive it: the local deployment (open-source catalog,
`file://` tables, tokens without expiry, nothing vended). A job on Databricks holds an OAuth token of one hour and
credentials of about one hour, and an EMR run may take longer (its timeout is two hours): there the job keeps the
hand-written path (`RenewingCredentials`, a new OAuth token from its secret when the old one ends).
`tests/test_connector.py` shows both: the connector in the local deployment, and its limits under enforcement.
"""

from __future__ import annotations

from urllib.parse import urlparse

from governed_ft_dagster.catalog.base import CatalogError

CONNECTOR_CLASS = "io.unitycatalog.spark.UCSingleCatalog"
#: How the job reaches table data: through the connector, or with credentials it vends and renews itself.
CONNECTOR, VENDED = "connector", "vended"
TABLE_ACCESS = (CONNECTOR, VENDED)


def table_access(catalog_kind: str, requested: str | None = None) -> str:
    """The connector for the open-source catalog (nothing to renew), the renewing hand-written path for Databricks."""
    if requested:
        if requested not in TABLE_ACCESS:
            raise CatalogError(f"--table-access must be one of {', '.join(TABLE_ACCESS)}, not {requested!r}")
        return requested
    return CONNECTOR if catalog_kind == "oss" else VENDED


def catalog_conf(catalog: str, url: str, token: str) -> dict[str, str]:
    """Spark settings that register the catalog under its own name, acting as the token's principal.

    The connector sends requests to the URL's scheme, host and port under /api/2.1/unity-catalog; a path is ignored.
    Set them on the SparkSession the job builds (never on spark-submit's command line, where the token would be
    readable in the job's parameters)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CatalogError(f"the catalog URL {url!r} is not an http(s) URL the Spark connector can reach")
    if not token:
        raise CatalogError(f"no token for the Spark connector of catalog {catalog}")
    prefix = f"spark.sql.catalog.{catalog}"
    return {prefix: CONNECTOR_CLASS, f"{prefix}.uri": f"{parsed.scheme}://{parsed.netloc}", f"{prefix}.token": token}


def require_on_classpath(spark) -> None:
    """A CatalogError naming the fix when the connector's class is not on the driver's classpath."""
    try:
        spark._jvm.java.lang.Class.forName(CONNECTOR_CLASS, False,
                                           spark._jvm.Thread.currentThread().getContextClassLoader())
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        raise CatalogError(f"the Unity Catalog Spark connector ({CONNECTOR_CLASS}) is not on Spark's classpath; "
                           f"put the 'uc-spark' jars on --jars (`governed-ft stack fetch`)") from None
