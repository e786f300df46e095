"""The whole local graph in process on a running local stack: every raw partition, then curated, training and
registration with their checks. Tests pass the resources and the training run config they want to prove with."""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg

PARTITIONS = ("2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q")


def run_local_graph(instance: dg.DagsterInstance, resources: Mapping[str, Any],
                    training_config: Mapping[str, Any]) -> dg.ExecuteInProcessResult:
    """Materialize raw_risk_factors partition by partition, then the three assets downstream in one run."""
    from governed_ft_dagster.defs.assets.curated import curated_training_table
    from governed_ft_dagster.defs.assets.model import uc_model_version
    from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
    from governed_ft_dagster.defs.assets.training import finetuned_lora_model
    from governed_ft_dagster.defs.checks import all_checks
    from governed_ft_dagster.defs.partitions import raw_partitions

    raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
    assets = [raw_risk_factors, curated_training_table, finetuned_lora_model, uc_model_version,
              *all_checks(raw_risk_factors.partitions_def)]
    for partition in PARTITIONS:
        assert dg.materialize([raw_risk_factors], partition_key=partition, instance=instance,
                              resources=dict(resources)).success
    downstream = dg.AssetSelection.assets(curated_training_table.key, finetuned_lora_model.key, uc_model_version.key)
    result = dg.materialize(assets, selection=downstream, instance=instance, resources=dict(resources),
                            raise_on_error=False,
                            run_config={"ops": {"finetuned_lora_model": {"config": dict(training_config)}}})
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    return result
