"""Spark job: raw Risk Factors Delta table -> curated instruction records (EMR Serverless and local spark-submit)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

LOG = logging.getLogger("governed_ft.preprocess")
PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"
PROPERTY_PREFIX = "governed_ft"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
ANONYMOUS_PROVIDER = "software.amazon.awssdk.auth.credentials.AnonymousCredentialsProvider"
CURATED_COMMENT = "Instruction records (risk factor -> heading) curated from SEC Risk Factors sections"
_CATALOG_TYPE_NAMES = {"string": "STRING", "int": "INT", "bigint": "LONG", "smallint": "SHORT", "tinyint": "BYTE",
                       "boolean": "BOOLEAN", "double": "DOUBLE", "float": "FLOAT", "date": "DATE",
                       "timestamp": "TIMESTAMP", "binary": "BINARY"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the job."""
    from governed_ft_dagster.catalog.connect import add_arguments

    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--source-table", required=True, help="catalog name of the raw table (catalog.schema.table)")
    parser.add_argument("--target-table", required=True, help="catalog name of the curated table")
    parser.add_argument("--tokenizer-dir", required=True, help="directory of the base model's tokenizer")
    parser.add_argument("--run-id", required=True, help="orchestrator run id, recorded on every row")
    parser.add_argument("--target-location", default=None, help="storage location of the curated Delta table")
    parser.add_argument("--source-location", default=None, help="raw Delta table location (without a catalog only)")
    parser.add_argument("--source-version", type=int, default=None, help="Delta version to read; latest if omitted")
    parser.add_argument("--rejects-location", default=None, help="optional Delta location for rejected rows")
    parser.add_argument("--grant-select-to", action="append", default=[], metavar="PRINCIPAL",
                        help="catalog principal granted SELECT on the curated table (repeatable)")
    parser.add_argument("--table-access", choices=("connector", "vended"), default=None,
                        help="through the catalog's Spark connector, or with credentials the job vends and renews "
                             "itself; by default the connector for the open-source catalog, vended for Databricks")
    parser.add_argument("--table-property", action="append", default=[], metavar="KEY=VALUE",
                        help="Delta property of the curated table, e.g. its retention (repeatable)")
    parser.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint for S3A (tests only)")
    parser.add_argument("--storage-region", default=None, help="region of the governed bucket")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class _ByPath:
    """Reads and writes the tables by storage location (S3A for s3://), with whatever credentials before_* set."""

    source: str
    target: str

    def latest_source_version(self, spark) -> int:
        return _latest_version(spark, spark_path(self.source))

    def read_source(self, spark, version: int):
        return spark.read.format("delta").option("versionAsOf", version).load(spark_path(self.source))

    def write_target(self, spark, df, properties: dict[str, str]) -> int:
        return write_delta(spark, df, spark_path(self.target), properties, "governed_ft_curated")


