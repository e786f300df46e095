"""The AWS side of the stack as tagged desired state: offline or account plan, idempotent apply, destroy by tags."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.provision import ProvisionError
from governed_ft_dagster.provision import policies as pol
from governed_ft_dagster.provision.policies import MANAGED_TAG, STACK_TAG, StackConfig
from governed_ft_dagster.stack.versions import EMR_RELEASE_LABEL

Action = Literal["create", "update", "no-change", "adopt", "delete", "keep"]
CHANGING: frozenset[str] = frozenset({"create", "update", "delete"})
SECRET_PLACEHOLDER: dict[str, str] = {"client_id": "", "client_secret": ""}
# Regions whose endpoint list (botocore data) includes EMR Serverless, commercial partition.
EMR_SERVERLESS_REGIONS: frozenset[str] = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
    "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-southeast-6", "ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1",
    "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1",
    "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
})
_LIVE_EMR_STATES = ["CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED"]
_ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403", "Forbidden"})
_BAD_CREDENTIALS = frozenset({
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
    "SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthFailure", "InvalidToken",
})
# S3 API operations whose IAM action is spelled differently.
_S3_ACTIONS = {
    "HeadBucket": "s3:ListBucket",
    "HeadObject": "s3:GetObject",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListObjectsV2": "s3:ListBucket",
    "DeleteObjects": "s3:DeleteObjectVersion",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
}
_SERVICE_PREFIX = {"tagging": "tag"}
_WRONG_REGION = frozenset({"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"})


@dataclass(frozen=True)
class Resource:
    """One resource of the desired state."""

    kind: str
    name: str
    spec: dict[str, Any]


@dataclass
class Change:
    """What plan, apply or destroy found or did for one resource."""

    kind: str
    name: str
    action: Action
    details: list[str] = field(default_factory=list)
    spec: dict[str, Any] | None = None

    def as_dict(self, with_spec: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "action": self.action, "details": self.details}
        if with_spec and self.spec is not None:
            out["spec"] = self.spec
        return out


@dataclass
class Report:
    """The outcome of one command, resource by resource."""

    command: str
    stack: str
    region: str
    account_id: str
    changes: list[Change] = field(default_factory=list)
    offline: bool = False

    @property
    def changed(self) -> bool:
        return any(c.action in CHANGING for c in self.changes)

    def as_dict(self, with_spec: bool = True) -> dict[str, Any]:
        return {
            "command": self.command,
            "stack": self.stack,
            "region": self.region,
            "account_id": self.account_id,
            "offline": self.offline,
            "changed": self.changed,
            "resources": [c.as_dict(with_spec) for c in self.changes],
        }


def _denied_from_message(exc: ClientError) -> str:
    message = " ".join(str(exc.response.get("Error", {}).get("Message", "") or "").split())
    found = re.search(r"(\S+) is not authorized to perform: (\S+) on resource: (\S+)", message)
    if found:
        return (f"AWS denied {found.group(2)} on {found.group(3)} to {found.group(1)}; grant that action to the "
                "caller or run as a principal that has it")
    return f"AWS denied {exc.operation_name} to the caller; grant it that action or run as a principal that has it"


@contextmanager
def aws_errors(describe_denied: Callable[[ClientError], str] = _denied_from_message) -> Iterator[None]:
    """Turn botocore failures (no credentials, no endpoint, a wrong region, a refusal) into one sentence naming the
    cause and the fix."""
    try:
        yield
    except ProvisionError:
        raise
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError):
        raise ProvisionError(
            "no AWS credentials found; set AWS_PROFILE (after `aws configure` or `aws sso login`) or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then retry"
        ) from None
    except NoRegionError:
        raise ProvisionError("no AWS region given; pass --region or set AWS_REGION") from None
    except EndpointConnectionError as exc:
        raise ProvisionError(
            f"AWS endpoint {exc.kwargs.get('endpoint_url', '')} is unreachable; check --region and network access"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _ACCESS_DENIED:
            raise ProvisionError(describe_denied(exc)) from None
        if code in _BAD_CREDENTIALS:
            raise ProvisionError(
                f"AWS rejected the credentials ({code}); refresh them (for example `aws sso login`) and retry"
            ) from None
        if code in _WRONG_REGION:
            raise ProvisionError(
                f"AWS answered {code} to {exc.operation_name}: the resource lives in another region than "
                f"{exc.response.get('ResponseMetadata', {}).get('HTTPHeaders', {}).get('x-amz-bucket-region') or 'the one given'}"
                "; pass its region with --region or AWS_REGION"
            ) from None
        raise ProvisionError(f"AWS {exc.operation_name} failed: {code}: {error.get('Message', '')}") from None
    except BotoCoreError as exc:
        raise ProvisionError(f"AWS request failed ({type(exc).__name__}: {exc})") from None


# ---- desired state -------------------------------------------------------------------------------------------


def check_region(region: str) -> None:
    """Fail early, offline, in a region without EMR Serverless."""
    if region not in EMR_SERVERLESS_REGIONS:
        raise ProvisionError(
            f"EMR Serverless is not available in region {region!r}; pick one of "
            f"{', '.join(sorted(EMR_SERVERLESS_REGIONS))} with --region"
        )


def desired_state(cfg: StackConfig) -> list[Resource]:
    """Every resource of the stack in creation order (roles before the bucket policy that names them)."""
    tags = cfg.tags
    block_all = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    resources = [
        Resource("s3-bucket", cfg.data_bucket, {
            "purpose": "governed data; read and written only through Unity Catalog's storage credential",
            "prefixes": list(pol.DATA_PREFIXES),
            "versioning": "Enabled",
            "encryption": "AES256",
            "public_access_block": block_all,
            "lifecycle": [],
            "tags": tags,
        }),
        Resource("s3-bucket", cfg.code_bucket, {
            "purpose": "job code (code/) and training checkpoints and output (scratch/train/); no governed data",
            "prefixes": [pol.CODE_PREFIX, pol.TRAIN_SCRATCH_PREFIX],
            "versioning": "Disabled",
            "encryption": "AES256",
            "public_access_block": block_all,
            "lifecycle": [{"id": "expire-scratch", "prefix": pol.SCRATCH_PREFIX, "expire_days": cfg.scratch_expiry_days}],
            "tags": tags,
        }),
    ]
    for principal in Principal:
        resources.append(Resource("secret", cfg.secret_name(principal), {
            "description": f"Databricks OAuth client of the {principal.value} service principal (governed-ft)",
            "placeholder": dict(SECRET_PLACEHOLDER),
            "tags": tags,
        }))
    resources += [
        Resource("log-group", cfg.emr_log_group, {"retention_days": cfg.log_retention_days, "tags": tags,
                                                  "used_by": cfg.emr_role_name}),
        Resource("log-group", pol.SAGEMAKER_LOG_GROUP, {"retention_days": cfg.log_retention_days, "tags": tags,
                                                        "used_by": cfg.sagemaker_role_name}),
    ]
    for role in pol.roles(cfg):
        resources.append(Resource("iam-role", role.name, {
            "description": role.description,
            "trust": role.trust,
            "inline_policies": {cfg.permissions_policy_name: role.permissions},
            "tags": tags,
        }))
    resources.append(Resource("iam-policy", cfg.orchestrator_policy_name, {
        "description": f"governed-ft {cfg.name}: the orchestrator's own permissions; attach it to the identity the "
                       "Dagster deployment runs as",
        "arn": cfg.orchestrator_policy_arn,
        "document": pol.orchestrator_policy(cfg),
        "tags": tags,
    }))
    resources += [
        Resource("s3-bucket-policy", cfg.data_bucket, {"policy": pol.data_bucket_policy(cfg)}),
        Resource("s3-bucket-policy", cfg.code_bucket, {"policy": pol.code_bucket_policy(cfg)}),
    ]
    capacity = dict(cfg.emr_max_capacity)
    application: dict[str, Any] = {
        "type": "SPARK",
        "releaseLabel": EMR_RELEASE_LABEL,
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": cfg.emr_idle_timeout_minutes},
        "maximumCapacity": capacity,
        "tags": tags,
        "job_log_group": cfg.emr_log_group,
        "runtime_role": cfg.role_arn(cfg.emr_role_name),
    }
    if cfg.emr_subnet_ids or cfg.emr_security_group_ids:
        application["networkConfiguration"] = {"subnetIds": list(cfg.emr_subnet_ids),
                                               "securityGroupIds": list(cfg.emr_security_group_ids)}
    resources.append(Resource("emr-serverless-application", cfg.emr_application_name, application))
    return resources


def offline_plan(cfg: StackConfig) -> Report:
    """Every resource and policy document apply would create in an empty account; makes no AWS call."""
    check_region(cfg.region)
    report = Report("plan", cfg.name, cfg.region, cfg.account_id, offline=True)
    for resource in desired_state(cfg):
        report.changes.append(Change(resource.kind, resource.name, "create", ["the account was not consulted"],
                                     resource.spec))
    return report


# ---- the reconciler ------------------------------------------------------------------------------------------


@dataclass
class _Observed:
    """What the account holds for one desired resource."""

    exists: bool
    ours: bool = True
    state: dict[str, Any] = field(default_factory=dict)


class AwsProvisioner:
    """Plans, applies and destroys the stack in one account and region with the caller's credentials."""

    def __init__(
        self,
        cfg: StackConfig,
        *,
        session: boto3.session.Session | None = None,
        endpoint_url: str | None = None,
        poll_interval_s: float = 5.0,
        wait_timeout_s: float = 900.0,
    ):
        check_region(cfg.region)
        self.cfg = cfg
        self.session = session or boto3.session.Session(region_name=cfg.region)
        self.endpoint_url = endpoint_url
        self.poll_interval_s = poll_interval_s
        self.wait_timeout_s = wait_timeout_s
        self.caller_arn = "the caller"
        self._clients: dict[str, Any] = {}
        self._last_call = threading.local()

    # ---- public commands -----------------------------------------------------------------------------------

    def connect(self) -> StackConfig:
        """Resolve the account behind the credentials; names that derive from it follow."""
        with self._aws_errors():
            identity = self.client("sts").get_caller_identity()
        self.caller_arn = identity.get("Arn", self.caller_arn)
        account = identity["Account"]
        if self.cfg.account_id not in (pol.ACCOUNT_PLACEHOLDER, account):
            raise ProvisionError(
                f"the credentials belong to account {account}, not {self.cfg.account_id}; "
                "switch AWS_PROFILE or drop --account-id"
            )
        self.cfg = dataclasses.replace(self.cfg, account_id=account)
        return self.cfg

    def plan(self) -> Report:
        """Diff the desired state against the account: create, update or no-change per resource."""
        self.connect()
        report = Report("plan", self.cfg.name, self.cfg.region, self.cfg.account_id)
        with self._aws_errors():
            for resource in desired_state(self.cfg):
                observed = self._observe(resource)
                report.changes.append(self._compare(resource, observed))
        return report

    def apply(self) -> Report:
        """Create what is missing, update what drifted; a second run changes nothing."""
        self.connect()
        report = Report("apply", self.cfg.name, self.cfg.region, self.cfg.account_id)
        with self._aws_errors():
            for resource in desired_state(self.cfg):
                observed = self._observe(resource)
                change = self._compare(resource, observed)
                change.spec = None
                if change.action == "create":
                    self._create(resource)
                elif change.action == "update":
                    self._update(resource, observed)
                report.changes.append(change)
        return report

    def destroy(
        self, *, force_empty_buckets: bool = False, recovery_window_days: int = 7, force_delete_secrets: bool = False
    ) -> Report:
        """Delete what carries this stack's tags, in dependency order; report what went and what stayed."""
        if not force_delete_secrets and not 7 <= recovery_window_days <= 30:
            raise ProvisionError(
                f"--recovery-window-days {recovery_window_days} is out of range; Secrets Manager accepts 7 to 30 "
                "(or pass --force-delete-secrets to delete without recovery)"
            )
        self.connect()
        report = Report("destroy", self.cfg.name, self.cfg.region, self.cfg.account_id)
        with self._aws_errors():
            for application_id, name in self._tagged_applications():
                self._delete_application(application_id)
                report.changes.append(Change("emr-serverless-application", name, "delete", [application_id]))
            for role in self._tagged_roles():
                details = self._delete_role(role)
                report.changes.append(Change("iam-role", role, "delete", details))
            for name, arn in self._tagged_policies():
                report.changes.append(Change("iam-policy", name, "delete", self._delete_policy(arn)))
            for group in self._tagged_log_groups():
                self.client("logs").delete_log_group(logGroupName=group)
                report.changes.append(Change("log-group", group, "delete"))
            for name, arn in self._tagged_secrets():
                if force_delete_secrets:
                    self.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
                    detail = "deleted without recovery"
                else:
                    self.client("secretsmanager").delete_secret(SecretId=arn, RecoveryWindowInDays=recovery_window_days)
                    detail = f"scheduled for deletion in {recovery_window_days} days (restore-secret undoes it)"
                report.changes.append(Change("secret", name, "delete", [detail]))
            for bucket in self._tagged_buckets():
                report.changes.append(self._delete_bucket(bucket, force_empty_buckets))
        return report

    # ---- clients and errors --------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client that remembers its last operation, so a refusal can name the IAM action."""
        if service not in self._clients:
            client = self.session.client(
                service,
                region_name=self.cfg.region,
                endpoint_url=self.endpoint_url,
                config=BotoConfig(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}),
            )
            client.meta.events.register("before-parameter-build", self._remember_call)
            self._clients[service] = client
        return self._clients[service]

    def _remember_call(self, model: Any = None, params: Any = None, **_: Any) -> None:
        if model is not None:
            self._last_call.value = (model.service_model.signing_name, model.name, params or {})

    def _denied_action(self, exc: ClientError) -> tuple[str, str]:
        """The IAM action and resource a refusal was about, from the message or else from the last call."""
        message = exc.response.get("Error", {}).get("Message", "") or ""
        match = re.search(r"perform: (\S+) on resource: (.+?)(?: because |\.?$)", message)
        if match:
            return match.group(1), match.group(2).strip()
        service, operation, params = getattr(self._last_call, "value", ("", exc.operation_name, {}))
        if not service:
            action = operation
        elif service == "s3":
            action = _S3_ACTIONS.get(operation, f"s3:{operation}")
        else:
            action = f"{_SERVICE_PREFIX.get(service, service)}:{operation}"
        resource = next((str(params[k]) for k in ("RoleName", "Bucket", "SecretId", "Name", "logGroupName",
                                                  "applicationId", "name") if k in params), "")
        return action, resource

    def _aws_errors(self):
        """Turn botocore failures into one sentence naming the cause and the fix."""
        return aws_errors(self._denied_sentence)

    def _denied_sentence(self, exc: ClientError) -> str:
        action, resource = self._denied_action(exc)
        on = f" on {resource}" if resource else ""
        return f"AWS denied {action}{on} to {self.caller_arn}; grant that action to the caller or run as a principal that has it"

    # ---- observe ---------------------------------------------------------------------------------------------

    def _observe(self, resource: Resource) -> _Observed:
        return {
            "s3-bucket": self._observe_bucket,
            "s3-bucket-policy": self._observe_bucket_policy,
            "secret": self._observe_secret,
            "log-group": self._observe_log_group,
            "iam-role": self._observe_role,
            "iam-policy": self._observe_policy,
            "emr-serverless-application": self._observe_application,
        }[resource.kind](resource)

    def _ours(self, tags: dict[str, str]) -> bool:
        return tags.get(MANAGED_TAG) == "true" and tags.get(STACK_TAG) == self.cfg.name

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client("s3").head_bucket(Bucket=bucket)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
                return False
            if status == 403 or code in _ACCESS_DENIED:
                raise ProvisionError(
                    f"bucket {bucket} already exists and this caller cannot read it: it belongs to another AWS "
                    "account (bucket names are global) or the caller lacks s3:ListBucket; pick another name with "
                    "--data-bucket or --code-bucket"
                ) from None
            if status == 301 or code in ("301", "PermanentRedirect"):
                raise ProvisionError(
                    f"bucket {bucket} already exists in another region; pick another name with "
                    "--data-bucket or --code-bucket"
                ) from None
            raise

    def _bucket_tags(self, bucket: str) -> dict[str, str]:
        try:
            tag_set = self.client("s3").get_bucket_tagging(Bucket=bucket)["TagSet"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchTagSet":
                return {}
            raise
        return {t["Key"]: t["Value"] for t in tag_set}

    def _observe_bucket(self, resource: Resource) -> _Observed:
        bucket, s3 = resource.name, self.client("s3")
        if not self._bucket_exists(bucket):
            return _Observed(False)
        tags = self._bucket_tags(bucket)
        if not self._ours(tags):
            raise ProvisionError(
                f"bucket {bucket} already exists in account {self.cfg.account_id} but is not tagged "
                f"{STACK_TAG}={self.cfg.name}, so this stack did not create it; pick another name with "
                "--data-bucket or --code-bucket, or remove that bucket"
            )
        state: dict[str, Any] = {"tags": tags}
        state["versioning"] = s3.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled")
        state["encryption"] = _optional(lambda: s3.get_bucket_encryption(Bucket=bucket)[
            "ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
            "ServerSideEncryptionConfigurationNotFoundError")
        state["public_access_block"] = _optional(
            lambda: s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
            "NoSuchPublicAccessBlockConfiguration")
        rules = _optional(lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
                          "NoSuchLifecycleConfiguration") or []
        state["lifecycle"] = [
            {"id": r.get("ID"), "prefix": r.get("Filter", {}).get("Prefix", r.get("Prefix", "")),
             "expire_days": r.get("Expiration", {}).get("Days")}
            for r in rules if r.get("Status") == "Enabled"
        ]
        state["prefixes"] = [p for p in resource.spec["prefixes"] if any(
            item["Key"] == p for item in s3.list_objects_v2(Bucket=bucket, Prefix=p, MaxKeys=1).get("Contents", []))]
        return _Observed(True, True, state)

    def _observe_bucket_policy(self, resource: Resource) -> _Observed:
        if not self._bucket_exists(resource.name):
            return _Observed(False)
        raw = _optional(lambda: self.client("s3").get_bucket_policy(Bucket=resource.name)["Policy"], "NoSuchBucketPolicy")
        if raw is None:
            return _Observed(False)
        return _Observed(True, True, {"policy": json.loads(raw)})

    def _observe_secret(self, resource: Resource) -> _Observed:
        described = _optional(lambda: self.client("secretsmanager").describe_secret(SecretId=resource.name),
                              "ResourceNotFoundException")
        if described is None:
            return _Observed(False)
        tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
        state = {"tags": tags, "description": described.get("Description", ""), "arn": described["ARN"],
                 "deleted": described.get("DeletedDate") is not None}
        if state["deleted"] and not self._ours(tags):
            raise ProvisionError(
                f"secret {resource.name} is scheduled for deletion and was not created by this stack; restore it "
                f"with `aws secretsmanager restore-secret --secret-id {resource.name}` or wait until it is gone"
            )
        return _Observed(True, self._ours(tags), state)

    def _observe_log_group(self, resource: Resource) -> _Observed:
        logs = self.client("logs")
        groups = logs.describe_log_groups(logGroupNamePrefix=resource.name).get("logGroups", [])
        group = next((g for g in groups if g["logGroupName"] == resource.name), None)
        if group is None:
            return _Observed(False)
        arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
        tags = logs.list_tags_for_resource(resourceArn=arn).get("tags", {})
        return _Observed(True, self._ours(tags), {"tags": tags, "retention_days": group.get("retentionInDays"),
                                                  "arn": arn})

    def _observe_role(self, resource: Resource) -> _Observed:
        iam = self.client("iam")
        role = _optional(lambda: iam.get_role(RoleName=resource.name)["Role"], "NoSuchEntity")
        if role is None:
            return _Observed(False)
        tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
        if not self._ours(tags):
            raise ProvisionError(
                f"IAM role {resource.name} already exists in account {self.cfg.account_id} but is not tagged "
                f"{STACK_TAG}={self.cfg.name}, so this stack did not create it; choose another --stack name "
                "or remove that role"
            )
        inline = {}
        for name in _pages(iam, "list_role_policies", "PolicyNames", RoleName=resource.name):
            inline[name] = iam.get_role_policy(RoleName=resource.name, PolicyName=name)["PolicyDocument"]
        attached = [p["PolicyArn"] for p in _pages(iam, "list_attached_role_policies", "AttachedPolicies",
                                                    RoleName=resource.name)]
        return _Observed(True, True, {"tags": tags, "trust": _document(role["AssumeRolePolicyDocument"]),
                                      "description": role.get("Description", ""),
                                      "inline_policies": {k: _document(v) for k, v in inline.items()},
                                      "attached_policies": attached})

    def _observe_policy(self, resource: Resource) -> _Observed:
        iam = self.client("iam")
        policy = _optional(lambda: iam.get_policy(PolicyArn=self._policy_arn(resource))["Policy"], "NoSuchEntity")
        if policy is None:
            return _Observed(False)
        tags = {t["Key"]: t["Value"] for t in _pages(iam, "list_policy_tags", "Tags", PolicyArn=policy["Arn"])}
        if not self._ours(tags):
            raise ProvisionError(
                f"IAM policy {resource.name} already exists in account {self.cfg.account_id} but is not tagged "
                f"{STACK_TAG}={self.cfg.name}, so this stack did not create it; choose another --stack name "
                "or remove that policy"
            )
        version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
        return _Observed(True, True, {"tags": tags, "arn": policy["Arn"],
                                      "document": _document(version["PolicyVersion"]["Document"])})

    def _policy_arn(self, resource: Resource) -> str:
        return f"arn:{self.cfg.partition}:iam::{self.cfg.account_id}:policy/{resource.name}"

    def _live_applications(self) -> list[dict[str, Any]]:
        return list(_pages(self.client("emr-serverless"), "list_applications", "applications", states=_LIVE_EMR_STATES))

    def _observe_application(self, resource: Resource) -> _Observed:
        emr = self.client("emr-serverless")
        for summary in self._live_applications():
            if summary["name"] != resource.name:
                continue
            application = emr.get_application(applicationId=summary["id"])["application"]
            if not self._ours(application.get("tags", {})):
                raise ProvisionError(
                    f"EMR Serverless application {resource.name} ({summary['id']}) already exists but is not tagged "
                    f"{STACK_TAG}={self.cfg.name}; choose another --stack name or delete that application"
                )
            return _Observed(True, True, application)
        return _Observed(False)

    # ---- compare ---------------------------------------------------------------------------------------------

    def _compare(self, resource: Resource, observed: _Observed) -> Change:
        if not observed.exists:
            return Change(resource.kind, resource.name, "create", [], resource.spec)
        if not observed.ours:
            return Change(resource.kind, resource.name, "adopt",
                          ["exists and was not created by this stack; used as is, never modified or deleted"],
                          resource.spec)
        details = self._differences(resource, observed.state)
        return Change(resource.kind, resource.name, "update" if details else "no-change", details, resource.spec)

    def _differences(self, resource: Resource, state: dict[str, Any]) -> list[str]:
        spec, out = resource.spec, []
        if "tags" in spec and any(state.get("tags", {}).get(k) != v for k, v in spec["tags"].items()):
            out.append("tags")
        if resource.kind == "s3-bucket":
            for key in ("versioning", "encryption", "public_access_block", "lifecycle"):
                if _canonical(state.get(key)) != _canonical(spec[key]) and not (
                    key == "versioning" and spec[key] == "Disabled" and state.get(key) in ("Disabled", None)
                ):
                    out.append(key)
            missing = [p for p in spec["prefixes"] if p not in state.get("prefixes", [])]
            if missing:
                out.append(f"prefix markers {', '.join(missing)}")
        elif resource.kind == "s3-bucket-policy":
            if _canonical(pol.normalise(state["policy"])) != _canonical(pol.normalise(spec["policy"])):
                out.append("policy")
        elif resource.kind == "secret":
            if state.get("deleted"):
                out.append("restore (scheduled for deletion)")
            if state.get("description") != spec["description"]:
                out.append("description")
        elif resource.kind == "log-group":
            if state.get("retention_days") != spec["retention_days"]:
                out.append("retention")
        elif resource.kind == "iam-role":
            if _canonical(pol.normalise(state["trust"])) != _canonical(pol.normalise(spec["trust"])):
                out.append("trust policy")
            if state.get("description") != spec["description"]:
                out.append("description")
            for name, document in spec["inline_policies"].items():
                current = state["inline_policies"].get(name)
                if current is None or _canonical(pol.normalise(current)) != _canonical(pol.normalise(document)):
                    out.append(f"inline policy {name}")
            out += [f"remove inline policy {n}" for n in state["inline_policies"] if n not in spec["inline_policies"]]
            out += [f"detach managed policy {arn}" for arn in state["attached_policies"]]
        elif resource.kind == "iam-policy":
            if _canonical(pol.normalise(state["document"])) != _canonical(pol.normalise(spec["document"])):
                out.append("policy document")
        elif resource.kind == "emr-serverless-application":
            for key in ("releaseLabel", "maximumCapacity", "autoStartConfiguration", "autoStopConfiguration",
                        "networkConfiguration"):
                if _canonical(state.get(key) or None) != _canonical(spec.get(key)):
                    out.append(key)
        return out

    # ---- create and update -----------------------------------------------------------------------------------

    def _create(self, resource: Resource) -> None:
        {
            "s3-bucket": self._create_bucket,
            "s3-bucket-policy": self._put_bucket_policy,
            "secret": self._create_secret,
            "log-group": self._create_log_group,
            "iam-role": self._create_role,
            "iam-policy": self._create_policy,
            "emr-serverless-application": self._create_application,
        }[resource.kind](resource)

    def _update(self, resource: Resource, observed: _Observed) -> None:
        {
            "s3-bucket": lambda r, o: self._configure_bucket(r),
            "s3-bucket-policy": lambda r, o: self._put_bucket_policy(r),
            "secret": self._update_secret,
            "log-group": self._update_log_group,
            "iam-role": self._update_role,
            "iam-policy": self._update_policy,
            "emr-serverless-application": self._update_application,
        }[resource.kind](resource, observed)

    def _create_bucket(self, resource: Resource) -> None:
        s3 = self.client("s3")
        kwargs: dict[str, Any] = {"Bucket": resource.name}
        if self.cfg.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.cfg.region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyExists":
                raise ProvisionError(
                    f"bucket {resource.name} already exists in another AWS account (bucket names are global); "
                    "pick another name with --data-bucket or --code-bucket"
                ) from None
            raise
        self._configure_bucket(resource)

    def _configure_bucket(self, resource: Resource) -> None:
        s3, spec, bucket = self.client("s3"), resource.spec, resource.name
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=spec["public_access_block"])
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": spec["encryption"]}}]})
        if spec["versioning"] == "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        if spec["lifecycle"]:
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
                {"ID": r["id"], "Filter": {"Prefix": r["prefix"]}, "Status": "Enabled",
                 "Expiration": {"Days": r["expire_days"]}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
                for r in spec["lifecycle"]]})
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tag_list(spec["tags"])})
        for prefix in spec["prefixes"]:
            s3.put_object(Bucket=bucket, Key=prefix, Body=b"")

    def _put_bucket_policy(self, resource: Resource, *_: Any) -> None:
        document = json.dumps(resource.spec["policy"])
        # A just-created role may not be visible to S3 yet: "Invalid principal in policy".
        _retry(lambda: self.client("s3").put_bucket_policy(Bucket=resource.name, Policy=document),
               "MalformedPolicy", self.wait_timeout_s, min(self.poll_interval_s, 5.0))

    def _create_secret(self, resource: Resource) -> None:
        self.client("secretsmanager").create_secret(
            Name=resource.name,
            Description=resource.spec["description"],
            SecretString=json.dumps(SECRET_PLACEHOLDER),
            Tags=_tag_list(resource.spec["tags"]),
        )

    def _update_secret(self, resource: Resource, observed: _Observed) -> None:
        sm = self.client("secretsmanager")
        if observed.state.get("deleted"):
            sm.restore_secret(SecretId=resource.name)
        if observed.state.get("description") != resource.spec["description"]:
            sm.update_secret(SecretId=resource.name, Description=resource.spec["description"])
        sm.tag_resource(SecretId=resource.name, Tags=_tag_list(resource.spec["tags"]))

    def _create_log_group(self, resource: Resource) -> None:
        logs = self.client("logs")
        logs.create_log_group(logGroupName=resource.name, tags=resource.spec["tags"])
        logs.put_retention_policy(logGroupName=resource.name, retentionInDays=resource.spec["retention_days"])

    def _update_log_group(self, resource: Resource, observed: _Observed) -> None:
        logs = self.client("logs")
        logs.put_retention_policy(logGroupName=resource.name, retentionInDays=resource.spec["retention_days"])
        logs.tag_resource(resourceArn=observed.state["arn"], tags=resource.spec["tags"])

    def _create_role(self, resource: Resource) -> None:
        iam, spec = self.client("iam"), resource.spec
        storage = resource.name == self.cfg.storage_role_name
        # A trust policy cannot name the role itself before the role exists: create without it, then add it.
        first_trust = pol.storage_role_trust(self.cfg, include_self=False) if storage else spec["trust"]
        iam.create_role(RoleName=resource.name, AssumeRolePolicyDocument=json.dumps(first_trust),
                        Description=spec["description"], Tags=_tag_list(spec["tags"]), MaxSessionDuration=3600)
        for name, document in spec["inline_policies"].items():
            iam.put_role_policy(RoleName=resource.name, PolicyName=name, PolicyDocument=json.dumps(document))
        if storage:
            self._put_trust(resource.name, spec["trust"])

    def _put_trust(self, role: str, trust: dict[str, Any]) -> None:
        _retry(lambda: self.client("iam").update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(trust)),
               "MalformedPolicyDocument", self.wait_timeout_s, min(self.poll_interval_s, 5.0))

    def _update_role(self, resource: Resource, observed: _Observed) -> None:
        iam, spec, state = self.client("iam"), resource.spec, observed.state
        if _canonical(pol.normalise(state["trust"])) != _canonical(pol.normalise(spec["trust"])):
            self._put_trust(resource.name, spec["trust"])
        if state.get("description") != spec["description"]:
            iam.update_role(RoleName=resource.name, Description=spec["description"])
        for name, document in spec["inline_policies"].items():
            iam.put_role_policy(RoleName=resource.name, PolicyName=name, PolicyDocument=json.dumps(document))
        for name in state["inline_policies"]:
            if name not in spec["inline_policies"]:
                iam.delete_role_policy(RoleName=resource.name, PolicyName=name)
        for arn in state["attached_policies"]:
            iam.detach_role_policy(RoleName=resource.name, PolicyArn=arn)
        iam.tag_role(RoleName=resource.name, Tags=_tag_list(spec["tags"]))

    def _create_policy(self, resource: Resource) -> None:
        self.client("iam").create_policy(PolicyName=resource.name, PolicyDocument=json.dumps(resource.spec["document"]),
                                         Description=resource.spec["description"],
                                         Tags=_tag_list(resource.spec["tags"]))

    def _update_policy(self, resource: Resource, observed: _Observed) -> None:
        """A new default version; the older ones go (IAM keeps at most five)."""
        iam, arn = self.client("iam"), observed.state["arn"]
        if _canonical(pol.normalise(observed.state["document"])) != _canonical(pol.normalise(resource.spec["document"])):
            self._delete_policy_versions(arn)
            iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(resource.spec["document"]),
                                      SetAsDefault=True)
            self._delete_policy_versions(arn)
        iam.tag_policy(PolicyArn=arn, Tags=_tag_list(resource.spec["tags"]))

    def _delete_policy_versions(self, arn: str) -> None:
        iam = self.client("iam")
        for version in list(_pages(iam, "list_policy_versions", "Versions", PolicyArn=arn)):
            if not version["IsDefaultVersion"]:
                iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])

    def _application_settings(self, spec: dict[str, Any]) -> dict[str, Any]:
        keys = ("releaseLabel", "maximumCapacity", "autoStartConfiguration", "autoStopConfiguration",
                "networkConfiguration")
        return {k: spec[k] for k in keys if k in spec}

    def _create_application(self, resource: Resource) -> None:
        self.client("emr-serverless").create_application(
            name=resource.name, type=resource.spec["type"], clientToken=str(uuid.uuid4()),
            tags=resource.spec["tags"], **self._application_settings(resource.spec))

    def _update_application(self, resource: Resource, observed: _Observed) -> None:
        emr = self.client("emr-serverless")
        application_id = observed.state["applicationId"]
        settings = self._application_settings(resource.spec)
        if any(_canonical(observed.state.get(k) or None) != _canonical(v) for k, v in settings.items()):
            self._stop_application(application_id)
            emr.update_application(applicationId=application_id, clientToken=str(uuid.uuid4()), **settings)
        if any(observed.state.get("tags", {}).get(k) != v for k, v in resource.spec["tags"].items()):
            emr.tag_resource(resourceArn=observed.state["arn"], tags=resource.spec["tags"])

    def _stop_application(self, application_id: str) -> None:
        emr = self.client("emr-serverless")
        state = emr.get_application(applicationId=application_id)["application"]["state"]
        if state in ("CREATED", "STOPPED", "TERMINATED"):
            return
        if state in ("STARTING", "STARTED"):
            emr.stop_application(applicationId=application_id)
        deadline = time.monotonic() + self.wait_timeout_s
        while emr.get_application(applicationId=application_id)["application"]["state"] not in ("CREATED", "STOPPED"):
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"EMR Serverless application {application_id} did not stop within {self.wait_timeout_s:g}s; "
                    "cancel its running jobs and retry"
                )
            time.sleep(self.poll_interval_s)

    # ---- destroy ---------------------------------------------------------------------------------------------

    def _tagged_applications(self) -> list[tuple[str, str]]:
        emr, out = self.client("emr-serverless"), []
        for summary in self._live_applications():
            application = emr.get_application(applicationId=summary["id"])["application"]
            if self._ours(application.get("tags", {})):
                out.append((summary["id"], summary["name"]))
        return out

    def _delete_application(self, application_id: str) -> None:
        self._stop_application(application_id)
        self.client("emr-serverless").delete_application(applicationId=application_id)

    def _tagged_roles(self) -> list[str]:
        iam = self.client("iam")
        known = {r.name for r in pol.roles(self.cfg)}
        out = []
        for role in _pages(iam, "list_roles", "Roles"):
            name = role["RoleName"]
            if name in known or name.startswith(f"{self.cfg.name}-"):
                tags = {t["Key"]: t["Value"] for t in _pages(iam, "list_role_tags", "Tags", RoleName=name)}
                if self._ours(tags):
                    out.append(name)
        return out

    def _delete_role(self, role: str) -> list[str]:
        iam, details = self.client("iam"), []
        for name in list(_pages(iam, "list_role_policies", "PolicyNames", RoleName=role)):
            iam.delete_role_policy(RoleName=role, PolicyName=name)
            details.append(f"inline policy {name}")
        for policy in list(_pages(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=role)):
            iam.detach_role_policy(RoleName=role, PolicyArn=policy["PolicyArn"])
            details.append(f"detached {policy['PolicyArn']}")
        for profile in list(_pages(iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=role)):
            iam.remove_role_from_instance_profile(InstanceProfileName=profile["InstanceProfileName"], RoleName=role)
        iam.delete_role(RoleName=role)
        return details

    def _tagged_policies(self) -> list[tuple[str, str]]:
        iam, out = self.client("iam"), []
        for policy in _pages(iam, "list_policies", "Policies", Scope="Local"):
            if policy["PolicyName"].startswith(f"{self.cfg.name}-"):
                tags = {t["Key"]: t["Value"] for t in _pages(iam, "list_policy_tags", "Tags", PolicyArn=policy["Arn"])}
                if self._ours(tags):
                    out.append((policy["PolicyName"], policy["Arn"]))
        return out

    def _delete_policy(self, arn: str) -> list[str]:
        """Detach it from every user, group and role first (IAM refuses to delete an attached policy)."""
        iam, details = self.client("iam"), []
        entities = iam.list_entities_for_policy(PolicyArn=arn)
        for kind, key, detach in (("user", "PolicyUsers", iam.detach_user_policy),
                                  ("group", "PolicyGroups", iam.detach_group_policy),
                                  ("role", "PolicyRoles", iam.detach_role_policy)):
            for entity in entities.get(key, []):
                name = entity[f"{kind.capitalize()}Name"]
                detach(**{f"{kind.capitalize()}Name": name, "PolicyArn": arn})
                details.append(f"detached from {kind} {name}")
        self._delete_policy_versions(arn)
        iam.delete_policy(PolicyArn=arn)
        return details

    def _tagged_arns(self, marker: str) -> list[str]:
        """ARNs the tagging API lists with both stack tags (eventually consistent, so names are checked too)."""
        filters = [{"Key": MANAGED_TAG, "Values": ["true"]}, {"Key": STACK_TAG, "Values": [self.cfg.name]}]
        mappings = _pages(self.client("resourcegroupstaggingapi"), "get_resources", "ResourceTagMappingList",
                          TagFilters=filters)
        return [m["ResourceARN"] for m in mappings if marker in m["ResourceARN"]]

    def _tagged_log_groups(self) -> list[str]:
        names = {arn.split(":log-group:", 1)[1].removesuffix(":*") for arn in self._tagged_arns(":logs:")}
        names |= {self.cfg.emr_log_group, pol.SAGEMAKER_LOG_GROUP}
        out = []
        for name in sorted(names):
            observed = self._observe_log_group(Resource("log-group", name, {}))
            if observed.exists and observed.ours:
                out.append(name)
        return out

    def _tagged_secrets(self) -> list[tuple[str, str]]:
        filters = [{"Key": "tag-key", "Values": [STACK_TAG]}, {"Key": "tag-value", "Values": [self.cfg.name]}]
        out = []
        for secret in _pages(self.client("secretsmanager"), "list_secrets", "SecretList", Filters=filters):
            if self._ours({t["Key"]: t["Value"] for t in secret.get("Tags", [])}) and not secret.get("DeletedDate"):
                out.append((secret["Name"], secret["ARN"]))
        return out

    def _tagged_buckets(self) -> list[str]:
        names = {arn.split(":::", 1)[1] for arn in self._tagged_arns(":s3:::")}
        names |= {self.cfg.data_bucket, self.cfg.code_bucket}
        out = []
        for name in sorted(names):
            try:
                if self._bucket_exists(name) and self._ours(self._bucket_tags(name)):
                    out.append(name)
            except ProvisionError:
                continue
        return out

    def _delete_bucket(self, bucket: str, force: bool) -> Change:
        s3 = self.client("s3")
        markers = set(pol.DATA_PREFIXES) | {pol.CODE_PREFIX, pol.TRAIN_SCRATCH_PREFIX}
        versions: list[dict[str, str]] = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                versions.append({"Key": item["Key"], "VersionId": item.get("VersionId") or "null"})
        data = sorted({v["Key"] for v in versions} - markers)
        if data and not force:
            return Change("s3-bucket", bucket, "keep", [
                f"holds {len(data)} object(s) besides the prefix markers; re-run with --force-empty-buckets "
                "to delete them with the bucket"])
        s3.delete_bucket_policy(Bucket=bucket)
        for start in range(0, len(versions), 1000):
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": versions[start:start + 1000], "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise ProvisionError(
                    f"AWS refused to delete {len(answer['Errors'])} object version(s) of bucket {bucket} "
                    f"(first: {first.get('Key')}: {first.get('Code')}); check object lock and the caller's "
                    "s3:DeleteObjectVersion permission, then retry"
                )
        s3.delete_bucket(Bucket=bucket)
        detail = f"emptied ({len(data)} object(s))" if data else "was empty"
        return Change("s3-bucket", bucket, "delete", [detail])


