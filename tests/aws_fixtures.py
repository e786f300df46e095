"""Local stand-ins for what cannot run here: moto in server mode and the recording fake Databricks workspace."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import requests
from moto.server import ThreadedMotoServer

from fake_databricks import FakeDatabricks
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import GRANTS, LINEAGE_WRITERS, external_access_grants
from governed_ft_dagster.provision.catalog import DATABRICKS_LOCATION_GRANTS, LINEAGE_PRIVILEGE
from governed_ft_dagster.defs.resources.catalog import DatabricksCatalogResource

BUCKET = "governed-lake"
REGION = "us-east-1"
CATALOG = "governed_ft"


@dataclass
class AwsWorld:
    """A moto server with the governed bucket and principals' secrets, and a fake workspace with the grants."""

    moto_url: str
    databricks: FakeDatabricks

    def boto(self, service: str):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def catalog_resource(self, **overrides) -> DatabricksCatalogResource:
        return DatabricksCatalogResource(**{
            "catalog": CATALOG, "host": self.databricks.url, "region": REGION, "storage_root": f"s3://{BUCKET}",
            "storage_region": REGION, "s3_endpoint_url": self.moto_url, "aws_endpoint_url": self.moto_url,
            "application_ids": {p.value: application_id(p) for p in Principal}, **overrides,
        })


def application_id(principal: Principal) -> str:
    return f"00000000-0000-4000-8000-{principal.value:0>12}"[:36]


def secret_value(principal: Principal) -> str:
    return f"dose-planted-secret-{principal.value}-5f1c"


def start_world(monkeypatch, moto_port: int) -> tuple[AwsWorld, ThreadedMotoServer]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    server.start()
    requests.post(f"http://127.0.0.1:{moto_port}/moto-api/reset", timeout=10).raise_for_status()
    fake = FakeDatabricks().start()
    world = AwsWorld(f"http://127.0.0.1:{moto_port}", fake)
    world.boto("s3").create_bucket(Bucket=BUCKET)
    secrets = world.boto("secretsmanager")
    for principal in Principal:
        fake.add_service_principal(application_id(principal), secret_value(principal))
        secrets.create_secret(Name=f"governed-ft/{principal.value}", SecretString=json.dumps(
            {"client_id": application_id(principal), "client_secret": secret_value(principal)}))
    for prefix, grants in DATABRICKS_LOCATION_GRANTS.items():
        fake.add_external_location(f"governed_{prefix}", f"s3://{BUCKET}/{prefix}")
        for principal, privileges in grants.items():
            fake.grant("external_location", f"governed_{prefix}", application_id(principal), *privileges)
    for principal in LINEAGE_WRITERS:
        fake.grant("metastore", fake.metastore_id, application_id(principal), LINEAGE_PRIVILEGE)
    for grant in (*GRANTS, *external_access_grants()):
        if grant.securable_type != "table":
            fake.grant(grant.securable_type, grant.full_name(CATALOG), application_id(grant.principal),
                       grant.privilege.sdk_name)
    return world, server


def install_mlflow(fake: FakeDatabricks, registry: Any, tracking_url: str | None, sdk_models_repo: bool) -> None:
    """The workspace's Files API, the registry's upload path and, given a tracking server URL, MLflow tracking."""
    from fake_files import FilesApi
    from fake_mlflow_tracking import install as install_tracking

    files = FilesApi(fake, lambda: registry.boto("s3")).install()
    files.mount("/Models/", registry.model_files)
    registry.sdk_models_repo = sdk_models_repo
    if tracking_url is not None:
        install_tracking(fake, tracking_url, files)


def start_registry_world(monkeypatch, moto_port: int, tracking_url: str | None = None, sdk_models_repo: bool = False):
    """start_world plus the MLflow Unity Catalog registry and the lineage APIs; also returns their states.

    Given the URL of an MLflow server, the workspace also serves MLflow tracking (tracking URI `databricks`)."""
    from fake_lineage import FakeLineageService
    from fake_mlflow_uc import install

    world, server = start_world(monkeypatch, moto_port)
    registry = install(world.databricks, storage_root=f"s3://{BUCKET}/ml/models", moto_url=world.moto_url)
    install_mlflow(world.databricks, registry, tracking_url, sdk_models_repo)
    service = FakeLineageService(page_size=50)
    service.install(world.databricks)
    world.databricks.add_route("GET", r"/api/2\.1/unity-catalog/models/(?P<full_name>[^/]+)/versions",
                               lambda fake, request, full_name: (200, {"model_versions": [
                                   {"catalog_name": CATALOG, "model_name": full_name, "version": int(v)}
                                   for v in registry.versions.get(full_name, {})]}))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", world.moto_url)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    return world, server, registry, service
