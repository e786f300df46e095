"""Zero bypass, enforced by the storage: moto with IAM on, the stack and catalog built by the project's apply
commands, credentials vended from moto's STS. Prints the probe table with `-s`."""

from __future__ import annotations

import re
from typing import Iterator

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from aws_fixtures import (
    ACCOUNT,
    CATALOG,
    DATA_BUCKET,
    REGION,
    STACK,
    EnforcedWorld,
    PayloadRefused,
    build_enforced_world,
    enforcing,
    signing_key,
    verify_s3_payload,
)
from conftest import free_port
from governed_ft_dagster.catalog.base import ColumnInfo, Principal
from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE
from governed_ft_dagster.provision import probes as pr

COLUMNS = [ColumnInfo("accession_number", "STRING", "string", 0, False)]
RAW_KEY, CURATED_KEY = "raw/tables/risk_factors/part-0.json", "curated/tables/risk_factor_instructions/part-0.json"


@pytest.fixture(scope="module")
def enforced() -> Iterator[tuple[EnforcedWorld, dict[str, dict[str, str]]]]:
    """The enforcing world with both governed tables registered by their owners and one object in each prefix."""
    monkeypatch = pytest.MonkeyPatch()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    world = build_enforced_world(url, monkeypatch)
    # What AWS hands each job's service when it assumes the job's role.
    own = {"emr-runtime": world.role_keys(f"{STACK}-emr-runtime"),
           "sagemaker-execution": world.role_keys(f"{STACK}-sagemaker-execution"),
           "orchestrator": world.orchestrator}
    try:
        with enforcing(url):
            for key in (RAW_KEY, CURATED_KEY, "ml/adapters/seed.txt"):
                world.boto("s3").put_object(Bucket=DATA_BUCKET, Key=key, Body=b"{}")
            catalog = world.catalog_resource()
            catalog.client(Principal.INGEST).register_external_table(
                catalog.table_name(RAW_TABLE), catalog.location("raw/tables/risk_factors"), COLUMNS)
            catalog.grant_table_readers(Principal.INGEST, RAW_TABLE)
            catalog.client(Principal.PREPROCESS).register_external_table(
                catalog.table_name(CURATED_TABLE), catalog.location("curated/tables/risk_factor_instructions"), COLUMNS)
            catalog.grant_table_readers(Principal.PREPROCESS, CURATED_TABLE)
            yield world, own
    finally:
        world.databricks.stop()
        server.stop()
        monkeypatch.undo()


def s3_attempts(world: EnforcedWorld, keys: dict[str, str]):
    """Get, put, delete and list on the governed bucket with these credentials."""
    s3 = world.boto("s3", keys)
    return {
        "get": lambda key: (lambda: s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read()),
        "put": lambda key: (lambda: s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=b"probe")),
        "delete": lambda key: (lambda: s3.delete_object(Bucket=DATA_BUCKET, Key=key)),
        "delete many": lambda key: (lambda: _delete_objects(s3, key)),
        "list": lambda prefix: (lambda: s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix=prefix)),
        "head bucket": lambda _: (lambda: _head_bucket(s3)),
    }


def _head_bucket(s3) -> None:
    """HeadBucket; refused, it still tells the bucket's region, as AWS does (MLflow's artifact store relies on it)."""
    try:
        s3.head_bucket(Bucket=DATA_BUCKET)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region") == REGION
        raise


def _delete_objects(s3, key: str) -> None:
    errors = s3.delete_objects(Bucket=DATA_BUCKET, Delete={"Objects": [{"Key": key}]}).get("Errors")
    if errors:
        raise ClientError({"Error": {"Code": errors[0]["Code"], "Message": errors[0]["Message"]}}, "DeleteObjects")


class SignsUserAgent(S3SigV4Auth):
    """SigV4 with User-Agent among the signed headers, as the AWS SDK for Java v1 signs (botocore's signer, which moto
    uses, leaves it out)."""

    def headers_to_sign(self, request):
        signed = super().headers_to_sign(request)
        signed["user-agent"] = request.headers["User-Agent"]
        return signed