# ---- helpers -------------------------------------------------------------------------------------------------


def _optional(call: Callable[[], Any], *missing_codes: str) -> Any:
    """The call's result, or None when AWS answers with one of the 'does not exist' codes."""
    try:
        return call()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in missing_codes or (status == 404 and "404" in missing_codes):
            return None
        raise


def _retry(call: Callable[[], Any], code: str, timeout_s: float, interval_s: float) -> Any:
    """Retry a call while AWS answers `code` (IAM propagation), up to timeout_s."""
    deadline = time.monotonic() + min(timeout_s, 120.0)
    while True:
        try:
            return call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != code or time.monotonic() > deadline:
                raise
            time.sleep(interval_s)


def _pages(client: Any, method: str, key: str, **kwargs: Any) -> Iterator[Any]:
    if client.can_paginate(method):
        for page in client.get_paginator(method).paginate(**kwargs):
            yield from page.get(key, [])
    else:
        yield from getattr(client, method)(**kwargs).get(key, [])


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _document(value: Any) -> dict[str, Any]:
    """IAM returns policy documents decoded by boto3, or as URL-encoded JSON text by some endpoints."""
    if isinstance(value, str):
        from urllib.parse import unquote

        return json.loads(unquote(value))
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


__all__ = ["AwsProvisioner", "Change", "Report", "Resource", "aws_errors", "check_region", "desired_state",
           "offline_plan"]
