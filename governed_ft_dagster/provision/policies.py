"""The stack's names and every IAM document it deploys (pure): job roles never reach the governed bucket."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import SCHEMAS
from governed_ft_dagster.job_code import TRAINING_JOB_PREFIX
from governed_ft_dagster.provision import ProvisionError
from governed_ft_dagster.settings import DEFAULT_STACK, STACK_NAME

ACCOUNT_PLACEHOLDER = "<account-id>"
# Databricks' Unity Catalog master role (AWS commercial partition); its storage credentials assume our role from it.
UC_MASTER_ROLE_ARN = "arn:aws:iam::414351767826:role/unity-catalog-prod-UCMasterRole-14S5ZJVKOTYTL"
PLACEHOLDER_EXTERNAL_ID = "0000"
POLICY_VERSION = "2012-10-17"
DATA_PREFIXES: tuple[str, ...] = tuple(f"{schema}/" for schema in SCHEMAS)
CODE_PREFIX = "code/"
SCRATCH_PREFIX = "scratch/"
TRAIN_SCRATCH_PREFIX = "scratch/train/"
# SageMaker writes training logs to this fixed, account-wide group; it cannot be renamed per job.
SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MANAGED_TAG = "governed-ft:managed"
STACK_TAG = "governed-ft:stack"
PERMISSIONS_POLICY_SUFFIX = "permissions"
ORCHESTRATOR_POLICY_SUFFIX = "orchestrator"
# Where the SageMaker resource writes a Pipes context too large for a job's Environment (under the code prefix).
PIPES_SPILL_PREFIX = f"{CODE_PREFIX}pipes/"


@dataclass(frozen=True)
class StackConfig:
    """Everything that names the stack's resources; defaults derive from the stack name, account and region."""

    name: str = DEFAULT_STACK
    region: str = "us-east-1"
    account_id: str = ACCOUNT_PLACEHOLDER
    data_bucket_name: str = ""
    code_bucket_name: str = ""
    image_repository_name: str = ""
    uc_external_id: str = PLACEHOLDER_EXTERNAL_ID
    uc_master_role_arn: str = UC_MASTER_ROLE_ARN
    log_retention_days: int = 30
    scratch_expiry_days: int = 30
    emr_max_capacity: tuple[tuple[str, str], ...] = (("cpu", "16 vCPU"), ("memory", "64 GB"), ("disk", "200 GB"))
    emr_idle_timeout_minutes: int = 15
    emr_subnet_ids: tuple[str, ...] = ()
    emr_security_group_ids: tuple[str, ...] = ()
    partition: str = field(default="aws", repr=False)

    def __post_init__(self) -> None:
        if not STACK_NAME.match(self.name):
            raise ProvisionError(
                f"stack name {self.name!r} is not usable; use 3-24 lower-case letters, digits and hyphens, "
                "starting with a letter"
            )

    @property
    def data_bucket(self) -> str:
        """The governed bucket (raw/, curated/, ml/); only the catalog's storage role reads or writes it."""
        return self.data_bucket_name or f"{self.name}-data-{self.account_id}-{self.region}"

    @property
    def code_bucket(self) -> str:
        """Job code (code/) and training scratch (scratch/train/), outside the governed bucket."""
        return self.code_bucket_name or f"{self.name}-code-{self.account_id}-{self.region}"

    @property
    def image_repository(self) -> str:
        return self.image_repository_name or f"{self.name}-train"

    @property
    def tags(self) -> dict[str, str]:
        return {MANAGED_TAG: "true", STACK_TAG: self.name}

    @property
    def emr_role_name(self) -> str:
        return f"{self.name}-emr-runtime"

    @property
    def sagemaker_role_name(self) -> str:
        return f"{self.name}-sagemaker-execution"

    @property
    def storage_role_name(self) -> str:
        return f"{self.name}-uc-storage"

    @property
    def emr_application_name(self) -> str:
        return f"{self.name}-preprocess"

    @property
    def emr_log_group(self) -> str:
        return f"/aws/emr-serverless/{self.name}"

    @property
    def permissions_policy_name(self) -> str:
        return f"{self.name}-{PERMISSIONS_POLICY_SUFFIX}"

    @property
    def orchestrator_policy_name(self) -> str:
        """The customer-managed policy to attach to whatever identity the Dagster deployment runs as."""
        return f"{self.name}-{ORCHESTRATOR_POLICY_SUFFIX}"

    @property
    def orchestrator_policy_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:policy/{self.orchestrator_policy_name}"

    def role_arn(self, role_name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:role/{role_name}"

    @property
    def secret_prefix(self) -> str:
        """Secrets Manager ids of the principals' OAuth clients: prefix + principal."""
        return f"{self.name}/"

    def secret_name(self, principal: Principal) -> str:
        return f"{self.secret_prefix}{principal.value}"

    def secret_arn_pattern(self, principal: Principal) -> str:
        """Secrets Manager appends '-' and six random characters to every secret's ARN."""
        return f"arn:{self.partition}:secretsmanager:{self.region}:{self.account_id}:secret:{self.secret_name(principal)}-??????"

    def log_group_arn(self, log_group: str) -> str:
        return f"arn:{self.partition}:logs:{self.region}:{self.account_id}:log-group:{log_group}"

    def bucket_arn(self, bucket: str, key: str | None = None) -> str:
        return f"arn:{self.partition}:s3:::{bucket}" + ("" if key is None else f"/{key}")

    @property
    def image_repository_arn(self) -> str:
        return f"arn:{self.partition}:ecr:{self.region}:{self.account_id}:repository/{self.image_repository}"

    def data_url(self, prefix: str = "") -> str:
        return f"s3://{self.data_bucket}/{prefix}"


@dataclass(frozen=True)
class RoleDocuments:
    """One IAM role: its trust policy and its single inline permissions policy."""

    name: str
    description: str
    trust: dict[str, Any]
    permissions: dict[str, Any]
    job_role: bool
    principal: Principal | None = None


def _document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def _allow(sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _service_trust(cfg: StackConfig, service: str) -> dict[str, Any]:
    """Trust the service, only on behalf of this account (confused-deputy guard)."""
    return _document({
        "Sid": "TrustService",
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": cfg.account_id}},
    })


def _own_secret(cfg: StackConfig, principal: Principal) -> dict[str, Any]:
    return _allow("ReadOwnSecret", ["secretsmanager:GetSecretValue"], [cfg.secret_arn_pattern(principal)])


def _log_writes(cfg: StackConfig, log_group: str, *, create_group: bool) -> dict[str, Any]:
    actions = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    if create_group:
        actions.insert(0, "logs:CreateLogGroup")
    arn = cfg.log_group_arn(log_group)
    return _allow("WriteJobLogs", actions, [arn, f"{arn}:*"])


def _code_read(cfg: StackConfig, *extra_prefixes: str) -> list[dict[str, Any]]:
    prefixes = [CODE_PREFIX, *extra_prefixes]
    return [
        _allow("ReadCode", ["s3:GetObject"], [cfg.bucket_arn(cfg.code_bucket, f"{CODE_PREFIX}*")]),
        _allow(
            "ListCodeAndScratch" if extra_prefixes else "ListCode",
            ["s3:ListBucket"],
            [cfg.bucket_arn(cfg.code_bucket)],
            {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
        ),
    ]


def emr_runtime_role(cfg: StackConfig) -> RoleDocuments:
    """EMR Serverless job runtime role of the preprocess job."""
    permissions = _document(
        _own_secret(cfg, Principal.PREPROCESS),
        _log_writes(cfg, cfg.emr_log_group, create_group=False),
        # EMR Serverless looks the configured group up before it streams driver and executor logs into it.
        _allow("FindLogGroup", ["logs:DescribeLogGroups"], [cfg.log_group_arn("*")]),
        *_code_read(cfg),
    )
    return RoleDocuments(
        name=cfg.emr_role_name,
        description="EMR Serverless runtime role of the preprocess job: own secret, own logs, code; no governed data",
        trust=_service_trust(cfg, "emr-serverless.amazonaws.com"),
        permissions=permissions,
        job_role=True,
        principal=Principal.PREPROCESS,
    )


def sagemaker_execution_role(cfg: StackConfig) -> RoleDocuments:
    """SageMaker execution role of the training job."""
    permissions = _document(
        _own_secret(cfg, Principal.TRAIN),
        _log_writes(cfg, SAGEMAKER_LOG_GROUP, create_group=True),
        # GetAuthorizationToken has no resource type: ECR only accepts "*" for it.
        _allow("PullImageToken", ["ecr:GetAuthorizationToken"], ["*"]),
        _allow(
            "PullImage",
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            [cfg.image_repository_arn],
        ),
        *_code_read(cfg, TRAIN_SCRATCH_PREFIX),
        _allow(
            "ReadWriteScratch",
            ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
            [cfg.bucket_arn(cfg.code_bucket, f"{TRAIN_SCRATCH_PREFIX}*")],
        ),
    )
    return RoleDocuments(
        name=cfg.sagemaker_role_name,
        description="SageMaker execution role of the train job: own secret, own logs, image, code, scratch; no governed data",
        trust=_service_trust(cfg, "sagemaker.amazonaws.com"),
        permissions=permissions,
        job_role=True,
        principal=Principal.TRAIN,
    )


def storage_role_trust(cfg: StackConfig, *, include_self: bool = True) -> dict[str, Any]:
    """Trust Unity Catalog's master role with the storage credential's external id, and the role itself."""
    principals = [cfg.uc_master_role_arn]
    if include_self:
        principals.append(cfg.role_arn(cfg.storage_role_name))
    return _document({
        "Sid": "TrustUnityCatalog",
        "Effect": "Allow",
        "Principal": {"AWS": principals},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": cfg.uc_external_id}},
    })


def storage_role(cfg: StackConfig) -> RoleDocuments:
    """The catalog's storage credential: the only principal with object access to raw/, curated/ and ml/."""
    objects = [cfg.bucket_arn(cfg.data_bucket, f"{prefix}*") for prefix in DATA_PREFIXES]
    listing = [p.rstrip("/") for p in DATA_PREFIXES] + [f"{p}*" for p in DATA_PREFIXES]
    permissions = _document(
        _allow("GovernedObjects", ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"], objects),
        _allow("ListGovernedPrefixes", ["s3:ListBucket"], [cfg.bucket_arn(cfg.data_bucket)],
               {"StringLike": {"s3:prefix": listing}}),
        _allow("LocateBucket", ["s3:GetBucketLocation"], [cfg.bucket_arn(cfg.data_bucket)]),
        # Databricks requires storage-credential roles to be self-assuming.
        _allow("AssumeSelf", ["sts:AssumeRole"], [cfg.role_arn(cfg.storage_role_name)]),
    )
    return RoleDocuments(
        name=cfg.storage_role_name,
        description="Unity Catalog storage credential: sole data-plane access to the governed prefixes",
        trust=storage_role_trust(cfg),
        permissions=permissions,
        job_role=False,
    )


def orchestrator_policy(cfg: StackConfig) -> dict[str, Any]:
    """What the Dagster deployment's own identity may do: start, watch and stop the two jobs as their roles, read
    their logs for Pipes, check the staged code, spill a large Pipes context, and read the principals' secrets
    (the raw ingest, the preflight checks and the registration act as those principals). Nothing in the governed
    bucket: the data moves only with credentials the catalog vends."""
    emr = f"arn:{cfg.partition}:emr-serverless:{cfg.region}:{cfg.account_id}:/applications"
    code_objects = cfg.bucket_arn(cfg.code_bucket, f"{CODE_PREFIX}*")
    return _document(
        _allow("ReadPrincipalSecrets", ["secretsmanager:GetSecretValue"],
               [cfg.secret_arn_pattern(principal) for principal in Principal]),
        # ListApplications has no resource type: only "*" works; the resource then finds its application by name.
        _allow("FindPreprocessApplication", ["emr-serverless:ListApplications"], ["*"]),
        _allow("RunPreprocessJobs", ["emr-serverless:GetApplication", "emr-serverless:StartJobRun"], [f"{emr}/*"],
               {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": cfg.name}}),
        _allow("WatchPreprocessJobRuns", ["emr-serverless:CancelJobRun", "emr-serverless:GetJobRun"],
               [f"{emr}/*/jobruns/*"]),
        _allow("PassPreprocessRole", ["iam:PassRole"], [cfg.role_arn(cfg.emr_role_name)],
               {"StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}}),
        # AddTags: SageMaker checks it for the tags a Create request carries (the Pipes run tags).
        _allow("RunTrainingJobs", ["sagemaker:AddTags", "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                                   "sagemaker:StopTrainingJob"],
               [f"arn:{cfg.partition}:sagemaker:{cfg.region}:{cfg.account_id}:training-job/{TRAINING_JOB_PREFIX}*"]),
        _allow("PassTrainingRole", ["iam:PassRole"], [cfg.role_arn(cfg.sagemaker_role_name)],
               {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
        _allow("ReadJobLogs", ["logs:DescribeLogStreams", "logs:GetLogEvents"],
               [arn for group in (cfg.emr_log_group, SAGEMAKER_LOG_GROUP)
                for arn in (cfg.log_group_arn(group), f"{cfg.log_group_arn(group)}:*")]),
        _allow("CheckStagedCode", ["s3:GetObject"], [code_objects]),
        # With ListBucket a missing staged file answers 404 ("not staged, run aws stage"), without it 403.
        _allow("ListStagedCode", ["s3:ListBucket"], [cfg.bucket_arn(cfg.code_bucket)],
               {"StringLike": {"s3:prefix": [f"{CODE_PREFIX}*"]}}),
        _allow("SpillPipesContext", ["s3:DeleteObject", "s3:PutObject"],
               [cfg.bucket_arn(cfg.code_bucket, f"{PIPES_SPILL_PREFIX}*")]),
    )


def roles(cfg: StackConfig) -> tuple[RoleDocuments, ...]:
    """Every role of the stack, the storage role first (the job roles' bucket deny names them)."""
    return (storage_role(cfg), emr_runtime_role(cfg), sagemaker_execution_role(cfg))


def _deny_insecure_transport(cfg: StackConfig, bucket: str) -> dict[str, Any]:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [cfg.bucket_arn(bucket), cfg.bucket_arn(bucket, "*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def data_bucket_policy(cfg: StackConfig) -> dict[str, Any]:
    """Defence in depth: TLS only, and an explicit deny of every S3 action to the job roles."""
    return _document(
        _deny_insecure_transport(cfg, cfg.data_bucket),
        {
            "Sid": "DenyJobRoles",
            "Effect": "Deny",
            "Principal": {"AWS": [cfg.role_arn(cfg.emr_role_name), cfg.role_arn(cfg.sagemaker_role_name)]},
            "Action": "s3:*",
            "Resource": [cfg.bucket_arn(cfg.data_bucket), cfg.bucket_arn(cfg.data_bucket, "*")],
        },
    )


def code_bucket_policy(cfg: StackConfig) -> dict[str, Any]:
    """TLS only."""
    return _document(_deny_insecure_transport(cfg, cfg.code_bucket))


def all_documents(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """Every policy document the stack deploys, keyed by where it goes."""
    out: dict[str, dict[str, Any]] = {}
    for role in roles(cfg):
        out[f"iam-role/{role.name}/trust"] = role.trust
        out[f"iam-role/{role.name}/{cfg.permissions_policy_name}"] = role.permissions
    out[f"iam-policy/{cfg.orchestrator_policy_name}"] = orchestrator_policy(cfg)
    out[f"s3-bucket/{cfg.data_bucket}/policy"] = data_bucket_policy(cfg)
    out[f"s3-bucket/{cfg.code_bucket}/policy"] = code_bucket_policy(cfg)
    return out


def normalise(document: Any) -> Any:
    """A policy document in a canonical form: single values as sorted lists, keys sorted, for comparison."""
    if isinstance(document, dict):
        out = {}
        for key, value in document.items():
            if key in ("Action", "NotAction", "Resource", "NotResource") or (
                isinstance(value, (str, list)) and key in ("AWS", "Service", "Federated")
            ):
                value = sorted([value] if isinstance(value, str) else value)
            out[key] = normalise(value)
        return out
    if isinstance(document, list):
        items = [normalise(v) for v in document]
        if all(isinstance(v, str) for v in items):
            return sorted(items)
        return items
    return document