class Locations(_ByPath):
    """Tables given as storage locations, without a catalog (tests and ad-hoc runs on local paths)."""

    detach_before_write = False

    def __init__(self, source: str, source_version: int | None, target: str):
        self.source, self.source_version, self.target = source, source_version, target

    def before_read(self, spark) -> None:
        pass

    def before_write(self, spark, location: str) -> None:
        pass

    def after_write(self, columns: list, source_version: int) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class CatalogTables(_ByPath):
    """Both tables resolved through the catalog as the job's principal; storage only with vended credentials, renewed
    before they end inside each phase: S3A in the driver and every executor asks the driver's credential endpoint for
    them (its catalog client renews its OAuth token too), so a long job goes on."""

    def __init__(self, client, args: argparse.Namespace):
        from governed_ft_dagster.catalog.base import CatalogError, RenewingCredentials

        self.client = client
        self.source_table, self.target_table = args.source_table, args.target_table
        self.source_version = args.source_version
        self.endpoint_url, self.region = args.s3_endpoint_url, args.storage_region
        self.grantees = list(args.grant_select_to or [])
        self.source = client.get_table(self.source_table).storage_location
        self._source = RenewingCredentials(lambda: client.temporary_table_credentials(self.source_table, "READ"))
        self.target_exists = client.table_exists(self.target_table)
        if self.target_exists:
            self.target = client.get_table(self.target_table).storage_location
            if args.target_location and self.target.rstrip("/") != args.target_location.rstrip("/"):
                raise CatalogError(f"table {self.target_table} is registered at {self.target}, not at "
                                   f"{args.target_location}; drop the old registration or pass its location")
        elif args.target_location:
            self.target = args.target_location
        else:
            raise CatalogError(f"table {self.target_table} is not registered yet; pass --target-location to create it")
        self._target = RenewingCredentials(self._vend_target)
        self._paths: dict[str, Any] = {}
        self._endpoint = None
        self._scopes: dict[int, Any] = {}

    @property
    def detach_before_write(self) -> bool:
        """Whether reads and writes use different credentials, so the written data must not depend on the source."""
        return not (self._source.latest.is_local and self._target.latest.is_local)

    @property
    def vended(self) -> list:
        return [self._source.latest, self._target.latest, *(p.latest for p in self._paths.values())]

    def _vend_target(self):
        if self.target_exists:
            return self.client.temporary_table_credentials(self.target_table, "READ_WRITE")
        return self.client.temporary_path_credentials(self.target, "PATH_CREATE_TABLE")

    def _use(self, spark, renewing) -> None:
        """Point S3A at the driver's credential endpoint for these credentials (started with the first table)."""
        from governed_ft_dagster.catalog.endpoint import CredentialEndpoint

        creds = renewing.current()
        if creds.is_local:
            return
        if self._endpoint is None:
            host = spark.conf.get("spark.driver.host")
            self._endpoint = CredentialEndpoint(spark.conf.get("spark.driver.bindAddress", host), host)
        if id(renewing) not in self._scopes:
            self._scopes[id(renewing)] = self._endpoint.serve(renewing)
        configure_s3a(spark, creds, self._scopes[id(renewing)], self.endpoint_url, self.region)

    def before_read(self, spark) -> None:
        self._use(spark, self._source)

    def before_write(self, spark, location: str) -> None:
        from governed_ft_dagster.catalog.base import RenewingCredentials

        if location == self.target:
            renewing = self._target
        else:
            if location not in self._paths:
                self._paths[location] = RenewingCredentials(
                    lambda: self.client.temporary_path_credentials(location, "PATH_READ_WRITE"))
            renewing = self._paths[location]
        self._use(spark, renewing)

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()

    def refusal(self, exc: BaseException, principal: str):
        """The catalog's refusal of a renewal, or the storage's refusal in exc as one sentence naming the principal,
        the table or path and the operation the credentials were vended for; None when exc is neither."""
        from governed_ft_dagster.catalog.base import CatalogError, StorageRefusedError, refused_s3_path

        failed = [f for f in (self._endpoint.failures if self._endpoint else []) if isinstance(f, CatalogError)]
        if failed:  # a renewal the catalog refused mid-phase: its sentence, not S3A's
            return failed[0]
        path = refused_s3_path(str(exc))
        scopes = [(self.target, self.target_table, self._target), (self.source, self.source_table, self._source),
                  *((location, location, renewing) for location, renewing in self._paths.items())]
        for location, securable, renewing in scopes if path else []:
            if f"{path}/".startswith(location.rstrip("/") + "/"):
                return StorageRefusedError(principal, securable, renewing.latest.operation, path)
        return None

    def after_write(self, columns: list, source_version: int) -> dict[str, Any]:
        """Register the table when it is new (this principal becomes its owner) and grant SELECT to the readers."""
        if not self.target_exists:
            self.client.register_external_table(
                self.target_table, self.target, columns, comment=CURATED_COMMENT,
                properties={f"{PROPERTY_PREFIX}.source_table": self.source_table,
                            f"{PROPERTY_PREFIX}.source_version": str(source_version)})
        return {"table_registered": not self.target_exists, "table_access": "vended",
                "credentials_vended": {"read": self._source.vends,
                                       "write": self._target.vends + sum(p.vends for p in self._paths.values())},
                **_grant_select(self.client, self.target_table, self.grantees)}