# ---- moto's IAM evaluator, completed where AWS refuses and moto would not --------------------------------------


@dataclass(frozen=True)
class Decision:
    """One evaluation: allowed or not, and the statement that decided a refusal."""

    allowed: bool
    reason: str = ""


def glob_match(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM wildcards: * any run of characters, ? exactly one; everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.I) is not None


def _values(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, list[str]]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    actual = context.get(key.lower())
    if actual is None:
        return if_exists or base.startswith(("StringNot", "ArnNot"))
    wanted = _values(expected)
    if base in ("StringEquals", "ArnEquals"):
        return any(a in wanted for a in actual)
    if base in ("StringLike", "ArnLike"):
        return any(glob_match(w, a) for w in wanted for a in actual)
    if base == "StringNotEquals":
        return all(a not in wanted for a in actual)
    if base == "StringNotLike":
        return not any(glob_match(w, a) for w in wanted for a in actual)
    if base == "Bool":
        return any(a.lower() == w.lower() for w in wanted for a in actual)
    raise ValueError(f"condition operator {operator} is not evaluated by this stand-in")


def _principal_matches(element: Any, principals: list[str]) -> bool:
    if element == "*":
        return True
    if not isinstance(element, dict):
        return False
    named = _values(element.get("AWS", []))
    return "*" in named or any(glob_match(n, p) for n in named for p in principals)


def statement_applies(statement: dict[str, Any], action: str, resource: str, principals: list[str],
                      context: dict[str, list[str]]) -> bool:
    """Whether the statement covers this request: action, resource, principal and every condition."""
    if "NotAction" in statement:
        if any(glob_match(a, action, case=False) for a in _values(statement["NotAction"])):
            return False
    elif not any(glob_match(a, action, case=False) for a in _values(statement.get("Action", []))):
        return False
    if "NotResource" in statement:
        if any(glob_match(r, resource) for r in _values(statement["NotResource"])):
            return False
    elif "Resource" in statement and not any(glob_match(r, resource) for r in _values(statement["Resource"])):
        return False
    if "Principal" in statement and not _principal_matches(statement["Principal"], principals):
        return False
    return all(_condition_holds(op, key, expected, context)
               for op, block in (statement.get("Condition") or {}).items() for key, expected in block.items())


def evaluate(documents: list[dict[str, Any]], action: str, resource: str, principals: list[str],
             context: dict[str, list[str]]) -> str | None:
    """'deny' when a Deny applies, else 'allow' when an Allow applies, else None (implicit deny)."""
    verdict = None
    for document in documents:
        statements = document.get("Statement", [])
        for statement in statements if isinstance(statements, list) else [statements]:
            if statement_applies(statement, action, resource, principals, context):
                if statement.get("Effect") == "Deny":
                    return "deny"
                verdict = "allow"
    return verdict


def _documents(policies: list[Any]) -> list[dict[str, Any]]:
    from moto.iam.access_control import IAMPolicy

    return [IAMPolicy(p)._policy_json for p in policies]


def _resource_tags(account: str, region: str, arn: str) -> dict[str, str]:
    """The tags of the resource an ARN names, where a policy condition may ask for them (aws:ResourceTag/...)."""
    found = re.fullmatch(r"arn:aws:emr-serverless:[^:]+:[^:]+:/applications/([^/]+)", arn)
    if not found:
        return {}
    from moto.emrserverless.models import emrserverless_backends

    application = emrserverless_backends[account][region].applications.get(found.group(1))
    return dict(application.tags or {}) if application is not None else {}


# Roles a call passes to a service: AWS checks iam:PassRole on each, with iam:PassedToService (documented for
# StartJobRun and CreateTrainingJob); moto checks nothing of it.
PASSED_ROLES = {"emr-serverless:StartJobRun": ("executionRoleArn", "emr-serverless.amazonaws.com"),
                "sagemaker:CreateTrainingJob": ("RoleArn", "sagemaker.amazonaws.com")}
# Tags a Create request carries are checked as the service's tagging action on the new resource (SageMaker's
# "Provide permissions for tagging SageMaker AI resources").
TAG_ON_CREATE = {"sagemaker:CreateTrainingJob": ("Tags", "sagemaker:AddTags")}


