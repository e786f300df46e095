"""`governed-ft aws plan|apply|destroy` and `governed-ft catalog plan|apply|destroy`: provision the aws deployment."""

from __future__ import annotations

import functools
import json
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

from governed_ft_dagster.catalog.base import CatalogError
from governed_ft_dagster.governance import PRODUCTION_MODEL_NAME, ModelNameError, check_model_name
from governed_ft_dagster.provision import ProvisionError
from governed_ft_dagster.settings import DEFAULT_STACK

if TYPE_CHECKING:
    from governed_ft_dagster.provision.aws import AwsProvisioner, Report
    from governed_ft_dagster.provision.catalog import CatalogProvisioner, CatalogReport
    from governed_ft_dagster.provision.policies import StackConfig

_VERB = {"create": "create", "update": "update", "no-change": "ok", "adopt": "adopt", "delete": "delete",
         "keep": "keep"}
_DONE = {"create": "created", "update": "updated", "no-change": "ok", "adopt": "adopted", "delete": "deleted",
         "keep": "kept"}


def _clean(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show provisioning failures as one line on stderr with exit code 1, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ProvisionError, CatalogError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _stack_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that name the stack; every command of both groups takes them."""
    options = [
        click.option("--stack", "stack_name", envvar="GOVERNED_FT_STACK", default=DEFAULT_STACK, show_default=True,
                     help="Stack name: prefix of every resource name and value of the governed-ft:stack tag."),
        click.option("--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], help="AWS region (or AWS_REGION)."),
        click.option("--data-bucket", default="", help="Governed bucket name [default: <stack>-data-<account>-<region>]."),
        click.option("--code-bucket", default="", help="Code and scratch bucket [default: <stack>-code-<account>-<region>]."),
        click.option("--endpoint-url", envvar="GOVERNED_FT_AWS_ENDPOINT_URL", hidden=True,
                     help="AWS endpoint for every service (tests only)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _aws_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--image-repository", default="", help="ECR repository of the training image [default: <stack>-train]."),
        click.option("--uc-external-id", envvar="GOVERNED_FT_UC_EXTERNAL_ID", default="0000", show_default=True,
                     help="External id of the Databricks storage credential (`governed-ft catalog apply` prints it)."),
        click.option("--log-retention-days", default=30, show_default=True, type=int,
                     help="Retention of the jobs' CloudWatch log groups."),
        click.option("--emr-subnet-id", "emr_subnet_ids", multiple=True,
                     help="Private subnet for EMR Serverless (repeat); needed for jobs to reach the Databricks workspace."),
        click.option("--emr-security-group-id", "emr_security_group_ids", multiple=True,
                     help="Security group for EMR Serverless (repeat)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config(params: dict[str, Any], account_id: str | None = None) -> "StackConfig":
    """The StackConfig the options describe."""
    from governed_ft_dagster.provision.policies import ACCOUNT_PLACEHOLDER, StackConfig

    if not params.get("region"):
        raise ProvisionError("no AWS region given; pass --region or set AWS_REGION")
    extra: dict[str, Any] = {}
    if "uc_external_id" in params:
        extra = {
            "image_repository_name": params["image_repository"],
            "uc_external_id": params["uc_external_id"],
            "log_retention_days": params["log_retention_days"],
            "emr_subnet_ids": tuple(params["emr_subnet_ids"]),
            "emr_security_group_ids": tuple(params["emr_security_group_ids"]),
        }
    return StackConfig(
        name=params["stack_name"],
        region=params["region"],
        account_id=account_id or ACCOUNT_PLACEHOLDER,
        data_bucket_name=params["data_bucket"],
        code_bucket_name=params["code_bucket"],
        **extra,
    )


def _provisioner(params: dict[str, Any], account_id: str | None = None) -> "AwsProvisioner":
    from governed_ft_dagster.provision.aws import AwsProvisioner

    return AwsProvisioner(_config(params, account_id), endpoint_url=params.get("endpoint_url"))


def _print_report(report: "Report", *, done: bool, with_documents: bool = False) -> None:
    verbs = _DONE if done else _VERB
    where = "offline: the account was not consulted; add --against-account to diff" if report.offline else "account"
    click.echo(f"{report.command} of stack {report.stack} in {report.region}, account {report.account_id} ({where})")
    for change in report.changes:
        details = f"  ({'; '.join(change.details)})" if change.details and not report.offline else ""
        click.echo(f"  {verbs[change.action]:<8} {change.kind:<27} {change.name}{details}")
    counts: dict[str, int] = {}
    for change in report.changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    summary = ", ".join(f"{n} {verbs[a]}" for a, n in counts.items())
    click.echo(f"summary: {summary or 'nothing found'}" + ("" if report.changed else "; no changes"))
    if with_documents:
        click.echo("policy documents:")
        for change in report.changes:
            spec = change.spec or {}
            for label, document in _documents(change.kind, change.name, spec):
                click.echo(f"--- {label}")
                click.echo(json.dumps(document, indent=2))


def _documents(kind: str, name: str, spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if kind == "iam-role":
        return [(f"{name} trust", spec["trust"])] + [
            (f"{name} inline policy {policy}", document) for policy, document in spec["inline_policies"].items()]
    if kind == "s3-bucket-policy":
        return [(f"{name} bucket policy", spec["policy"])]
    if kind == "iam-policy":
        return [(f"{name} managed policy ({spec['arn']}; attach it to the Dagster deployment's identity)",
                 spec["document"])]
    return []


# ---- aws -----------------------------------------------------------------------------------------------------


@click.group("aws")
def aws() -> None:
    """Provision the AWS side: governed bucket, code bucket, secrets, roles, log groups, EMR Serverless."""


@aws.command("plan")
@_stack_options
@_aws_options
@click.option("--against-account", is_flag=True, help="Diff against the account (read-only AWS calls).")
@click.option("--account-id", default="", help="Account id to put into ARNs of an offline plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@_clean
def aws_plan(against_account: bool, account_id: str, as_json: bool, **params: Any) -> None:
    """Show every resource and policy document; offline unless --against-account."""
    from governed_ft_dagster.provision.aws import offline_plan

    if against_account:
        report = _provisioner(params, account_id or None).plan()
    else:
        report = offline_plan(_config(params, account_id or None))
    if as_json:
        out = report.as_dict()
        [policy] = [c for c in report.changes if c.kind == "iam-policy"]
        out["orchestrator_policy"] = {"name": policy.name, "arn": (policy.spec or {}).get("arn"),
                                      "attach_to": "the IAM role or user the Dagster deployment runs as",
                                      "document": (policy.spec or {}).get("document")}
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        _print_report(report, done=False, with_documents=not against_account)


@aws.command("apply")
@_stack_options
@_aws_options
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@_clean
def aws_apply(as_json: bool, **params: Any) -> None:
    """Create or update the stack; idempotent, never overwrites a secret's value."""
    report = _provisioner(params).apply()
    if as_json:
        click.echo(json.dumps(report.as_dict(with_spec=False), indent=2, sort_keys=True))
    else:
        _print_report(report, done=True)


@aws.command("destroy")
@_stack_options
@_aws_options
@click.option("--force-empty-buckets", is_flag=True, help="Delete the buckets' objects (all versions) too.")
@click.option("--recovery-window-days", default=7, show_default=True, type=int,
              help="Days Secrets Manager keeps deleted secrets restorable (7-30).")
@click.option("--force-delete-secrets", is_flag=True, help="Delete secrets at once, without a recovery window.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@_clean
def aws_destroy(force_empty_buckets: bool, recovery_window_days: int, force_delete_secrets: bool, yes: bool,
                as_json: bool, **params: Any) -> None:
    """Delete everything tagged with this stack, in dependency order."""
    if not yes:
        click.confirm(f"delete every resource tagged governed-ft:stack={params['stack_name']} in {params['region']}?",
                      abort=True)
    report = _provisioner(params).destroy(force_empty_buckets=force_empty_buckets,
                                          recovery_window_days=recovery_window_days,
                                          force_delete_secrets=force_delete_secrets)
    if as_json:
        click.echo(json.dumps(report.as_dict(with_spec=False), indent=2, sort_keys=True))
    else:
        _print_report(report, done=True)


# ---- catalog -------------------------------------------------------------------------------------------------


def _catalog_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--host", envvar="DATABRICKS_HOST", help="Workspace URL (or DATABRICKS_HOST)."),
        click.option("--profile", envvar="DATABRICKS_CONFIG_PROFILE", default=None,
                     help="~/.databrickscfg profile; otherwise the SDK's usual environment variables."),
        click.option("--catalog", "catalog_name", envvar="GOVERNED_FT_CATALOG", default="governed_ft",
                     show_default=True, help="Catalog holding the raw, curated and ml schemas."),
        click.option("--storage-role-arn", default="",
                     help="IAM role of the storage credential [default: the stack's <stack>-uc-storage role]."),
        click.option("--model-name", envvar="GOVERNED_FT_MODEL_NAME", default=PRODUCTION_MODEL_NAME,
                     show_default=True, help="Registered model the adapters become versions of."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _catalog_provisioner(params: dict[str, Any]) -> "CatalogProvisioner":
    from governed_ft_dagster.provision.catalog import CatalogProvisioner, workspace_client

    try:
        model_name = check_model_name(params["model_name"])
    except ModelNameError as exc:
        raise click.BadParameter(str(exc), param_hint="--model-name") from None
    provisioner = _provisioner(params)
    cfg = provisioner.connect()
    workspace = workspace_client(params["host"], params["profile"])
    return CatalogProvisioner(cfg, workspace, provisioner, catalog=params["catalog_name"],
                              storage_role_arn=params["storage_role_arn"] or None,
                              model_name=model_name)


def _print_catalog(report: "CatalogReport", as_json: bool, *, done: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    verbs = _DONE if done else _VERB
    click.echo(f"{report.command} of catalog {report.catalog} (stack {report.stack}) at {report.host}")
    for change in report.changes:
        details = f"  ({'; '.join(change.details)})" if change.details else ""
        click.echo(f"  {verbs[change.action]:<8} {change.kind:<20} {change.name}{details}")
    for line in report.grant_lines():
        click.echo(f"  {line}")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo("no changes" if not report.changed else "summary: " + report.summary())


@click.group("catalog")
def catalog_group() -> None:
    """Provision Unity Catalog: storage credential, external locations, catalog, schemas, principals, grants."""


@catalog_group.command("plan")
@_stack_options
@_catalog_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@_clean
def catalog_plan(as_json: bool, **params: Any) -> None:
    """Show what apply would create and the exact grant diff (read-only)."""
    _print_catalog(_catalog_provisioner(params).plan(), as_json, done=False)


@catalog_group.command("apply")
@_stack_options
@_catalog_options
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@_clean
def catalog_apply(as_json: bool, **params: Any) -> None:
    """Create what is missing and make the grants exactly the governance table; idempotent."""
    _print_catalog(_catalog_provisioner(params).apply(), as_json, done=True)


@catalog_group.command("destroy")
@_stack_options
@_catalog_options
@click.option("--force", is_flag=True, help="Delete schemas even when they still hold tables or models.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@_clean
def catalog_destroy(force: bool, yes: bool, as_json: bool, **params: Any) -> None:
    """Revoke the grants, delete schemas, locations, credential and the service principals this stack created."""
    if not yes:
        click.confirm(f"remove the Unity Catalog objects of stack {params['stack_name']}?", abort=True)
    _print_catalog(_catalog_provisioner(params).destroy(force=force), as_json, done=True)


def _code_prefix(params: dict[str, Any], offline: bool = False) -> tuple[str, str]:
    """The code prefix given, or s3://<code bucket>/code/ of the stack (the account from STS), and why the bucket
    cannot be consulted ("" when it can). Offline (a dry run), a failure to reach AWS leaves the account a
    placeholder instead of ending the command."""
    from governed_ft_dagster.provision.aws import aws_errors, check_region
    from governed_ft_dagster.provision.policies import CODE_PREFIX

    if not params.get("region"):
        raise ProvisionError("no AWS region given; pass --region or set AWS_REGION")
    check_region(params["region"])
    if params.get("code_prefix"):
        return params["code_prefix"], ""
    if params.get("code_bucket"):
        return f"s3://{_config(params).code_bucket}/{CODE_PREFIX}", ""
    try:
        with aws_errors():
            import boto3

            account_id = boto3.session.Session().client(
                "sts", region_name=params["region"], endpoint_url=params.get("endpoint_url"),
                config=_quick()).get_caller_identity()["Account"]
    except ProvisionError as exc:
        if not offline:
            raise
        return f"s3://{_config(params).code_bucket}/{CODE_PREFIX}", str(exc)
    return f"s3://{_config(params, account_id).code_bucket}/{CODE_PREFIX}", ""


def _quick() -> Any:
    """Fail in seconds, not minutes, where the endpoint does not answer."""
    from botocore.config import Config

    return Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


def _s3(params: dict[str, Any]) -> Any:
    import boto3

    return boto3.session.Session().client("s3", region_name=params.get("region"),
                                          endpoint_url=params.get("endpoint_url"), config=_quick())


def _compare(prefix: Any, artifacts: list, dry_run: bool, unreachable: str) -> tuple[list[str], str]:
    """What each artifact needs ('present', 'upload', 'uploaded', or 'not-compared' when a dry run cannot reach the
    bucket), and why the bucket could not be consulted."""
    from governed_ft_dagster.provision.aws import aws_errors
    from governed_ft_dagster.provision.staging import BucketUnreachable, CodeAccessDenied

    actions: list[str] = []
    for artifact in artifacts:
        if unreachable:
            actions.append("not-compared")
            continue
        try:
            with aws_errors():
                actions.append(prefix.upload(artifact, dry_run))
        except (BucketUnreachable, CodeAccessDenied, ProvisionError) as exc:
            if not dry_run:
                raise ProvisionError(str(exc)) from None
            unreachable = str(exc)
            actions.append("not-compared")
    return actions, unreachable


def _jar_files(names: tuple[str, ...]) -> dict[str, "Path"]:
    """Each jar by name from the jar cache of the state folder or the jar mirror."""
    from pathlib import Path

    from governed_ft_dagster.settings import load_settings

    settings = load_settings()
    roots = [Path(settings.home) / "jars"] + ([Path(settings.jar_mirror)] if settings.jar_mirror else [])
    found: dict[str, Path] = {}
    for name in names:
        hits = [hit for root in roots for hit in sorted(root.glob(f"*/{name}"))]
        if hits:
            found[name] = hits[0]
    return found


def _staged(prefix: Any, uri: str) -> bool:
    from governed_ft_dagster.provision.aws import aws_errors
    from governed_ft_dagster.provision.staging import BucketUnreachable, CodeAccessDenied

    try:
        with aws_errors():
            return prefix.exists(uri)
    except (BucketUnreachable, CodeAccessDenied) as exc:
        raise ProvisionError(str(exc)) from None


def _provider_jar() -> "Path":
    """The S3A credentials provider, built from source in the state folder against the release's Hadoop and SDK."""
    from governed_ft_dagster.settings import load_settings
    from governed_ft_dagster.stack import jars, spark_runtime
    from governed_ft_dagster.stack.errors import StackError

    settings = load_settings()
    try:
        jars.fetch_groups(settings.home, ("hadoop", "s3a"), mirror=settings.jar_mirror)
        return spark_runtime.credentials_provider_jar(settings.home)
    except StackError as exc:
        raise ProvisionError(str(exc)) from None


def staging_jobs() -> tuple[str, ...]:
    from governed_ft_dagster.provision.staging import JOBS

    return JOBS


_MODEL_OPTIONS = [
    click.option("--model-id", default="mistralai/Ministral-3-3B-Instruct-2512", show_default=True,
                 help="Hub id of the base model."),
    click.option("--model-revision", envvar="GOVERNED_FT_MODEL_REVISION", default="",
                 help="Pinned hub commit of the base model staged by `aws stage-model`."),
]


@aws.command("stage")
@_stack_options
@click.option("--code-prefix", envvar="GOVERNED_FT_CODE_PREFIX", default="",
              help="s3:// prefix the jobs run from [default: s3://<code bucket>/code/].")
@click.option("--tokenizer-dir", envvar="GOVERNED_FT_TOKENIZER_DIR", default=None,
              help="Local folder with the base model's tokenizer files (staged for the Spark job; needed with emr).")
@click.option("--only", type=click.Choice(staging_jobs()), default=None,
              help="Stage what one job runs from (e.g. sagemaker after a change to the training code).")
@click.option("--cache-dir", envvar="GOVERNED_FT_BUILD_CACHE", default="~/.cache/governed-ft", show_default=True,
              help="Where the EMR Python environment is built, once per recipe.")
@click.option("--dry-run", is_flag=True, help="Build and hash everything, upload nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print artifacts, hashes and job parameters as JSON.")
@_MODEL_OPTIONS[0]
@_MODEL_OPTIONS[1]
@_clean
def aws_stage(tokenizer_dir: str | None, only: str | None, cache_dir: str, dry_run: bool, as_json: bool, model_id: str,
              model_revision: str, **params: Any) -> None:
    """Upload, content-addressed, everything the EMR and SageMaker jobs run from; a second run uploads nothing."""
    import tempfile
    from pathlib import Path

    from governed_ft_dagster.job_code import SCRIPTS_PACKAGE, TRAIN_SCRIPT
    from governed_ft_dagster.provision import staging
    from governed_ft_dagster.defs.resources.spark_jobs import DELTA_CONF
    from governed_ft_dagster.stack import versions

    code_prefix, unreachable = _code_prefix(params, offline=dry_run)
    prefix = staging.CodePrefix(_s3(params), code_prefix)
    log = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    try:
        with tempfile.TemporaryDirectory(prefix="governed-ft-stage-") as tmp:
            artifacts = staging.plan(code_prefix, Path(tmp), tokenizer_dir=Path(tokenizer_dir) if tokenizer_dir else None,
                                     jar_files=_jar_files(versions.EMR_JARS),
                                     provider_jar=_provider_jar() if only in (None, "emr") else None,
                                     cache_dir=Path(cache_dir).expanduser(), log=log,
                                     jobs=[only] if only else staging.JOBS)
            actions, unreachable = _compare(prefix, artifacts, dry_run, unreachable)
    except (staging.NotStaged, RuntimeError, ValueError, OSError) as exc:
        raise ProvisionError(str(exc)) from None
    model = None
    if model_revision and not unreachable:
        uri = staging.model_uri(code_prefix, model_id, model_revision)
        if not _staged(prefix, staging.model_complete_uri(uri)):
            raise ProvisionError(f"the base model {model_id}@{model_revision} is not staged at {uri}; run "
                                 f"`governed-ft aws stage-model --model-id {model_id} --revision {model_revision}` "
                                 f"on a machine that reaches the hub")
        model = staging.Artifact("base model weights", staging.KIND_MODEL, model_id, uri, "", 0, "", model_revision)
    parameters = staging.job_parameters(artifacts, DELTA_CONF, model=model,
                                        entry_program=f"{SCRIPTS_PACKAGE}/{TRAIN_SCRIPT}")
    if as_json:
        click.echo(json.dumps({
            "code_prefix": code_prefix, "dry_run": dry_run, "compared_with_bucket": not unreachable,
            **({"not_compared_because": unreachable} if unreachable else {}),
            "artifacts": [{**a.as_dict(), "action": action} for a, action in zip(artifacts, actions)]
            + ([{**model.as_dict(), "action": "present"}] if model else []),
            "job_parameters": parameters,
        }, indent=2))
        return
    for artifact, action in zip(artifacts, actions):
        click.echo(f"  {action:<9} {artifact.kind:<17} {artifact.uri}  sha256:{artifact.sha256[:16]}")
    if model:
        click.echo(f"  {'present':<9} {model.kind:<17} {model.uri}")
    if unreachable:
        click.echo(f"summary: {len(artifacts)} built and hashed; not compared with the bucket because {unreachable}")
        return
    moved = sum(action in ("upload", "uploaded") for action in actions)
    click.echo(f"summary: {moved} {'to upload' if dry_run else 'uploaded'}, "
               f"{actions.count('present')} already staged under {code_prefix}")


@aws.command("stage-model")
@_stack_options
@click.option("--code-prefix", envvar="GOVERNED_FT_CODE_PREFIX", default="",
              help="s3:// prefix the jobs run from [default: s3://<code bucket>/code/].")
@click.option("--model-id", default="mistralai/Ministral-3-3B-Instruct-2512", show_default=True,
              help="Hub id of the base model.")
@click.option("--revision", required=True, help="Hub commit (40 hex digits) to copy; a branch or tag is refused.")
@click.option("--from-dir", default="", help="A local folder with exactly that revision's files (a snapshot copied "
              "elsewhere, or a test model), staged instead of downloading from the hub.")
@click.option("--dry-run", is_flag=True, help="Hash and plan, upload nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the staged channel as JSON.")
@_clean
def aws_stage_model(model_id: str, revision: str, from_dir: str, dry_run: bool, as_json: bool, **params: Any) -> None:
    """Copy the base model weights at a pinned revision from the hub to the code prefix (needs internet once)."""
    import re
    import shutil
    import tempfile
    from pathlib import Path

    from governed_ft_dagster.provision import staging
    from governed_ft_dagster.training.base_model import STAGED_MARKER

    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ProvisionError(f"--revision must be a hub commit (40 hex digits), not {revision!r}: a branch moves")
    code_prefix, unreachable = _code_prefix(params, offline=dry_run)
    prefix = staging.CodePrefix(_s3(params), code_prefix)
    with tempfile.TemporaryDirectory(prefix="governed-ft-model-") as tmp:
        folder = Path(from_dir) if from_dir else None
        if folder is None:
            from huggingface_hub import snapshot_download

            try:
                folder = Path(snapshot_download(model_id, revision=revision, local_dir=str(Path(tmp) / "download")))
            except Exception as exc:  # the hub client raises many types; the sentence names the fix either way
                raise ProvisionError(f"could not download {model_id}@{revision} from the model hub "
                                     f"({type(exc).__name__}); run this where the hub is reachable (with a token "
                                     "for gated models) or pass --from-dir") from None
        if not folder.is_dir():
            raise ProvisionError(f"--from-dir {folder} is not a folder")
        files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts
                 and p.name != STAGED_MARKER]
        if not any(p.relative_to(folder).as_posix() == "config.json" for p in files):
            raise ProvisionError(f"{folder} holds no config.json: not a model snapshot")
        clean = Path(tmp) / "snapshot"
        for path in files:
            target = clean / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        # The job reads which model and revision it trains from here, so the request needs no hub id.
        (clean / STAGED_MARKER).write_text(json.dumps({"id": model_id, "revision": revision}, sort_keys=True))
        artifact = staging.model_artifact(code_prefix, clean, model_id, revision)
        [action], unreachable = _compare(prefix, [artifact], dry_run, unreachable)
    if as_json:
        click.echo(json.dumps({**artifact.as_dict(), "action": action,
                               **({"not_compared_because": unreachable} if unreachable else {}),
                               "channel": staging.model_channel(artifact.uri)}, indent=2))
    else:
        click.echo(f"  {action:<9} {artifact.kind:<17} {artifact.uri}  sha256:{artifact.sha256[:16]}")
