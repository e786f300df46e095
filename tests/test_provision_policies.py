"""Every generated IAM document, evaluated with a small wildcard matcher: no job role reaches the governed bucket."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterator

import pytest

from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.provision import ProvisionError, policies
from governed_ft_dagster.provision.policies import RoleDocuments, StackConfig

CFG = StackConfig(name="gft", region="eu-west-1", account_id="111122223333")
CFG_OFFLINE = StackConfig()
CONFIGS = [CFG, CFG_OFFLINE, StackConfig(name="gft", region="us-east-1", account_id="111122223333",
                                         data_bucket_name="lake", code_bucket_name="lake-code")]

# S3 actions that read, write, list or re-permission objects; a job role may hold none of them on the data bucket.
S3_DATA_ACTIONS = (
    "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAcl", "s3:GetObjectAttributes", "s3:GetObjectTagging",
    "s3:GetObjectVersionAttributes", "s3:PutObject", "s3:PutObjectAcl", "s3:PutObjectTagging", "s3:DeleteObject",
    "s3:DeleteObjectVersion", "s3:RestoreObject", "s3:ListBucket", "s3:ListBucketVersions",
    "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload", "s3:ReplicateObject", "s3:PutBucketPolicy",
    "s3:PutBucketAcl", "s3:DeleteBucketPolicy",
)
# The only wildcard resources a job role may hold, with the reason the service needs them.
STAR_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken": "ECR tokens are registry-wide; the action has no resource type, so only '*' works",
}
ACCOUNT_WIDE_LOG_GROUP_ACTIONS = {
    "logs:DescribeLogGroups": "a list call: EMR Serverless finds its configured log group by listing the account's groups",
}


@lru_cache(maxsize=None)
def _pattern(glob: str, case_insensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(f"^{body}$", re.I if case_insensitive else 0)


def action_matches(pattern: str, action: str) -> bool:
    """IAM action matching: '*' and '?' wildcards, case-insensitive."""
    return bool(_pattern(pattern, True).match(action))


def resource_matches(pattern: str, arn: str) -> bool:
    """IAM resource matching: '*' and '?' wildcards, case-sensitive."""
    return bool(_pattern(pattern, False).match(arn))


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(document: dict[str, Any], action: str, arn: str) -> bool:
    """Whether an Allow statement covers action on arn (conditions ignored: they only narrow)."""
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        if any(action_matches(a, action) for a in as_list(statement["Action"])) and any(
            resource_matches(r, arn) for r in as_list(statement["Resource"])
        ):
            return True
    return False


def governed_arns(cfg: StackConfig) -> list[str]:
    bucket = cfg.data_bucket
    keys = ["", "*", "x", "raw/", "curated/", "ml/", "raw/risk_factors/part-0.parquet",
            "curated/tables/risk_factor_instructions/_delta_log/00000.json", "ml/adapters/run-1/adapter.safetensors"]
    return [cfg.bucket_arn(bucket)] + [cfg.bucket_arn(bucket, k) for k in keys]


def all_roles() -> Iterator[tuple[StackConfig, RoleDocuments]]:
    for cfg in CONFIGS:
        for role in policies.roles(cfg):
            yield cfg, role


def job_roles() -> list[tuple[StackConfig, RoleDocuments]]:
    return [(cfg, role) for cfg, role in all_roles() if role.job_role]


def ids(params: list[tuple[StackConfig, RoleDocuments]]) -> list[str]:
    return [f"{cfg.name}-{cfg.region}-{role.name}" for cfg, role in params]


def test_the_stack_has_two_job_roles_and_one_storage_role() -> None:
    names = [(r.name, r.job_role, r.principal) for r in policies.roles(CFG)]
    assert names == [("gft-uc-storage", False, None), ("gft-emr-runtime", True, Principal.PREPROCESS),
                     ("gft-sagemaker-execution", True, Principal.TRAIN)]


def test_the_matcher_expands_wildcards() -> None:
    assert action_matches("s3:*", "s3:GetObject") and action_matches("*", "s3:ListBucket")
    assert action_matches("s3:*Object*", "s3:PutObjectAcl") and action_matches("S3:getobject", "s3:GetObject")
    assert action_matches("s3:Get?bject", "s3:GetObject") and not action_matches("s3:Get", "s3:GetObject")
    assert resource_matches("arn:aws:s3:::*", "arn:aws:s3:::lake/raw/x")
    assert not resource_matches("arn:aws:s3:::lake-code/*", "arn:aws:s3:::lake/raw/x")
    assert resource_matches("arn:aws:secretsmanager:r:1:secret:gft/train-??????", "arn:aws:secretsmanager:r:1:secret:gft/train-AbC123")
    assert not resource_matches("arn:aws:secretsmanager:r:1:secret:gft/train-??????", "arn:aws:secretsmanager:r:1:secret:gft/train-x-AbC123")
    assert allows({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not allows({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}, "s3:GetObject", "arn:aws:s3:::b/k")


@pytest.mark.parametrize(("cfg", "role"), job_roles(), ids=ids(job_roles()))
def test_no_job_role_statement_reaches_the_governed_bucket(cfg: StackConfig, role: RoleDocuments) -> None:
    for statement in role.permissions["Statement"]:
        single = {"Statement": [statement]}
        for action in S3_DATA_ACTIONS + ("s3:*", "*", "s3:*Object*"):
            for arn in governed_arns(cfg):
                assert not allows(single, action, arn), f"{role.name} {statement['Sid']} allows {action} on {arn}"
        for pattern in as_list(statement["Action"]):
            assert pattern not in ("*", "s3:*"), f"{role.name} {statement['Sid']} holds {pattern}"
            assert not action_matches(pattern, "s3:GetObject") or not any(
                resource_matches(r, a) for r in as_list(statement["Resource"]) for a in governed_arns(cfg))


@pytest.mark.parametrize(("cfg", "role"), job_roles(), ids=ids(job_roles()))
def test_job_role_wildcard_resources_are_only_where_the_service_requires_them(cfg: StackConfig, role: RoleDocuments) -> None:
    own_groups = {cfg.log_group_arn(cfg.emr_log_group), cfg.log_group_arn(policies.SAGEMAKER_LOG_GROUP)}
    for statement in role.permissions["Statement"]:
        actions = as_list(statement["Action"])
        assert not any("*" in a or "?" in a for a in actions), f"{role.name} {statement['Sid']} has a wildcard action"
        for resource in as_list(statement["Resource"]):
            if "*" not in resource and "?" not in resource:
                continue
            if resource == "*":
                assert set(actions) <= set(STAR_RESOURCE_ACTIONS), f"{statement['Sid']}: '*' for {actions}"
            elif resource == cfg.log_group_arn("*"):
                assert set(actions) <= set(ACCOUNT_WIDE_LOG_GROUP_ACTIONS), f"{statement['Sid']}: all groups for {actions}"
            elif resource.endswith("-??????") and ":secretsmanager:" in resource:
                assert "*" not in resource, resource  # only the six-character suffix Secrets Manager appends
            elif resource.endswith(":*") and resource[:-2] in own_groups:
                pass  # the log streams of the role's own group
            elif resource.startswith(cfg.bucket_arn(cfg.code_bucket) + "/"):
                key = resource.split("/", 1)[1]
                assert key in (f"{policies.CODE_PREFIX}*", f"{policies.TRAIN_SCRATCH_PREFIX}*"), resource
            else:
                pytest.fail(f"{role.name} {statement['Sid']} has an unjustified wildcard resource {resource}")


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.region + c.data_bucket for c in CONFIGS])
def test_each_job_role_reads_exactly_its_own_secret(cfg: StackConfig) -> None:
    def secret_arn(principal: Principal, suffix: str = "Ab12Cd") -> str:
        return f"arn:aws:secretsmanager:{cfg.region}:{cfg.account_id}:secret:{cfg.secret_name(principal)}-{suffix}"

    for role in (policies.emr_runtime_role(cfg), policies.sagemaker_execution_role(cfg)):
        readable = {p for p in Principal if allows(role.permissions, "secretsmanager:GetSecretValue", secret_arn(p))}
        assert readable == {role.principal}, role.name
        own = cfg.secret_name(role.principal)
        for other in (f"arn:aws:secretsmanager:{cfg.region}:{cfg.account_id}:secret:{own}-extra-Ab12Cd",
                      f"arn:aws:secretsmanager:{cfg.region}:999999999999:secret:{own}-Ab12Cd",
                      f"arn:aws:secretsmanager:us-west-2:{cfg.account_id}:secret:{own}-Ab12Cd"):
            assert not allows(role.permissions, "secretsmanager:GetSecretValue", other), other
        secret_actions = {a for s in role.permissions["Statement"] for a in as_list(s["Action"]) if a.startswith("secretsmanager:")}
        assert secret_actions == {"secretsmanager:GetSecretValue"}


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.region + c.data_bucket for c in CONFIGS])
def test_the_storage_role_is_the_only_one_with_data_prefix_access(cfg: StackConfig) -> None:
    for prefix in policies.DATA_PREFIXES:
        arn = cfg.bucket_arn(cfg.data_bucket, f"{prefix}tables/t/part-0.parquet")
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            holders = [r.name for r in policies.roles(cfg) if allows(r.permissions, action, arn)]
            assert holders == [cfg.storage_role_name], (action, arn)
    storage = policies.storage_role(cfg)
    assert not allows(storage.permissions, "s3:GetObject", cfg.bucket_arn(cfg.data_bucket, "elsewhere/x"))
    assert not allows(storage.permissions, "s3:GetObject", cfg.bucket_arn(cfg.code_bucket, "code/job.py"))
    assert allows(storage.permissions, "s3:ListBucket", cfg.bucket_arn(cfg.data_bucket))


def test_job_roles_hold_nothing_but_secret_logs_code_scratch_and_image() -> None:
    emr = {a for s in policies.emr_runtime_role(CFG).permissions["Statement"] for a in as_list(s["Action"])}
    assert emr == {"secretsmanager:GetSecretValue", "logs:CreateLogStream", "logs:DescribeLogStreams",
                   "logs:PutLogEvents", "logs:DescribeLogGroups", "s3:GetObject", "s3:ListBucket"}
    sagemaker = policies.sagemaker_execution_role(CFG)
    actions = {a for s in sagemaker.permissions["Statement"] for a in as_list(s["Action"])}
    assert actions == {"secretsmanager:GetSecretValue", "logs:CreateLogGroup", "logs:CreateLogStream",
                       "logs:DescribeLogStreams", "logs:PutLogEvents", "ecr:GetAuthorizationToken",
                       "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                       "s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload"}
    assert allows(sagemaker.permissions, "ecr:BatchGetImage", CFG.image_repository_arn)
    assert not allows(sagemaker.permissions, "ecr:BatchGetImage", CFG.image_repository_arn + "-other")
    assert allows(sagemaker.permissions, "s3:PutObject", CFG.bucket_arn(CFG.code_bucket, "scratch/train/ckpt/1"))
    assert not allows(sagemaker.permissions, "s3:PutObject", CFG.bucket_arn(CFG.code_bucket, "code/train.py"))
    assert not allows(policies.emr_runtime_role(CFG).permissions, "s3:PutObject",
                      CFG.bucket_arn(CFG.code_bucket, "scratch/train/x"))


def test_code_and_scratch_live_outside_the_governed_prefixes() -> None:
    for cfg in CONFIGS:
        assert cfg.code_bucket != cfg.data_bucket
        scratch = cfg.bucket_arn(cfg.code_bucket, policies.TRAIN_SCRATCH_PREFIX + "x")
        assert not any(resource_matches(p, scratch) for p in
                       [cfg.bucket_arn(cfg.data_bucket, f"{d}*") for d in policies.DATA_PREFIXES])


def test_trust_policies() -> None:
    emr, sagemaker, storage = (policies.emr_runtime_role(CFG), policies.sagemaker_execution_role(CFG),
                               policies.storage_role(CFG))
    assert emr.trust["Statement"][0]["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert sagemaker.trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    for role in (emr, sagemaker):
        assert role.trust["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": "111122223333"}}
    [statement] = storage.trust["Statement"]
    assert statement["Principal"]["AWS"] == [policies.UC_MASTER_ROLE_ARN, CFG.role_arn(CFG.storage_role_name)]
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": CFG.uc_external_id}}
    assert allows(storage.permissions, "sts:AssumeRole", CFG.role_arn(CFG.storage_role_name))


def test_bucket_policies_only_deny() -> None:
    for name, document in policies.all_documents(CFG).items():
        if name.startswith("s3-bucket/"):
            assert {s["Effect"] for s in document["Statement"]} == {"Deny"}, name
    deny = policies.data_bucket_policy(CFG)["Statement"][1]
    assert deny["Principal"]["AWS"] == [CFG.role_arn(CFG.emr_role_name), CFG.role_arn(CFG.sagemaker_role_name)]


def test_every_document_is_covered_and_no_job_document_allows_the_data_bucket() -> None:
    documents = policies.all_documents(CFG)
    assert len(documents) == 2 * 3 + 1 + 2
    job_names = {CFG.emr_role_name, CFG.sagemaker_role_name}
    for name, document in documents.items():
        kind, owner = name.split("/")[:2]
        if (kind == "iam-role" and owner in job_names) or kind == "iam-policy":
            for arn in governed_arns(CFG):
                for action in S3_DATA_ACTIONS:
                    assert not allows(document, action, arn), (name, action, arn)


def test_stack_names_are_validated() -> None:
    with pytest.raises(ProvisionError, match="stack name"):
        StackConfig(name="Bad_Name")


def test_the_orchestrator_policy_is_exactly_the_calls_its_resources_make() -> None:
    emr = "arn:aws:emr-serverless:eu-west-1:111122223333:/applications"
    secrets = [f"arn:aws:secretsmanager:eu-west-1:111122223333:secret:gft/{p}-??????"
               for p in ("ingest", "preprocess", "train", "registrar")]
    logs = "arn:aws:logs:eu-west-1:111122223333:log-group:"
    code = "arn:aws:s3:::gft-code-111122223333-eu-west-1"
    assert policies.orchestrator_policy(CFG) == {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadPrincipalSecrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
         "Resource": secrets},
        {"Sid": "FindPreprocessApplication", "Effect": "Allow", "Action": ["emr-serverless:ListApplications"],
         "Resource": ["*"]},
        {"Sid": "RunPreprocessJobs", "Effect": "Allow",
         "Action": ["emr-serverless:GetApplication", "emr-serverless:StartJobRun"], "Resource": [f"{emr}/*"],
         "Condition": {"StringEquals": {"aws:ResourceTag/governed-ft:stack": "gft"}}},
        {"Sid": "WatchPreprocessJobRuns", "Effect": "Allow",
         "Action": ["emr-serverless:CancelJobRun", "emr-serverless:GetJobRun"], "Resource": [f"{emr}/*/jobruns/*"]},
        {"Sid": "PassPreprocessRole", "Effect": "Allow", "Action": ["iam:PassRole"],
         "Resource": ["arn:aws:iam::111122223333:role/gft-emr-runtime"],
         "Condition": {"StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}}},
        {"Sid": "RunTrainingJobs", "Effect": "Allow",
         "Action": ["sagemaker:AddTags", "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob"],
         "Resource": ["arn:aws:sagemaker:eu-west-1:111122223333:training-job/lora-risk-factors-*"]},
        {"Sid": "PassTrainingRole", "Effect": "Allow", "Action": ["iam:PassRole"],
         "Resource": ["arn:aws:iam::111122223333:role/gft-sagemaker-execution"],
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        {"Sid": "ReadJobLogs", "Effect": "Allow", "Action": ["logs:DescribeLogStreams", "logs:GetLogEvents"],
         "Resource": [f"{logs}/aws/emr-serverless/gft", f"{logs}/aws/emr-serverless/gft:*",
                      f"{logs}/aws/sagemaker/TrainingJobs", f"{logs}/aws/sagemaker/TrainingJobs:*"]},
        {"Sid": "CheckStagedCode", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{code}/code/*"]},
        {"Sid": "ListStagedCode", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [code],
         "Condition": {"StringLike": {"s3:prefix": ["code/*"]}}},
        {"Sid": "SpillPipesContext", "Effect": "Allow", "Action": ["s3:DeleteObject", "s3:PutObject"],
         "Resource": [f"{code}/code/pipes/*"]},
    ]}


def test_the_orchestrator_may_pass_only_the_two_job_roles_and_each_only_to_its_service() -> None:
    document = policies.orchestrator_policy(CFG)
    passing = [s for s in document["Statement"] if any(action_matches(a, "iam:PassRole") for a in as_list(s["Action"]))]
    assert {(r, s["Condition"]["StringEquals"]["iam:PassedToService"]) for s in passing for r in s["Resource"]} == {
        ("arn:aws:iam::111122223333:role/gft-emr-runtime", "emr-serverless.amazonaws.com"),
        ("arn:aws:iam::111122223333:role/gft-sagemaker-execution", "sagemaker.amazonaws.com")}
    assert not allows(document, "iam:PassRole", "arn:aws:iam::111122223333:role/gft-uc-storage")
    assert not [s for s in document["Statement"] if any("*" in a for a in as_list(s["Action"]))]