def signed_get(world: EnforcedWorld, keys: dict[str, str], key: str, *, secret: str | None = None,
               user_agent_in_transit: str | None = None):
    """A GetObject as the AWS SDK for Java v1 (S3A before Hadoop 3.4) signs it, User-Agent included; optionally signed
    with another secret or with User-Agent changed after signing."""
    url = f"{world.moto_url}/{DATA_BUCKET}/{key}"
    user_agent = "Hadoop 3.3.4, aws-sdk-java/1.12.262 Linux/6 OpenJDK_64-Bit_Server_VM/17 java/17"
    request = AWSRequest("GET", url, headers={"User-Agent": user_agent})
    SignsUserAgent(Credentials(keys["aws_access_key_id"], secret or keys["aws_secret_access_key"],
                               keys["aws_session_token"]), "s3", REGION).add_auth(request)
    headers = {**dict(request.headers.items()), "User-Agent": user_agent_in_transit or user_agent}

    def attempt() -> bytes:
        response = requests.get(url, headers=headers, timeout=30)
        if response.status_code >= 400:
            code = re.search(r"<Code>(.*?)</Code>", response.text)
            raise ClientError({"Error": {"Code": code.group(1) if code else str(response.status_code)}}, "GetObject")
        return response.content

    return attempt


def chunk_signed_put(world: EnforcedWorld, keys: dict[str, str], key: str, data: bytes, *,
                     alter_in_transit: bool = False):
    """A PutObject as the AWS SDK for Java v2 under S3A sends it over HTTP: aws-chunked, each chunk signed in a chain
    seeded by the request's signature (S3 API reference, "Transferring Payload in Multiple Chunks")."""
    import datetime as dt
    import hashlib
    import hmac

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{REGION}/s3/aws4_request"
    signing = signing_key(keys["aws_secret_access_key"], scope)
    pieces = [data[i:i + 8192] for i in range(0, len(data), 8192)] + [b""]
    length = sum(len(f"{len(p):x};chunk-signature=") + 64 + 4 + len(p) for p in pieces)
    host = world.moto_url.split("//", 1)[1]
    headers = {"content-encoding": "aws-chunked", "content-length": str(length), "host": host,
               "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-date": stamp,
               "x-amz-decoded-content-length": str(len(data)), "x-amz-security-token": keys["aws_session_token"]}
    names = sorted(headers)
    canonical = "\n".join(["PUT", f"/{DATA_BUCKET}/{key}", "", *[f"{n}:{headers[n]}" for n in names], "",
                           ";".join(names), headers["x-amz-content-sha256"]])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    previous = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={keys['aws_access_key_id']}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={previous}")
    body = b""
    for piece in pieces:
        chunk_to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous,
                                   hashlib.sha256(b"").hexdigest(), hashlib.sha256(piece).hexdigest()])
        previous = hmac.new(signing, chunk_to_sign.encode(), hashlib.sha256).hexdigest()
        body += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n"
    if alter_in_transit:
        body = body.replace(b"governed", b"Governed", 1)

    def attempt() -> None:
        response = requests.put(f"{world.moto_url}/{DATA_BUCKET}/{key}", data=body, headers=headers, timeout=30)
        if response.status_code >= 400:
            code = re.search(r"<Code>(.*?)</Code>", response.text)
            raise ClientError({"Error": {"Code": code.group(1) if code else str(response.status_code)}}, "PutObject")

    return attempt


def body_altered_put(world: EnforcedWorld, keys: dict[str, str], key: str):
    """A PutObject signed over its body's SHA-256, whose body is changed after signing."""
    url = f"{world.moto_url}/{DATA_BUCKET}/{key}"
    request = AWSRequest("PUT", url, data=b"probe: signed body")
    S3SigV4Auth(Credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"], keys["aws_session_token"]),
                "s3", REGION).add_auth(request)

    def attempt() -> None:
        response = requests.put(url, data=b"probe: other body", headers=dict(request.headers.items()), timeout=30)
        if response.status_code >= 400:
            code = re.search(r"<Code>(.*?)</Code>", response.text)
            raise ClientError({"Error": {"Code": code.group(1) if code else str(response.status_code)}}, "PutObject")

    return attempt


