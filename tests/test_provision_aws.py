"""`governed-ft aws plan|apply|destroy` against moto in server mode on loopback."""

from __future__ import annotations

import json
from typing import Any, Iterator

import boto3
import pytest
import requests
from botocore.stub import Stubber
from click.testing import CliRunner, Result
from moto.server import ThreadedMotoServer

from conftest import free_port
from governed_ft_dagster.cli.provision import aws
from governed_ft_dagster.provision import ProvisionError, policies
from governed_ft_dagster.provision.aws import AwsProvisioner, Resource
from governed_ft_dagster.provision.policies import MANAGED_TAG, STACK_TAG, StackConfig
from governed_ft_dagster.stack.versions import EMR_RELEASE_LABEL

REGION = "us-east-1"
STACK = "gft"
ACCOUNT = "123456789012"  # moto's default account
DATA_BUCKET = f"{STACK}-data-{ACCOUNT}-{REGION}"
CODE_BUCKET = f"{STACK}-code-{ACCOUNT}-{REGION}"
PLANTED = "planted-client-secret-7d1e0c9a-never-print-me"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def account(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh moto account: state reset, test credentials in the environment."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_url


def client(moto_url: str, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=moto_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run(moto_url: str, *args: str, env: dict[str, str | None] | None = None) -> Result:
    base = {"GOVERNED_FT_AWS_ENDPOINT_URL": moto_url, "AWS_REGION": REGION, "GOVERNED_FT_STACK": STACK}
    return CliRunner().invoke(aws, list(args), env={**base, **(env or {})}, catch_exceptions=False)


def run_json(moto_url: str, *args: str) -> dict[str, Any]:
    result = run(moto_url, *args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def actions(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(r["kind"], r["name"]): r["action"] for r in report["resources"]}


def snapshot(moto_url: str) -> dict[str, Any]:
    """What the account holds that this stack could have touched."""
    iam, s3, sm = client(moto_url, "iam"), client(moto_url, "s3"), client(moto_url, "secretsmanager")
    logs, emr = client(moto_url, "logs"), client(moto_url, "emr-serverless")
    roles = {}
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        roles[name] = {
            "trust": role["AssumeRolePolicyDocument"],
            "policies": {p: iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
                         for p in iam.list_role_policies(RoleName=name)["PolicyNames"]},
            "tags": iam.list_role_tags(RoleName=name)["Tags"],
        }
    buckets = {}
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        buckets[name] = {
            "versioning": s3.get_bucket_versioning(Bucket=name).get("Status"),
            "tags": s3.get_bucket_tagging(Bucket=name)["TagSet"],
            "keys": sorted(v["Key"] + v["VersionId"] for v in s3.list_object_versions(Bucket=name).get("Versions", [])),
            "policy": s3.get_bucket_policy(Bucket=name)["Policy"],
        }
    secrets = {s["Name"]: (s["ARN"], sm.get_secret_value(SecretId=s["ARN"])["VersionId"])
               for s in sm.list_secrets()["SecretList"]}
    groups = {g["logGroupName"]: g.get("retentionInDays") for g in logs.describe_log_groups()["logGroups"]}
    apps = sorted(a["id"] for a in emr.list_applications()["applications"] if a["state"] != "TERMINATED")
    return {"roles": roles, "buckets": buckets, "secrets": secrets, "groups": groups, "apps": apps}


def managed_leftovers(moto_url: str) -> list[str]:
    """Every resource still carrying governed-ft:managed=true, per service and through the tagging API."""
    leftovers = [m["ResourceARN"] for m in client(moto_url, "resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": MANAGED_TAG, "Values": ["true"]}])["ResourceTagMappingList"]]
    iam = client(moto_url, "iam")
    for role in iam.list_roles()["Roles"]:
        if any(t["Key"] == MANAGED_TAG for t in iam.list_role_tags(RoleName=role["RoleName"])["Tags"]):
            leftovers.append(role["Arn"])
    emr = client(moto_url, "emr-serverless")
    for app in emr.list_applications()["applications"]:
        if app["state"] != "TERMINATED" and MANAGED_TAG in emr.get_application(applicationId=app["id"])["application"].get("tags", {}):
            leftovers.append(app["arn"])
    sm = client(moto_url, "secretsmanager")
    for secret in sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]:
        if any(t["Key"] == MANAGED_TAG for t in secret.get("Tags", [])):
            leftovers.append(secret["ARN"])
    s3 = client(moto_url, "s3")
    for bucket in s3.list_buckets()["Buckets"]:
        tags = s3.get_bucket_tagging(Bucket=bucket["Name"])["TagSet"]
        if any(t["Key"] == MANAGED_TAG for t in tags):
            leftovers.append(f"arn:aws:s3:::{bucket['Name']}")
    logs = client(moto_url, "logs")
    for group in logs.describe_log_groups()["logGroups"]:
        if MANAGED_TAG in logs.list_tags_for_resource(resourceArn=group["logGroupArn"]).get("tags", {}):
            leftovers.append(group["logGroupArn"])
    return sorted(set(leftovers))