def _quoted_name(full_name: str) -> str:
    return ".".join("`" + part.replace("`", "``") + "`" for part in full_name.split("."))


class ConnectorTables:
    """Both tables by name through the catalog's Spark connector (UCSingleCatalog), which vends each table's
    credentials when Spark loads it; used where nothing needs renewing (see governed_ft_dagster.catalog.connector)."""

    detach_before_write = False  # each table carries its own credentials

    def __init__(self, client, args: argparse.Namespace, catalog: str, url: str):
        from governed_ft_dagster.catalog.base import CatalogError
        from governed_ft_dagster.catalog.connector import catalog_conf

        self.client = client
        self.source_table, self.target_table = args.source_table, args.target_table
        for name in (self.source_table, self.target_table):
            if name.count(".") != 2 or name.split(".", 1)[0] != catalog:
                raise CatalogError(f"table {name} is not catalog.schema.table in catalog {catalog}, the only catalog "
                                   f"the Spark connector is registered as")
        self.source_version = args.source_version
        self.grantees = list(args.grant_select_to or [])
        # The catalog checks the principal's grants before Spark touches anything: a refusal names the principal,
        # the table and the missing privilege.
        self.source = client.get_table(self.source_table).storage_location
        self.target_exists = client.table_exists(self.target_table)
        if self.target_exists:
            self.target = client.get_table(self.target_table).storage_location
            if args.target_location and self.target.rstrip("/") != args.target_location.rstrip("/"):
                raise CatalogError(f"table {self.target_table} is registered at {self.target}, not at "
                                   f"{args.target_location}; drop the old registration or pass its location")
        elif args.target_location:
            self.target = args.target_location
        else:
            raise CatalogError(f"table {self.target_table} is not registered yet; pass --target-location to create it")
        self._conf = catalog_conf(catalog, url, client.access_token())

    def before_read(self, spark) -> None:
        from governed_ft_dagster.catalog.connector import require_on_classpath

        require_on_classpath(spark)
        for key, value in self._conf.items():
            spark.conf.set(key, value)

    def latest_source_version(self, spark) -> int:
        return int(spark.sql(f"DESCRIBE HISTORY {_quoted_name(self.source_table)} LIMIT 1").first()["version"])

    def read_source(self, spark, version: int):
        # `VERSION AS OF` by name is not served by connector 0.2.1; the reader option is.
        return spark.read.format("delta").option("versionAsOf", version).table(self.source_table)

    def before_write(self, spark, location: str) -> None:
        from governed_ft_dagster.catalog.base import CatalogError

        if location != self.target and not (location.startswith("file:") or location.startswith("/")):
            raise CatalogError(f"through the Spark connector the job writes catalog tables only, not {location}")

    def write_target(self, spark, df, properties: dict[str, str]) -> int:
        """Create the table through the catalog (registered with this principal as its owner), or overwrite its rows.

        One commit per run on an existing table (INSERT OVERWRITE); connector 0.2.1 implements no ALTER TABLE and
        replaces a table by dropping its registration, so the table properties stay the creating run's and every
        commit carries its own run's properties in its userMetadata."""
        name = _quoted_name(self.target_table)
        df.createOrReplaceTempView("governed_ft_curated")
        if self.target_exists:
            spark.sql(f"INSERT OVERWRITE {name} SELECT * FROM governed_ft_curated ORDER BY record_id")
        else:
            props = ", ".join(f"{_sql_string(k)} = {_sql_string(v)}" for k, v in sorted(properties.items()))
            spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION {_sql_string(self.target)} TBLPROPERTIES ({props}) "
                      f"AS SELECT * FROM governed_ft_curated ORDER BY record_id")
        return int(spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"])

    def refusal(self, exc: BaseException, principal: str):
        return None

    def close(self) -> None:
        pass

    def after_write(self, columns: list, source_version: int) -> dict[str, Any]:
        """Grant SELECT to the readers (the connector registered a new table already, owned by this principal)."""
        return {"table_registered": not self.target_exists, "table_access": "connector",
                **_grant_select(self.client, self.target_table, self.grantees)}


def _grant_select(client, table: str, grantees: list[str]) -> dict[str, Any]:
    from governed_ft_dagster.catalog.base import Privilege

    granted = []
    for grantee in grantees:
        if Privilege.SELECT not in client.effective_privileges("table", table, grantee):
            client.update_grants("table", table, grantee, add=[Privilege.SELECT])
            granted.append(f"SELECT on {table} to {grantee}")
    return {"grants": granted}


def resolve_tables(args: argparse.Namespace) -> Locations | CatalogTables | ConnectorTables:
    """Through the catalog as the job's principal when the catalog arguments are given, else the given locations."""
    if args.catalog_kind or args.catalog_principal:
        from governed_ft_dagster.catalog.connect import connect, from_args
        from governed_ft_dagster.catalog.connector import CONNECTOR, table_access

        access = from_args(args)
        client = connect(access)
        if table_access(access.kind, args.table_access) == CONNECTOR:
            return ConnectorTables(client, args, access.catalog, access.url)
        return CatalogTables(client, args)
    missing = [flag for flag, value in (("--source-location", args.source_location),
                                        ("--target-location", args.target_location)) if not value]
    if missing:
        raise SystemExit(f"resolve_tables: pass the catalog arguments (--catalog-kind, --catalog-url, "
                         f"--catalog-principal, --catalog-name, ...) or {' and '.join(missing)}")
    return Locations(args.source_location, args.source_version, args.target_location)


def spark_path(location: str) -> str:
    """The location as Spark must open it: s3:// through S3A (EMRFS would use the job role's own credentials)."""
    return "s3a://" + location[len("s3://"):] if location.startswith("s3://") else location


def s3a_settings(creds, scope, endpoint_url: str | None = None, region: str | None = None) -> dict[str, str]:
    """Hadoop settings that make S3A reach the credentials' bucket through the project's client factory and
    credentials provider, which ask the driver's credential endpoint (scope) for exactly these vended credentials
    and their renewals, in the driver and in every executor."""
    from governed_ft_dagster.catalog.base import RENEW_WITHIN_S, CatalogError
    from governed_ft_dagster.catalog.endpoint import (
        CLIENT_FACTORY_CLASS,
        PROVIDER_RENEW_WITHIN,
        PROVIDER_TOKEN,
        PROVIDER_URL,
    )

    parsed = urlparse(creds.location)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise CatalogError(f"the job reads and writes S3 or local storage only, not {creds.location}")
    if not creds.aws_access_key_id or not creds.aws_secret_access_key:
        raise CatalogError(f"the catalog vended no AWS credentials for {creds.location} ({creds.operation})")
    bucket = f"fs.s3a.bucket.{parsed.netloc}."
    settings = {
        # Only vended credentials, never the environment's or the role's: S3A's own providers sign nothing (anonymous)
        # and the client factory, loaded from the job's --jars (so S3A must keep the configuration's class loader),
        # signs with the vended ones. A fresh file system per use, so a switch to another table's credentials for the
        # same bucket takes effect.
        "fs.s3a.aws.credentials.provider": ANONYMOUS_PROVIDER,
        "fs.s3a.classloader.isolation": "false",
        "fs.s3a.impl.disable.cache": "true",
        bucket + "aws.credentials.provider": ANONYMOUS_PROVIDER,
        bucket + "s3.client.factory.impl": CLIENT_FACTORY_CLASS,
        bucket + PROVIDER_URL: scope.url,
        bucket + PROVIDER_TOKEN: scope.token,
        bucket + PROVIDER_RENEW_WITHIN: str(int(RENEW_WITHIN_S)),
        # Vended credentials reach only their table's prefix: S3A must not delete directory markers above it.
        bucket + "directory.marker.retention": "keep",
    }
    if endpoint_url:
        settings.update({bucket + "endpoint": endpoint_url, bucket + "path.style.access": "true",
                         bucket + "connection.ssl.enabled": str(endpoint_url.startswith("https:")).lower()})
    if region:
        settings[bucket + "endpoint.region"] = region
    return settings


def configure_s3a(spark, creds, scope, endpoint_url: str | None = None, region: str | None = None) -> None:
    """Point S3A at one location's vended credentials, served at scope (nothing to do for local paths)."""
    if creds.is_local:
        return
    conf = spark._jsc.hadoopConfiguration()
    for key, value in s3a_settings(creds, scope, endpoint_url, region).items():
        conf.set(key, value)


def catalog_columns(schema) -> list:
    """A Spark schema as catalog column descriptions."""
    from governed_ft_dagster.catalog.base import ColumnInfo

    columns = []
    for position, column in enumerate(schema.fields):
        text = column.dataType.simpleString()
        type_name = _CATALOG_TYPE_NAMES.get(text) or text.split("<", 1)[0].split("(", 1)[0].upper()
        columns.append(ColumnInfo(column.name, type_name, text, position, column.nullable))
    return columns


def _quote_path(location: str) -> str:
    return "delta.`" + location.replace("`", "``") + "`"


def _latest_version(spark, location: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, location).history(1).select("version").first()[0])


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_delta(spark, df, location: str, properties: dict[str, str], view: str, order_by: str = "record_id") -> int:
    """Replace the Delta table at location with df in one commit carrying properties; return the version written."""
    df.createOrReplaceTempView(view)
    props = ", ".join(f"{_sql_string(k)} = {_sql_string(v)}" for k, v in sorted(properties.items()))
    spark.sql(f"CREATE OR REPLACE TABLE {_quote_path(location)} USING DELTA TBLPROPERTIES ({props}) "
              f"AS SELECT * FROM {view} ORDER BY {order_by}")
    return _latest_version(spark, location)