def _checked_with(request: Any, action: str, target: str) -> list[tuple[str, str, dict[str, list[str]]]]:
    """The further (action, resource, context) checks AWS makes for this call beyond its own action."""
    if action not in PASSED_ROLES and action not in TAG_ON_CREATE:
        return []
    try:
        params = json.loads(request._body or b"{}")
    except ValueError:
        return []
    checks = []
    if action in PASSED_ROLES and params.get(PASSED_ROLES[action][0]):
        checks.append(("iam:PassRole", params[PASSED_ROLES[action][0]],
                       {"iam:passedtoservice": [PASSED_ROLES[action][1]]}))
    if action in TAG_ON_CREATE and params.get(TAG_ON_CREATE[action][0]):
        checks.append((TAG_ON_CREATE[action][1], target, {}))
    return checks


def _request_context(request: Any) -> dict[str, list[str]]:
    query = parse_qs(urlsplit(request._path).query, keep_blank_values=True)
    context = {"aws:securetransport": ["true"]}  # the loopback endpoint stands for AWS's TLS endpoint
    if request._action == "s3:ListBucket" and "prefix" in query:
        context["s3:prefix"] = query["prefix"][:1]
    external = request._data.get("ExternalId") if isinstance(request._data, dict) else None
    if external:
        context["sts:externalid"] = _values(external)[:1]
    return context


def _resource_arn(request: Any, account: str, resource: str) -> str:
    """moto hands "*" for services other than S3 and STS: the secret's, log group's, EMR Serverless application's or
    job run's, or training job's ARN, as AWS evaluates."""
    if resource != "*" or request._service not in ("secretsmanager", "logs", "emr-serverless", "sagemaker"):
        return resource
    if request._service == "emr-serverless":
        found = re.match(r"/applications/([^/?]+)(?:/jobruns/([^/?]+))?", urlsplit(request._path).path)
        if not found:
            return resource  # ListApplications, CreateApplication: no resource of their own
        arn = f"arn:aws:emr-serverless:{request._region}:{account}:/applications/{found.group(1)}"
        return f"{arn}/jobruns/{found.group(2)}" if found.group(2) else arn
    try:
        params = json.loads(request._body or b"{}")
    except ValueError:
        return resource
    if request._service == "sagemaker":
        name = params.get("TrainingJobName")
        return f"arn:aws:sagemaker:{request._region}:{account}:training-job/{name.lower()}" if name else resource
    if request._service == "secretsmanager" and params.get("SecretId"):
        from moto.secretsmanager.models import secretsmanager_backends

        secrets = secretsmanager_backends[account][request._region].secrets
        secret = secrets.get(params["SecretId"]) if params["SecretId"] in secrets else None
        return secret.arn if secret is not None else params["SecretId"]
    if request._service == "logs" and params.get("logGroupName"):
        arn = f"arn:aws:logs:{request._region}:{account}:log-group:{params['logGroupName']}"
        return f"{arn}:log-stream:{params['logStreamName']}" if params.get("logStreamName") else arn
    return resource


REFUSALS: list[tuple[str, str, str]] = []  # (caller ARN, action, resource) of every refusal, for diagnosis
# (access key id, action, S3A's process id from its audit Referer, or "") of every S3 request allowed
ALLOWED_S3: list[tuple[str, str, str]] = []
# Object ARN prefixes where a vended session runs out right after its first authorized PutObject: a compressed
# clock, as if the next write came after the session's end.
EXPIRE_AFTER_ONE_WRITE: set[str] = set()


def _refuse(request: Any, action: str, resource: str) -> None:
    REFUSALS.append((request._access_key.arn, action, resource))
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.s3.exceptions import S3AccessDeniedError

    message = f"User: {request._access_key.arn} is not authorized to perform: {action} on resource: {resource}"
    if request._service == "s3":
        # Never the bucket variant: moto then retries a DeleteObjects unauthenticated. S3 names action and resource.
        refused = S3AccessDeniedError()
        refused.message = message
        raise refused
    if request._service in ("secretsmanager", "logs", "emr-serverless", "sagemaker"):
        refused = JsonRESTError("AccessDeniedException", message)
        refused.code = 403
        raise refused
    error = AccessDeniedError(user_arn=request._access_key.arn, action=action)
    error.description = error.description.replace(action, f"{action} on resource: {resource}")
    raise error


def _expired(request: Any) -> None:
    REFUSALS.append((request._access_key.arn, "expired", request._path))
    from moto.core.exceptions import _RESTError
    from moto.s3.exceptions import S3ClientError

    if request._service == "s3":
        raise S3ClientError("ExpiredToken", "The provided token has expired.")
    error = _RESTError("ExpiredToken", "The security token included in the request is expired")
    error.code = 403
    raise error