def test_offline_plan_prints_every_resource_and_policy_without_calling_aws(tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**{k: None for k in CREDENTIAL_VARIABLES}, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    result = run(dead, "plan", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["offline"] is True and report["account_id"] == policies.ACCOUNT_PLACEHOLDER
    assert set(actions(report).values()) == {"create"}
    kinds = [r["kind"] for r in report["resources"]]
    assert kinds.count("secret") == 4 and kinds.count("iam-role") == 3 and kinds.count("log-group") == 2
    assert kinds.count("s3-bucket") == 2 and kinds.count("emr-serverless-application") == 1
    cfg = StackConfig(name=STACK, region=REGION)
    printed = json.dumps(report)
    for document in policies.all_documents(cfg).values():
        assert json.dumps(document, sort_keys=True)[1:-1] in json.dumps(json.loads(printed), sort_keys=True)
    orchestrator = report["orchestrator_policy"]
    assert orchestrator["name"] == f"{STACK}-orchestrator"
    assert orchestrator["arn"] == f"arn:aws:iam::{policies.ACCOUNT_PLACEHOLDER}:policy/{STACK}-orchestrator"
    assert orchestrator["document"] == policies.orchestrator_policy(cfg)
    assert kinds.count("iam-policy") == 1
    application = next(r for r in report["resources"] if r["kind"] == "emr-serverless-application")
    assert application["spec"]["releaseLabel"] == EMR_RELEASE_LABEL
    assert application["spec"]["autoStopConfiguration"]["enabled"] is True
    human = run(dead, "plan", env=env)
    assert human.exit_code == 0 and "offline" in human.stdout and '"sts:ExternalId"' in human.stdout


def test_apply_twice_equals_once_and_plan_then_reports_no_changes(account: str) -> None:
    first = run_json(account, "apply")
    assert first["changed"] and set(actions(first).values()) == {"create"}
    after_first = snapshot(account)
    assert set(after_first["roles"]) == {f"{STACK}-uc-storage", f"{STACK}-emr-runtime", f"{STACK}-sagemaker-execution"}
    assert set(after_first["buckets"]) == {DATA_BUCKET, CODE_BUCKET}
    assert after_first["buckets"][DATA_BUCKET]["versioning"] == "Enabled"
    assert after_first["groups"] == {f"/aws/emr-serverless/{STACK}": 30, "/aws/sagemaker/TrainingJobs": 30}

    second = run(account, "apply")
    assert second.exit_code == 0 and "no changes" in second.stdout
    again = run_json(account, "apply")
    assert not again["changed"] and set(actions(again).values()) == {"no-change"}
    assert snapshot(account) == after_first

    plan = run_json(account, "plan", "--against-account")
    assert not plan["changed"] and set(actions(plan).values()) == {"no-change"} and plan["account_id"] == ACCOUNT


def test_applied_state_matches_the_generated_policies(account: str) -> None:
    run_json(account, "apply")
    cfg = StackConfig(name=STACK, region=REGION, account_id=ACCOUNT)
    iam = client(account, "iam")
    for role in policies.roles(cfg):
        got = iam.get_role(RoleName=role.name)["Role"]
        assert policies.normalise(got["AssumeRolePolicyDocument"]) == policies.normalise(role.trust)
        document = iam.get_role_policy(RoleName=role.name, PolicyName=cfg.permissions_policy_name)["PolicyDocument"]
        assert policies.normalise(document) == policies.normalise(role.permissions)
        assert {t["Key"]: t["Value"] for t in got["Tags"]} == {MANAGED_TAG: "true", STACK_TAG: STACK}
    s3 = client(account, "s3")
    assert s3.get_public_access_block(Bucket=DATA_BUCKET)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    rules = s3.get_bucket_encryption(Bucket=DATA_BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=DATA_BUCKET)["Contents"]} == {"raw/", "curated/", "ml/"}
    sm = client(account, "secretsmanager")
    for name in ("ingest", "preprocess", "train", "registrar"):
        assert json.loads(sm.get_secret_value(SecretId=f"{STACK}/{name}")["SecretString"]) == {
            "client_id": "", "client_secret": ""}
    arn = f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-orchestrator"
    managed = iam.get_policy(PolicyArn=arn)["Policy"]
    version = iam.get_policy_version(PolicyArn=arn, VersionId=managed["DefaultVersionId"])["PolicyVersion"]
    assert policies.normalise(version["Document"]) == policies.normalise(policies.orchestrator_policy(cfg))
    assert {t["Key"]: t["Value"] for t in iam.list_policy_tags(PolicyArn=arn)["Tags"]} == {
        MANAGED_TAG: "true", STACK_TAG: STACK}
    emr = client(account, "emr-serverless")
    [app] = emr.list_applications()["applications"]
    detail = emr.get_application(applicationId=app["id"])["application"]
    assert detail["releaseLabel"] == EMR_RELEASE_LABEL and detail["autoStartConfiguration"] == {"enabled": True}
    assert detail["maximumCapacity"] == {"cpu": "16 vCPU", "memory": "64 GB", "disk": "200 GB"}


def test_drift_is_reported_and_repaired(account: str) -> None:
    run_json(account, "apply")
    iam = client(account, "iam")
    role = f"{STACK}-emr-runtime"
    iam.put_role_policy(RoleName=role, PolicyName="hand-made", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    iam.put_role_policy(RoleName=role, PolicyName=f"{STACK}-permissions", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                "Resource": f"arn:aws:s3:::{DATA_BUCKET}/*"}]}))
    client(account, "logs").put_retention_policy(logGroupName=f"/aws/emr-serverless/{STACK}", retentionInDays=1)
    plan = run_json(account, "plan", "--against-account")
    drifted = {(r["kind"], r["name"]): r["details"] for r in plan["resources"] if r["action"] == "update"}
    assert drifted == {("iam-role", role): [f"inline policy {STACK}-permissions", "remove inline policy hand-made"],
                       ("log-group", f"/aws/emr-serverless/{STACK}"): ["retention"]}
    run_json(account, "apply")
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == [f"{STACK}-permissions"]
    assert not run_json(account, "plan", "--against-account")["changed"]