def run(spark, args: argparse.Namespace, tables: Locations | CatalogTables | ConnectorTables | None = None
        ) -> dict[str, Any]:
    """Read the raw table at a pinned version, curate it, write the curated table; return what to report."""
    from governed_ft_dagster.lineage.manifest import RAW_FIELDS, raw_fingerprint
    from governed_ft_dagster.preprocess.spark import run_curation
    from governed_ft_dagster.preprocess.text import PREPROCESS_VERSION, TASK

    started = time.monotonic()
    tables = tables or resolve_tables(args)
    tables.before_read(spark)
    source_version = (tables.source_version if tables.source_version is not None
                      else tables.latest_source_version(spark))
    raw = tables.read_source(spark, source_version)
    source_fingerprint = raw_fingerprint(r.asDict() for r in raw.select(
        *[c for c in RAW_FIELDS if c in raw.columns]).collect())
    result = run_curation(raw, args.tokenizer_dir, source_version, args.run_id, args.max_tokens,
                          source_table=args.source_table, validation_fraction=args.validation_fraction, seed=args.seed)
    curated, rejects = result.curated, result.rejects
    if tables.detach_before_write:
        # One bucket holds both tables and S3A keeps one credential per bucket: after the switch to the write
        # credentials nothing may read the source again, so the results are cut loose from it first.
        curated = curated.localCheckpoint()
        rejects = rejects.localCheckpoint() if args.rejects_location else rejects
    read_done = time.monotonic()
    properties = {
        f"{PROPERTY_PREFIX}.source_table": args.source_table,
        f"{PROPERTY_PREFIX}.source_version": str(source_version),
        f"{PROPERTY_PREFIX}.source_fingerprint": source_fingerprint,
        f"{PROPERTY_PREFIX}.run_id": args.run_id,
        f"{PROPERTY_PREFIX}.task": TASK,
        f"{PROPERTY_PREFIX}.preprocess_version": PREPROCESS_VERSION,
        f"{PROPERTY_PREFIX}.context_length": str(args.max_tokens),
        **dict(item.split("=", 1) for item in getattr(args, "table_property", None) or []),
    }
    # Every commit carries its run's properties, whether or not the write can set table properties.
    spark.conf.set(USER_METADATA_CONF, json.dumps(properties, sort_keys=True))
    try:
        tables.before_write(spark, tables.target)
        version = tables.write_target(spark, curated, properties)
        rejects_version = None
        if args.rejects_location:
            tables.before_write(spark, args.rejects_location)
            rejects_version = write_delta(spark, rejects, spark_path(args.rejects_location), properties,
                                          "governed_ft_rejects", order_by="accession_number, ordinal, record_id")
    finally:
        spark.conf.unset(USER_METADATA_CONF)
    write_done = time.monotonic()
    catalog = tables.after_write(catalog_columns(result.curated.schema), source_version)
    runtime = runtime_versions(spark)
    return {**result.stats, "source_table": args.source_table, "target_table": args.target_table,
            "source_version": source_version, "source_fingerprint": source_fingerprint,
            "target_location": tables.target, "delta_version": version,
            "rejects_delta_version": rejects_version, **catalog, "read_seconds": round(read_done - started, 2),
            "write_seconds": round(write_done - read_done, 2), "runtime": runtime,
            "seconds": round(time.monotonic() - started, 2)}