def _check_action_permitted(self: Any, resource: str) -> None:
    """moto's check, completed: session policies, conditions, cross-account trust, bucket policies, expiry."""
    from moto.core.utils import utcnow
    from moto.iam.access_control import AssumedRoleAccessKey
    from moto.iam.models import iam_backends
    from moto.s3.models import s3_backends
    from moto.sts.models import sts_backends

    action = {"s3:HeadBucket": "s3:ListBucket"}.get(self._action, self._action)
    if action == "sts:GetCallerIdentity":
        return
    key, partition = self._access_key, "aws"
    principals, session, assumed = [key.arn], [], None
    if isinstance(key, AssumedRoleAccessKey):
        assumed = next(r for r in sts_backends[key.account_id][partition].assumed_roles
                       if r.access_key_id == key._access_key_id)
        if utcnow() >= assumed.expiration:
            _expired(self)
        principals.append(assumed.role_arn)
        if assumed.policy:
            session = [json.loads(assumed.policy)]
    identity = _documents(key.collect_policies())
    context = _request_context(self)
    resources = [_resource_arn(self, key.account_id, resource)]
    if self._service == "s3" and action == "s3:DeleteObject" and "/" not in resource.split(":::", 1)[1]:
        keys = re.findall(r"<Key>(.*?)</Key>", (self._body or b"").decode("utf-8", "replace"))
        resources = [f"{resource}/{k}" for k in keys]  # DeleteObjects: every key is checked
    for target in resources:
        tags = _resource_tags(key.account_id, self._region, target)
        context = {**_request_context(self), **{f"aws:resourcetag/{k.lower()}": [v] for k, v in tags.items()}}
        verdicts = [evaluate(identity, action, target, principals, context)]
        if self._service == "s3":
            bucket = s3_backends[key.account_id][partition].buckets.get(target.split(":::", 1)[1].split("/")[0])
            if bucket is not None and bucket.policy:
                verdicts.append(evaluate([json.loads(bucket.policy)], action, target, principals, context))
        if "deny" in verdicts or "allow" not in verdicts:
            _refuse(self, action, target)
        if session and evaluate(session, action, target, principals, context) != "allow":
            _refuse(self, action, target)
        for further, on, extra in _checked_with(self, action, target):
            if evaluate(identity, further, on, principals, {**context, **extra}) != "allow":
                _refuse(self, further, on)
        if self._service == "s3" and action == "s3:GetObject" and not _may_learn_absence(
                key.account_id, target, identity, session, principals, context):
            _refuse(self, action, target)
        if action == "sts:AssumeRole":
            account = target.split(":")[4]
            try:
                role = iam_backends[account][partition].get_role_by_arn(target)
            except Exception:  # noqa: BLE001 - a role that does not exist cannot be assumed
                _refuse(self, action, target)
            if evaluate([json.loads(role.assume_role_policy_document)], action, target, principals,
                        context) != "allow":
                _refuse(self, action, target)
    if assumed is not None and action == "s3:PutObject" and any(
            t.startswith(p) for t in resources for p in EXPIRE_AFTER_ONE_WRITE):
        assumed.expiration = utcnow()
    if self._service == "s3":
        process = re.search(r"[?&]ps=([^&]+)", self._headers.get("Referer", ""))
        ALLOWED_S3.append((key._access_key_id, action, process.group(1) if process else ""))


def _may_learn_absence(account: str, target: str, identity: list, session: list, principals: list[str],
                       context: dict[str, list[str]]) -> bool:
    """S3 answers a Get or Head of a missing key with 404 only to a caller that may list the bucket at that key,
    and with 403 to everyone else (the GetObject and HeadObject API references)."""
    from moto.s3.models import s3_backends

    bucket_name, _, object_key = target.split(":::", 1)[1].partition("/")
    bucket = s3_backends[account]["aws"].buckets.get(bucket_name)
    if bucket is None or not object_key or object_key in bucket.keys:
        return True
    listing, arn = {**context, "s3:prefix": [object_key]}, f"arn:aws:s3:::{bucket_name}"
    return evaluate(identity, "s3:ListBucket", arn, principals, listing) == "allow" and (
        not session or evaluate(session, "s3:ListBucket", arn, principals, listing) == "allow")


def _bucket_permission(self: Any, action: str, resource: str) -> Any:
    """The bucket policy for requests moto checks without a caller: principal-specific statements do not apply."""
    from moto.iam.access_control import PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    verdict = evaluate([json.loads(self.policy)], action, resource, [], {"aws:securetransport": ["true"]})
    return {"deny": PermissionResult.DENIED, "allow": PermissionResult.PERMITTED}.get(verdict,
                                                                                      PermissionResult.NEUTRAL)