def test_apply_never_overwrites_nor_prints_an_existing_secret(account: str) -> None:
    sm = client(account, "secretsmanager")
    value = json.dumps({"client_id": "00000000-0000-4000-8000-00000000train", "client_secret": PLANTED})
    arn = sm.create_secret(Name=f"{STACK}/train", SecretString=value)["ARN"]
    outputs = [run(account, "apply"), run(account, "apply", "--json"), run(account, "plan", "--against-account"),
               run(account, "plan", "--against-account", "--json")]
    assert all(r.exit_code == 0 for r in outputs)
    report = json.loads(outputs[1].stdout)
    assert actions(report)[("secret", f"{STACK}/train")] == "adopt"
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == value
    assert sm.describe_secret(SecretId=arn).get("Tags", []) == []
    outputs.append(run(account, "destroy", "--yes", "--force-delete-secrets", "--force-empty-buckets"))
    assert outputs[-1].exit_code == 0
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == value  # not ours: destroy leaves it
    for result in outputs:
        assert PLANTED not in result.stdout and PLANTED not in result.stderr


def test_destroy_leaves_no_resource_tagged_managed(account: str) -> None:
    run_json(account, "apply")
    iam = client(account, "iam")
    iam.create_user(UserName="dagster-deployment")  # the identity the deployment runs as, holding the policy
    iam.attach_user_policy(UserName="dagster-deployment", PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-orchestrator")
    s3 = client(account, "s3")
    s3.delete_bucket_policy(Bucket=DATA_BUCKET)  # moto applies Deny statements to everyone; AWS would not
    s3.put_object(Bucket=DATA_BUCKET, Key="raw/risk_factors/x.json", Body=b"{}")
    kept = run_json(account, "destroy", "--yes", "--force-delete-secrets")
    assert actions(kept)[("s3-bucket", DATA_BUCKET)] == "keep"
    assert actions(kept)[("s3-bucket", CODE_BUCKET)] == "delete"
    assert managed_leftovers(account) == [f"arn:aws:s3:::{DATA_BUCKET}"]
    removed = run_json(account, "destroy", "--yes", "--force-delete-secrets", "--force-empty-buckets")
    assert actions(removed) == {("s3-bucket", DATA_BUCKET): "delete"}
    assert managed_leftovers(account) == []
    assert kept["resources"][0]["kind"] == "emr-serverless-application"
    order = [r["kind"] for r in kept["resources"]]
    assert order == sorted(order, key=["emr-serverless-application", "iam-role", "iam-policy", "log-group", "secret",
                                       "s3-bucket"].index)
    [policy] = [r for r in kept["resources"] if r["kind"] == "iam-policy"]
    assert policy["name"] == f"{STACK}-orchestrator" and policy["details"] == ["detached from user dagster-deployment"]
    assert not iam.list_attached_user_policies(UserName="dagster-deployment")["AttachedPolicies"]


def test_destroy_with_a_recovery_window_then_apply_restores_the_secrets(account: str) -> None:
    run_json(account, "apply")
    report = run_json(account, "destroy", "--yes", "--recovery-window-days", "7")
    secrets = [r for r in report["resources"] if r["kind"] == "secret"]
    assert len(secrets) == 4 and all("7 days" in r["details"][0] for r in secrets)
    sm = client(account, "secretsmanager")
    assert sm.describe_secret(SecretId=f"{STACK}/ingest").get("DeletedDate") is not None
    again = run_json(account, "apply")
    assert actions(again)[("secret", f"{STACK}/ingest")] == "update"
    assert sm.describe_secret(SecretId=f"{STACK}/ingest").get("DeletedDate") is None
    assert not run_json(account, "plan", "--against-account")["changed"]


def test_missing_credentials_fail_with_one_readable_line(account: str, tmp_path) -> None:
    (tmp_path / "config").write_text("")
    env = {**{k: None for k in CREDENTIAL_VARIABLES}, "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "config"), "AWS_EC2_METADATA_DISABLED": "true"}
    for command in (["apply"], ["plan", "--against-account"], ["destroy", "--yes"]):
        result = run(account, *command, env=env)
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no AWS credentials found")
        assert "Traceback" not in result.output


def test_a_bucket_not_created_by_the_stack_is_a_readable_collision(account: str) -> None:
    client(account, "s3").create_bucket(Bucket=DATA_BUCKET)
    result = run(account, "apply")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: bucket {DATA_BUCKET} already exists in account {ACCOUNT} but is not tagged "
        f"{STACK_TAG}={STACK}, so this stack did not create it; pick another name with --data-bucket or "
        "--code-bucket, or remove that bucket")
    assert client(account, "iam").list_roles()["Roles"] == []


def test_a_role_not_created_by_the_stack_is_a_readable_collision(account: str) -> None:
    client(account, "iam").create_role(RoleName=f"{STACK}-emr-runtime", AssumeRolePolicyDocument="{}")
    result = run(account, "apply")
    assert result.exit_code == 1 and f"IAM role {STACK}-emr-runtime already exists" in result.stderr


def test_a_region_without_emr_serverless_is_refused_offline(account: str) -> None:
    result = run(account, "plan", "--region", "us-gov-east-9")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: EMR Serverless is not available in region 'us-gov-east-9'")


def test_access_denied_names_the_action_and_the_caller() -> None:
    cfg = StackConfig(name=STACK, region=REGION, account_id=ACCOUNT)
    session = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name=REGION)
    provisioner = AwsProvisioner(cfg, session=session)
    provisioner.caller_arn = "arn:aws:iam::123456789012:user/deployer"
    iam, s3 = provisioner.client("iam"), provisioner.client("s3")
    with Stubber(iam) as iam_stub, Stubber(s3) as s3_stub:
        iam_stub.add_client_error("get_role", "AccessDenied", http_status_code=403, service_message=(
            "User: arn:aws:iam::123456789012:user/deployer is not authorized to perform: iam:GetRole on resource: "
            f"role {STACK}-emr-runtime because no identity-based policy allows the iam:GetRole action"))
        iam_stub.add_client_error("get_role", "AccessDenied", http_status_code=403, service_message="Access denied")
        s3_stub.add_client_error("put_public_access_block", "AccessDenied", http_status_code=403)
        with pytest.raises(ProvisionError) as first, provisioner._aws_errors():
            provisioner._observe_role(Resource("iam-role", f"{STACK}-emr-runtime", {}))
        with pytest.raises(ProvisionError) as second, provisioner._aws_errors():
            provisioner._observe_role(Resource("iam-role", f"{STACK}-emr-runtime", {}))
        with pytest.raises(ProvisionError) as third, provisioner._aws_errors():
            s3.put_public_access_block(Bucket=DATA_BUCKET, PublicAccessBlockConfiguration={})
    assert str(first.value) == (f"AWS denied iam:GetRole on role {STACK}-emr-runtime to arn:aws:iam::123456789012:user/deployer; "
                                "grant that action to the caller or run as a principal that has it")
    assert str(second.value).startswith(f"AWS denied iam:GetRole on {STACK}-emr-runtime to arn:aws:iam::")
    assert str(third.value).startswith(f"AWS denied s3:PutBucketPublicAccessBlock on {DATA_BUCKET} to ")