def runtime_versions(spark) -> dict[str, str]:
    """Spark, Hadoop and (where S3A is on the class path) AWS SDK for Java versions of the JVM the job ran in."""
    jvm = spark._jvm
    versions = {"spark": spark.version, "hadoop": jvm.org.apache.hadoop.util.VersionInfo.getVersion()}
    try:
        versions["aws_sdk_java"] = jvm.java.lang.Class.forName("software.amazon.awssdk.core.util.VersionInfo") \
            .getField("SDK_VERSION").get(None)
    except Exception:  # noqa: BLE001 - no SDK v2 on this class path (local storage only)
        pass
    return versions


def materialization_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """The report as Pipes metadata: scalars as they are, nested values as JSON."""
    return {key: {"raw_value": value, "type": "json"} if isinstance(value, (dict, list)) else value
            for key, value in report.items() if value is not None}


class _LogReporter:
    """Stand-in for the Pipes context when the job is not launched by Dagster."""

    log = LOG

    def report_asset_materialization(self, metadata: dict[str, Any], data_version: str | None = None) -> None:
        LOG.info("materialization (data version %s): %s", data_version, metadata)


@contextmanager
def reporter() -> Iterator[Any]:
    """The Dagster Pipes context when launched by Dagster, plain logging otherwise."""
    if os.environ.get(PIPES_CONTEXT_ENV):
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            yield pipes
    else:
        yield _LogReporter()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for spark-submit; a catalog refusal is one line on stderr and exit code 1."""
    from governed_ft_dagster.catalog.base import CatalogError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    with reporter() as context:
        args = parse_args(argv)
        try:
            tables = resolve_tables(args)
            from pyspark.sql import SparkSession

            spark = SparkSession.builder.appName(f"governed-ft-preprocess-{args.run_id}").getOrCreate()
            try:
                report = run(spark, args, tables)
            except Exception as exc:
                refusal = tables.refusal(exc, args.catalog_principal) if isinstance(tables, CatalogTables) else None
                if refusal is None:
                    raise
                raise refusal from None
            finally:
                spark.stop()
                tables.close()
        except CatalogError as exc:
            line = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            print(line, file=sys.stderr, flush=True)
            if not isinstance(context, _LogReporter):
                context.log.error(line)
            return 1
        context.log.info(f"curated {report['rows_out']} records from {report['rows_in']} raw rows "
                         f"into {args.target_table} version {report['delta_version']}")
        context.report_asset_materialization(metadata=materialization_metadata(report),
                                             data_version=str(report["delta_version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