def _signing_exactly(auth_class: type) -> type:
    """auth_class with the canonical headers being exactly the ones the request carries, none dropped."""
    from botocore.awsrequest import HTTPHeaders

    class ExactlySigned(auth_class):
        def headers_to_sign(self, request):
            signed = HTTPHeaders()
            for name, value in request.headers.items():
                signed[name.lower()] = value
            return signed

    return ExactlySigned


def _check_signature(self: Any) -> None:
    """SigV4 over exactly the headers the client listed in SignedHeaders, and its payload, as AWS verifies them.

    moto rebuilds the canonical request with botocore's signer, which leaves out User-Agent (and Expect) even
    when the client signed them (the AWS SDK for Java v1 signs User-Agent), and takes the x-amz-content-sha256 header
    on trust: it checks neither a literal payload hash against the body nor the chunk signatures of a streaming
    upload (what the AWS SDK for Java v2 under S3A sends over HTTP). The key, date, scope, path, query, headers and
    payload are all checked against the caller's secret, as AWS does; a GET, HEAD or DELETE without a body is hashed
    as the empty payload it is (moto hands EMR Serverless' headers in its place)."""
    import hmac

    claimed = self._get_string_between("Signature=", ",", self._headers["Authorization"])
    moto_auth = self._create_auth(self._access_key.create_credentials())
    auth = _signing_exactly(type(moto_auth))(moto_auth.credentials, self._service, self._region)
    request = self._create_aws_request()
    if not self._body and self._method in ("GET", "HEAD", "DELETE"):
        # The payload is what was sent, nothing: moto hands EMR Serverless' headers as the request data.
        request.data = b""
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    if not hmac.compare_digest(claimed, expected):
        REFUSALS.append((self._access_key.arn, "signature", self._path))
        self._raise_signature_does_not_match()
    if self._service != "s3":
        return
    headers = {k.lower(): v for k, v in self._headers.items()}
    scope = self._get_string_between("Credential=", ",", self._headers["Authorization"]).split("/", 1)[1]
    body = self._body.encode() if isinstance(self._body, str) else (self._body or b"")
    try:
        # CompleteMultipartUpload's checksum headers are the whole object's, not its XML body's.
        verify_s3_payload(headers, body, claimed, scope, auth.credentials.secret_key,
                          checksums=not (self._method == "POST" and "uploadId=" in self._path))
    except PayloadRefused as refused:
        from moto.s3.exceptions import S3ClientError

        REFUSALS.append((self._access_key.arn, "payload", self._path))
        if refused.code == "SignatureDoesNotMatch":
            self._raise_signature_does_not_match()
        raise S3ClientError(refused.code, refused.message) from None


STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


