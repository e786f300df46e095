"""The grants table is exactly the design's governance table."""

from governed_ft_dagster.catalog.base import Principal, Privilege
from governed_ft_dagster.governance import CURATED_TABLE, GRANTS, RAW_TABLE, grants_for


def rows(principal):
    return {(g.securable_type, g.name, g.privilege.value) for g in grants_for(principal)}


def test_ingest_writes_raw_only():
    assert rows(Principal.INGEST) == {
        ("catalog", "", "USE CATALOG"), ("schema", "raw", "USE SCHEMA"),
        ("schema", "raw", "CREATE TABLE"), ("schema", "raw", "MODIFY"),
    }


def test_preprocess_reads_raw_table_and_writes_curated():
    assert rows(Principal.PREPROCESS) == {
        ("catalog", "", "USE CATALOG"), ("schema", "raw", "USE SCHEMA"), ("table", RAW_TABLE, "SELECT"),
        ("schema", "curated", "USE SCHEMA"), ("schema", "curated", "CREATE TABLE"), ("schema", "curated", "MODIFY"),
    }


def test_train_reads_only_the_curated_table():
    held = rows(Principal.TRAIN)
    assert ("table", CURATED_TABLE, "SELECT") in held
    assert not any(name.startswith("raw") for _, name, _ in held)
    assert not any(priv in {"MODIFY", "CREATE TABLE", "CREATE MODEL"} for _, _, priv in held)


def test_registrar_creates_models_in_ml_and_reads_no_data():
    assert rows(Principal.REGISTRAR) == {
        ("catalog", "", "USE CATALOG"), ("schema", "ml", "USE SCHEMA"), ("schema", "ml", "CREATE MODEL"),
    }


def test_no_principal_holds_all_privileges_and_sdk_spelling_uses_underscores():
    assert all(g.privilege is not Privilege.ALL_PRIVILEGES for g in GRANTS)
    assert Privilege.USE_CATALOG.sdk_name == "USE_CATALOG"
    assert Privilege.parse("use_schema") is Privilege.USE_SCHEMA