def vended_keys(world: EnforcedWorld, principal: Principal, how: str, target: str) -> dict[str, str]:
    """Credentials the fake workspace vends to the principal, asked for through the project's catalog client."""
    client = world.catalog_resource().client(principal)
    if how.startswith("PATH"):
        creds = client.temporary_path_credentials(f"s3://{DATA_BUCKET}/{target}", how)
    else:
        creds = client.temporary_table_credentials(f"{CATALOG}.{target}", how)
    return {"aws_access_key_id": creds.aws_access_key_id, "aws_secret_access_key": creds.aws_secret_access_key,
            "aws_session_token": creds.aws_session_token}


def enforcement_probes(world: EnforcedWorld, own: dict[str, dict[str, str]]) -> list[pr.Probe]:
    """Every probe of the issue, each with the outcome the design demands."""
    probes: list[pr.Probe] = []
    bucket = f"s3://{DATA_BUCKET}"

    def add(principal, securable, operation, source, allowed, attempt):
        probes.append(pr.Probe(principal, securable, operation, source, allowed, attempt))

    for role, secret, other, group in (("emr-runtime", "preprocess", "train", f"/aws/emr-serverless/{STACK}"),
                                       ("sagemaker-execution", "train", "preprocess", "/aws/sagemaker/TrainingJobs")):
        keys, s3 = own[role], s3_attempts(world, own[role])
        for key in (RAW_KEY, CURATED_KEY, "ml/adapters/seed.txt"):
            add(role, f"{bucket}/{key}", "GetObject", "own role", False, s3["get"](key))
        add(role, f"{bucket}/ml/adapters/probe.txt", "PutObject", "own role", False, s3["put"]("ml/adapters/probe.txt"))
        for prefix in ("", "raw/", "curated/"):
            add(role, f"{bucket}/{prefix}", "ListBucket", "own role", False, s3["list"](prefix))
        sm, logs = world.boto("secretsmanager", keys), world.boto("logs", keys)
        add(role, f"secret {STACK}/{secret}", "GetSecretValue", "own role", True,
            lambda sm=sm, s=secret: sm.get_secret_value(SecretId=f"{STACK}/{s}"))
        add(role, f"secret {STACK}/{other}", "GetSecretValue", "own role", False,
            lambda sm=sm, s=other: sm.get_secret_value(SecretId=f"{STACK}/{s}"))
        add(role, f"log group {group}", "CreateLogStream+PutLogEvents", "own role", True,
            lambda logs=logs, g=group, r=role: _write_log(logs, g, f"probe-{r}"))
    orchestrator = s3_attempts(world, own["orchestrator"])
    add("orchestrator", f"{bucket}/{RAW_KEY}", "GetObject", "own identity", False, orchestrator["get"](RAW_KEY))
    add("orchestrator", f"{bucket}/raw/", "ListBucket", "own identity", False, orchestrator["list"]("raw/"))

    raw_read = s3_attempts(world, vended_keys(world, Principal.PREPROCESS, "READ", RAW_TABLE))
    who, source = "preprocess", "vended READ on the raw table"
    add(who, f"{bucket}/{RAW_KEY}", "GetObject", source, True, raw_read["get"](RAW_KEY))
    add(who, f"{bucket}/raw/tables/risk_factors/", "ListBucket", source, True,
        raw_read["list"]("raw/tables/risk_factors/"))
    add(who, f"{bucket}/{CURATED_KEY}", "GetObject", source, False, raw_read["get"](CURATED_KEY))
    add(who, f"{bucket}/raw/tables/risk_factors/probe.json", "PutObject", source, False,
        raw_read["put"]("raw/tables/risk_factors/probe.json"))
    add(who, f"{bucket}/raw/landing/probe.json", "PutObject", source, False, raw_read["put"]("raw/landing/probe.json"))
    add(who, f"{bucket}/{RAW_KEY}", "DeleteObject", source, False, raw_read["delete"](RAW_KEY))
    add(who, f"{bucket}/{RAW_KEY}", "DeleteObjects", source, False, raw_read["delete many"](RAW_KEY))
    for prefix in ("", "raw/", "raw/tables/", "curated/"):
        add(who, f"{bucket}/{prefix}", "ListBucket", source, False, raw_read["list"](prefix))
    add(who, f"{bucket}", "HeadBucket", source, False, raw_read["head bucket"](None))

    curated_write = s3_attempts(world, vended_keys(world, Principal.PREPROCESS, "READ_WRITE", CURATED_TABLE))
    source = "vended READ_WRITE on the curated table"
    add(who, f"{bucket}/curated/tables/risk_factor_instructions/probe.json", "PutObject", source, True,
        curated_write["put"]("curated/tables/risk_factor_instructions/probe.json"))
    add(who, f"{bucket}/curated/tables/risk_factor_instructions/probe.json", "DeleteObject", source, True,
        curated_write["delete"]("curated/tables/risk_factor_instructions/probe.json"))
    for key in ("raw/tables/risk_factors/probe.json", "raw/probe.json", "ml/adapters/probe.txt",
                "curated/tables/other/probe.json"):
        add(who, f"{bucket}/{key}", "PutObject", source, False, curated_write["put"](key))
    add(who, f"{bucket}/{RAW_KEY}", "DeleteObjects", source, False, curated_write["delete many"](RAW_KEY))

    ml_write = s3_attempts(world, vended_keys(world, Principal.TRAIN, "PATH_READ_WRITE", "ml/adapters/probe-run"))
    who, source = "train", "vended PATH_READ_WRITE on ml/adapters/probe-run"
    add(who, f"{bucket}/ml/adapters/probe-run/adapter.bin", "PutObject", source, True,
        ml_write["put"]("ml/adapters/probe-run/adapter.bin"))
    add(who, f"{bucket}/ml/adapters/probe-run/adapter.bin", "GetObject", source, True,
        ml_write["get"]("ml/adapters/probe-run/adapter.bin"))
    add(who, f"{bucket}/{CURATED_KEY}", "GetObject", source, False, ml_write["get"](CURATED_KEY))
    add(who, f"{bucket}/curated/tables/risk_factor_instructions/x.json", "PutObject", source, False,
        ml_write["put"]("curated/tables/risk_factor_instructions/x.json"))
    add(who, f"{bucket}/{CURATED_KEY}", "DeleteObject", source, False, ml_write["delete"](CURATED_KEY))
    add(who, f"{bucket}/curated/", "ListBucket", source, False, ml_write["list"]("curated/"))
    add(who, f"{bucket}/ml/adapters/seed.txt", "GetObject", source, False, ml_write["get"]("ml/adapters/seed.txt"))

    raw_keys, source = vended_keys(world, Principal.PREPROCESS, "READ", RAW_TABLE), "vended READ on the raw table"
    add("preprocess", f"{bucket}/{RAW_KEY}", "GetObject, User-Agent signed (as SDK v1 signs)", source, True,
        signed_get(world, raw_keys, RAW_KEY))
    add("preprocess", f"{bucket}/{RAW_KEY}", "GetObject, a signed header altered in transit", source, False,
        signed_get(world, raw_keys, RAW_KEY, user_agent_in_transit="Hadoop 3.3.4, altered"))
    add("preprocess", f"{bucket}/{RAW_KEY}", "GetObject, signed with another secret key", source, False,
        signed_get(world, raw_keys, RAW_KEY, secret="not-the-vended-secret"))

    curated_keys = vended_keys(world, Principal.PREPROCESS, "READ_WRITE", CURATED_TABLE)
    source, part = "vended READ_WRITE on the curated table", "curated/tables/risk_factor_instructions/part-1.parquet"
    payload = b"governed bytes " * 1500  # three chunks of 8 KiB and the final empty one
    add("preprocess", f"{bucket}/{part}", "PutObject, chunk-signed (as SDK v2 under S3A sends over HTTP)", source, True,
        chunk_signed_put(world, curated_keys, part, payload))
    add("preprocess", f"{bucket}/{part}", "PutObject, chunk-signed, a chunk altered in transit", source, False,
        chunk_signed_put(world, curated_keys, part, payload, alter_in_transit=True))
    add("preprocess", f"{bucket}/{part}", "PutObject, body altered after its SHA-256 was signed", source, False,
        body_altered_put(world, curated_keys, part))

    expiring = vended_keys(world, Principal.PREPROCESS, "READ", RAW_TABLE)
    stale = s3_attempts(world, expiring)
    add("preprocess", f"{bucket}/{RAW_KEY}", "GetObject", "vended READ on the raw table, before expiry", True,
        stale["get"](RAW_KEY))
    add("preprocess", f"{bucket}/{RAW_KEY}", "GetObject", "vended READ on the raw table, after expiry", False,
        lambda: (world.expire({expiring["aws_access_key_id"]}), stale["get"](RAW_KEY)()))
    return probes