class PayloadRefused(Exception):
    """S3's refusal of a request body: its error code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def signing_key(secret: str, scope: str) -> bytes:
    """The SigV4 signing key of a credential scope (date/region/service/aws4_request)."""
    import hashlib
    import hmac

    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify_s3_payload(headers: dict[str, str], body: bytes, seed_signature: str, scope: str, secret: str,
                      checksums: bool = True) -> bytes:
    """The decoded object bytes of an S3 request whose payload S3 accepts, as the S3 API reference describes it
    ("Authenticating Requests: Using the Authorization Header", "Transferring Payload in Multiple Chunks"): a literal
    x-amz-content-sha256 must be the body's SHA-256; UNSIGNED-PAYLOAD is taken as sent; a chunked upload must carry a
    chain of chunk signatures seeded by the request's signature and decode to x-amz-decoded-content-length bytes; and
    any x-amz-checksum-* or Content-MD5 header must match the object. PayloadRefused otherwise."""
    import base64
    import hashlib
    import hmac
    import zlib

    content_sha256 = headers.get("x-amz-content-sha256")
    if content_sha256 is None:
        raise PayloadRefused("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if content_sha256 == "UNSIGNED-PAYLOAD":
        data = body
    elif re.fullmatch(r"[0-9a-f]{64}", content_sha256):
        if hashlib.sha256(body).hexdigest() != content_sha256:
            raise PayloadRefused("XAmzContentSHA256Mismatch",
                                 "The provided 'x-amz-content-sha256' header does not match what was computed.")
        data = body
    elif content_sha256 == STREAMING_SIGNED:
        key, stamp, empty = signing_key(secret, scope), headers.get("x-amz-date", ""), hashlib.sha256(b"").hexdigest()
        chunks, previous, rest = [], seed_signature, body
        while True:
            line, sep, rest = rest.partition(b"\r\n")
            size_text, _, signature = line.decode("latin-1").partition(";chunk-signature=")
            if not sep or not re.fullmatch(r"[0-9a-fA-F]+", size_text) or not signature:
                raise PayloadRefused("IncompleteBody", "The request body is not a sequence of signed chunks.")
            size = int(size_text, 16)
            chunk, rest = rest[:size], rest[size:]
            if len(chunk) != size or not rest.startswith(b"\r\n"):
                raise PayloadRefused("IncompleteBody", "A chunk is shorter than its declared size.")
            rest = rest[2:]
            string_to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, empty,
                                        hashlib.sha256(chunk).hexdigest()])
            expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(signature, expected):
                raise PayloadRefused("SignatureDoesNotMatch", "A chunk signature does not match the chunk.")
            chunks.append(chunk)
            previous = expected
            if size == 0:
                break
        data = b"".join(chunks)
        if rest:
            raise PayloadRefused("IncompleteBody", "Bytes follow the final chunk.")
        if str(len(data)) != headers.get("x-amz-decoded-content-length"):
            raise PayloadRefused("IncompleteBody", "x-amz-decoded-content-length does not match the chunks.")
    else:
        # The trailer forms (STREAMING-*-TRAILER) are sent over TLS; no client of this project sends them over HTTP.
        raise PayloadRefused("InvalidRequest", f"x-amz-content-sha256 {content_sha256} is not verified by this "
                                               f"stand-in; verify it as AWS does before accepting it")
    if not checksums:
        return data
    digests = {"x-amz-checksum-crc32": lambda b: zlib.crc32(b).to_bytes(4, "big"),
               "x-amz-checksum-sha1": lambda b: hashlib.sha1(b).digest(),
               "x-amz-checksum-sha256": lambda b: hashlib.sha256(b).digest(),
               "content-md5": lambda b: hashlib.md5(b).digest()}
    for name in ("x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme"):
        if name in headers:
            raise PayloadRefused("InvalidRequest", f"{name} is not verified by this stand-in")
    for name, digest in digests.items():
        if name in headers and base64.b64encode(digest(data)).decode() != headers[name]:
            raise PayloadRefused("BadDigest", f"The {name} you specified did not match the calculated checksum.")
    return data


def _bucket_response(original):
    """S3's answer to a refused HeadBucket, as AWS gives it: 403 with the bucket's region in x-amz-bucket-region
    (clients such as MLflow's artifact store find the region that way)."""
    from moto.s3.exceptions import S3AccessDeniedError

    def bucket_response(self, request: Any, full_url: str):
        try:
            return original(self, request, full_url)
        except S3AccessDeniedError:
            bucket = self.backend.buckets.get(self.parse_bucket_name_from_url(request, full_url))
            if request.method != "HEAD" or bucket is None:
                raise
            return 403, {"x-amz-bucket-region": bucket.region_name}, ""

    return bucket_response


@contextmanager
def enforcing(moto_url: str) -> Iterator[None]:
    """IAM authorization on in the moto server (and the evaluator completed) until the block ends."""
    from moto.iam.access_control import IAMRequestBase
    from moto.s3.models import FakeBucket
    from moto.s3.responses import S3Response

    saved = (IAMRequestBase.check_action_permitted, FakeBucket.get_permission, IAMRequestBase.check_signature,
             S3Response._bucket_response)
    IAMRequestBase.check_action_permitted, FakeBucket.get_permission = _check_action_permitted, _bucket_permission
    IAMRequestBase.check_signature = _check_signature
    S3Response._bucket_response = _bucket_response(S3Response._bucket_response)
    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
        (IAMRequestBase.check_action_permitted, FakeBucket.get_permission, IAMRequestBase.check_signature,
         S3Response._bucket_response) = saved


# ---- the enforcing world: built by `governed-ft aws apply` and `governed-ft catalog apply` -------------------

STACK = "gft"
ACCOUNT = "123456789012"  # moto's default account
DATA_BUCKET = f"{STACK}-data-{ACCOUNT}-{REGION}"
CODE_BUCKET = f"{STACK}-code-{ACCOUNT}-{REGION}"
ORCHESTRATOR_POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-orchestrator"
ADMIN_APP, ADMIN_OAUTH = "workspace-admin-app", "workspace-admin-oauth-secret-9b2e"
_WRITE_OPERATIONS = ("READ_WRITE", "PATH_READ_WRITE", "PATH_CREATE_TABLE")


def scope_policy(location: str, write: bool) -> dict[str, Any]:
    """The session policy a vend carries: Get and List on the location's prefix; Put and Delete too for writes."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/")
    objects = [f"arn:aws:s3:::{bucket}/{prefix}", f"arn:aws:s3:::{bucket}/{prefix}/*"]
    statements = [
        {"Sid": "Read", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": objects},
        {"Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"],
         "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}},
        {"Sid": "Locate", "Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [f"arn:aws:s3:::{bucket}"]},
    ]
    if write:
        statements.append({"Sid": "Write", "Effect": "Allow", "Resource": objects,
                           "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]})
    return {"Version": "2012-10-17", "Statement": statements}


def keys_of(credentials: dict[str, str]) -> dict[str, str]:
    """boto3 client arguments for an STS or IAM key triple."""
    out = {"aws_access_key_id": credentials["AccessKeyId"], "aws_secret_access_key": credentials["SecretAccessKey"]}
    if credentials.get("SessionToken"):
        out["aws_session_token"] = credentials["SessionToken"]
    return out


@dataclass
class EnforcedWorld:
    """moto with IAM enforced and the stack applied; the fake workspace provisioned and vending real STS sessions."""

    moto_url: str
    databricks: FakeDatabricks
    admin: dict[str, str]
    orchestrator: dict[str, str]
    unity_catalog: dict[str, str]
    application_ids: dict[str, str]
    narrow: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    # What EMR Serverless and SageMaker hand a job: a session of its role, by role name.
    job_roles: dict[str, dict[str, str]] = field(default_factory=dict)

    def boto(self, service: str, keys: dict[str, str] | None = None):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto_url, **(keys or self.admin))

    def role_keys(self, role_name: str) -> dict[str, str]:
        """A session of one of the stack's roles, as the service that runs it would hold."""
        return keys_of(self.boto("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role_name}",
                                                    RoleSessionName="probe")["Credentials"])

    def vend(self, location: str, operation: str, principal: str, ttl_s: int) -> dict[str, str]:
        """As Unity Catalog does: assume the storage credential's role with a session policy for this scope."""
        location_info = self.databricks.location_of(location.rstrip("/"))
        if location_info is None:
            location_info = next(loc for loc in self.databricks.external_locations.values()
                                 if location.startswith(loc["url"].rsplit("/", 1)[0]))
        credential = self.databricks.storage_credentials[location_info["credential_name"]]["aws_iam_role"]
        scope, write = self.narrow.get((location.rstrip("/"), operation), (location, operation in _WRITE_OPERATIONS
                                                                          or "WRITE" in operation))
        issued = self.boto("sts", self.unity_catalog).assume_role(
            RoleArn=credential["role_arn"], RoleSessionName=re.sub(r"[^\w+=,.@-]", "-", principal)[:64] or "uc",
            ExternalId=credential["external_id"], DurationSeconds=max(ttl_s, 900),
            Policy=json.dumps(scope_policy(scope, write)))["Credentials"]
        if ttl_s < 900:  # a catalog lifetime below STS's minimum: the storage ends the session when the catalog says
            import datetime as dt

            from moto.core.utils import utcnow
            from moto.sts.models import sts_backends

            session = next(r for r in sts_backends[ACCOUNT]["aws"].assumed_roles
                           if r.access_key_id == issued["AccessKeyId"])
            session.expiration = utcnow() + dt.timedelta(seconds=ttl_s)
        return {"access_key_id": issued["AccessKeyId"], "secret_access_key": issued["SecretAccessKey"],
                "session_token": issued["SessionToken"]}

    def expire(self, access_key_ids: set[str] | None = None) -> int:
        """Move moto's clock past the end of vended sessions (all so far by default); returns how many."""
        import datetime as dt

        from moto.sts.models import sts_backends

        wanted = access_key_ids or {c["access_key_id"] for c in self.databricks.vended}
        past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=1)
        aged = 0
        for role in sts_backends[ACCOUNT]["aws"].assumed_roles:
            if role.access_key_id in wanted:
                role.expiration, aged = past, aged + 1
        return aged

    def catalog_resource(self, **overrides) -> DatabricksCatalogResource:
        return DatabricksCatalogResource(**{
            "catalog": CATALOG, "host": self.databricks.url, "region": REGION, "storage_root": f"s3://{DATA_BUCKET}",
            "storage_region": REGION, "s3_endpoint_url": self.moto_url, "aws_endpoint_url": self.moto_url,
            "secret_prefix": f"{STACK}/", "application_ids": self.application_ids, **overrides,
        })


