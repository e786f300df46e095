"""The local deployment's grants, enforced by the real catalog server: a revoked SELECT stops the job before it starts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from conftest import link_group
from test_training_asset import TINY_RUN
from governed_ft_dagster.catalog.base import Principal, Privilege
from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def failure_of(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert not result.success and failures
    return failures[0].event_specific_data.error.message


def test_revoked_select_refuses_preprocessing_and_training_until_granted_again(running_stack, spark_home, edgar,
                                                                            tiny_base):
    from governed_ft_dagster.defs.assets.curated import curated_training_table
    from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
    from governed_ft_dagster.defs.partitions import raw_partitions
    from governed_ft_dagster.defs.assets.training import finetuned_lora_model
    from governed_ft_dagster.catalog.oss import OssCatalogClient
    from governed_ft_dagster.defs.resources import local_resources
    from governed_ft_dagster.defs.resources.base_model import BaseModelResource
    from governed_ft_dagster.stack.bootstrap import bootstrap

    raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
    for group in ("spark", "hadoop"):
        if not (running_stack.home / "jars" / group).exists():
            link_group(running_stack.home, spark_home, group)
    bootstrap(running_stack)
    settings = running_stack.settings
    resources = {**local_resources(settings), "edgar": edgar, "base_model": BaseModelResource(model_ref=str(tiny_base))}
    catalog = resources["catalog"]
    admin = OssCatalogClient(settings.uc_url, running_stack.admin_token(), principal="admin")
    warehouse = running_stack.warehouse
    train_config = {"ops": {"finetuned_lora_model": {"config": TINY_RUN}}}

    def grant(table: str, principal: Principal, add: bool) -> None:
        change = {"add": [Privilege.SELECT]} if add else {"remove": [Privilege.SELECT]}
        admin.update_grants("table", catalog.table_name(table), catalog.principal_name(principal), **change)

    with dg.DagsterInstance.ephemeral() as instance:
        for partition in ("2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"):
            assert dg.materialize([raw_risk_factors], partition_key=partition, instance=instance,
                                  resources=resources).success

        grant(RAW_TABLE, Principal.PREPROCESS, add=False)
        refused = dg.materialize([curated_training_table], instance=instance, resources=resources,
                                 raise_on_error=False)
        message = failure_of(refused)
        assert "preprocess" in message and catalog.table_name(RAW_TABLE) in message and "SELECT" in message
        assert files_under(warehouse / "curated") == []
        assert not (running_stack.home / "spark-jobs").exists()  # spark-submit never started
        grant(RAW_TABLE, Principal.PREPROCESS, add=True)
        assert dg.materialize([curated_training_table], instance=instance, resources=resources).success
        assert files_under(warehouse / "curated")

        grant(CURATED_TABLE, Principal.TRAIN, add=False)
        refused = dg.materialize([finetuned_lora_model], instance=instance, resources=resources, run_config=train_config,
                                 raise_on_error=False)
        message = failure_of(refused)
        assert "train" in message and catalog.table_name(CURATED_TABLE) in message and "SELECT" in message
        assert files_under(warehouse / "ml") == []
        assert files_under(running_stack.home / "training_jobs") == []  # no training process was started
        grant(CURATED_TABLE, Principal.TRAIN, add=True)
        trained = dg.materialize([finetuned_lora_model], instance=instance, resources=resources, run_config=train_config)
        assert trained.success
        assert files_under(warehouse / "ml")