def _write_log(logs, group: str, stream: str) -> None:
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": 1, "message": "probe"}])


def test_every_probe_is_refused_or_allowed_exactly_as_the_design_says(enforced, capsys):
    world, own = enforced
    outcomes = pr.run(enforcement_probes(world, own))
    with capsys.disabled():
        print("\n" + pr.table(outcomes))
    assert [o for o in outcomes if o.unexpected] == []
    assert sum(o.actual == "refused" for o in outcomes) > sum(o.actual == "allowed" for o in outcomes) > 5
    assert all(c["access_key_id"].startswith("ASIA") for c in world.databricks.vended)


def test_the_payload_check_accepts_the_s3_reference_example_and_nothing_altered():
    """The chunked upload example of the S3 API reference ("Signature Calculations for the Authorization Header:
    Transferring Payload in Multiple Chunks", Example: PUT Object), with its published signatures."""
    secret, scope = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524/us-east-1/s3/aws4_request"
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-date": "20130524T000000Z",
               "x-amz-decoded-content-length": "66560", "content-encoding": "aws-chunked"}
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    chunks = [(65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
              (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
              (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")]
    body = b"".join(f"{n:x};chunk-signature={sig}\r\n".encode() + b"a" * n + b"\r\n" for n, sig in chunks)
    assert len(body) == 66824  # the example's Content-Length
    assert verify_s3_payload(headers, body, seed, scope, secret) == b"a" * 66560

    for altered, code in [(body[:100] + b"b" + body[101:], "SignatureDoesNotMatch"),  # a byte of chunk one
                          (body.replace(chunks[1][1].encode(), chunks[2][1].encode()), "SignatureDoesNotMatch"),
                          (body[:-len(b"0;chunk-signature=") - 68], "IncompleteBody")]:
        with pytest.raises(PayloadRefused) as refused:
            verify_s3_payload(headers, altered, seed, scope, secret)
        assert refused.value.code == code
    with pytest.raises(PayloadRefused, match="SignatureDoesNotMatch"):
        verify_s3_payload(headers, body, "0" * 64, scope, secret)  # another seed: the chain breaks at chunk one
    plain = {"x-amz-content-sha256": "a591a6d40bf420404a011733cfb7b190d62c65bf0bcda32b57b277d9ad9f146e"}  # "Hello World"
    assert verify_s3_payload(plain, b"Hello World", seed, scope, secret) == b"Hello World"
    with pytest.raises(PayloadRefused, match="XAmzContentSHA256Mismatch"):
        verify_s3_payload(plain, b"Hello world", seed, scope, secret)
    with pytest.raises(PayloadRefused, match="BadDigest"):
        verify_s3_payload({**plain, "x-amz-checksum-crc32": "AAAAAA=="}, b"Hello World", seed, scope, secret)