def _cli(group, args: list[str], env: dict[str, str | None]) -> str:
    from click.testing import CliRunner

    result = CliRunner().invoke(group, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


def build_enforced_world(moto_url: str, monkeypatch) -> EnforcedWorld:
    """Set up with IAM off, as the stack's operator would with admin credentials; then IAM on (see `enforcing`)."""
    from governed_ft_dagster.cli.provision import aws as aws_group
    from governed_ft_dagster.cli.provision import catalog_group
    from governed_ft_dagster.provision.policies import UC_MASTER_ROLE_ARN

    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    root = boto3.client("iam", region_name=REGION, endpoint_url=moto_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    users = {}
    for user in ("stack-admin", "orchestrator"):
        root.create_user(UserName=user)
        users[user] = keys_of(root.create_access_key(UserName=user)["AccessKey"])
    root.put_user_policy(UserName="stack-admin", PolicyName="access", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    admin = users["stack-admin"]
    for name, value in {**{k.upper(): v for k, v in admin.items()}, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    # Unity Catalog's master role lives in Databricks' account; moto keeps that account apart from ours.
    sts = boto3.client("sts", region_name=REGION, endpoint_url=moto_url, **admin)
    databricks_keys = keys_of(sts.assume_role(RoleArn=UC_MASTER_ROLE_ARN, RoleSessionName="setup")["Credentials"])
    databricks_iam = boto3.client("iam", region_name=REGION, endpoint_url=moto_url, **databricks_keys)
    master = UC_MASTER_ROLE_ARN.rsplit("/", 1)[1]
    databricks_iam.create_role(RoleName=master, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))
    databricks_iam.put_role_policy(RoleName=master, PolicyName="assume-storage-roles", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    unity_catalog = keys_of(sts.assume_role(RoleArn=UC_MASTER_ROLE_ARN, RoleSessionName="unity-catalog",
                                            DurationSeconds=43200)["Credentials"])

    fake = FakeDatabricks().start()
    fake.add_service_principal(ADMIN_APP, ADMIN_OAUTH, admin=True)
    env = {"GOVERNED_FT_AWS_ENDPOINT_URL": moto_url, "AWS_REGION": REGION, "GOVERNED_FT_STACK": STACK,
           "DATABRICKS_HOST": fake.url, "DATABRICKS_CLIENT_ID": ADMIN_APP, "DATABRICKS_CLIENT_SECRET": ADMIN_OAUTH,
           "DATABRICKS_TOKEN": None, "DATABRICKS_CONFIG_PROFILE": None,
           "DATABRICKS_CONFIG_FILE": "/nonexistent/databrickscfg"}
    _cli(aws_group, ["apply", "--uc-external-id", fake.account_id], env)
    # The orchestrator's own AWS identity holds exactly the policy `aws apply` generated for it.
    root.attach_user_policy(UserName="orchestrator", PolicyArn=ORCHESTRATOR_POLICY_ARN)
    _cli(catalog_group, ["apply"], env)
    secrets = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_url, **admin)
    ids = {p.value: json.loads(secrets.get_secret_value(SecretId=f"{STACK}/{p.value}")["SecretString"])["client_id"]
           for p in Principal}
    world = EnforcedWorld(moto_url, fake, admin, users["orchestrator"], unity_catalog, ids)
    world.job_roles = {role: world.role_keys(role) for role in (f"{STACK}-emr-runtime", f"{STACK}-sagemaker-execution")}
    fake.vendor = world.vend
    for name, value in {k.upper(): v for k, v in world.orchestrator.items()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # its credentials were resolved once, from older variables
    return world


@contextmanager
def enforced_registry_world(monkeypatch, tracking_url: str | None = None,
                            sdk_models_repo: bool = False) -> Iterator[tuple[EnforcedWorld, Any, Any]]:
    """The enforcing world plus the MLflow Unity Catalog registry and lineage APIs, IAM on for the whole block;
    given the URL of an MLflow server, MLflow tracking too."""
    from conftest import free_port
    from fake_lineage import FakeLineageService
    from fake_mlflow_uc import install

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    world = build_enforced_world(url, monkeypatch)
    registry = install(world.databricks, storage_root=f"s3://{DATA_BUCKET}/ml/models", moto_url=url)
    registry.admin_keys = world.admin
    install_mlflow(world.databricks, registry, tracking_url, sdk_models_repo)
    service = FakeLineageService(page_size=50)
    service.install(world.databricks)
    world.databricks.add_route("GET", r"/api/2\.1/unity-catalog/models/(?P<full_name>[^/]+)/versions",
                               lambda fake, request, full_name: (200, {"model_versions": [
                                   {"catalog_name": CATALOG, "model_name": full_name, "version": int(v)}
                                   for v in registry.versions.get(full_name, {})]}))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", url)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    try:
        with enforcing(url):
            yield world, registry, service
    finally:
        world.databricks.stop()
        server.stop()
