"""Staging: everything the cloud jobs run with, content-addressed under the code prefix, and the job parameters."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from governed_ft_dagster.provision import training_image
from governed_ft_dagster.stack import versions

EMR_PYTHON_VERSION = "3.11"
EMR_PYTHON_PREFIX = "/usr"
EMR_PLATFORM = "manylinux_2_34_x86_64"
VENV_PACK_VERSION = "0.2.0"
ENV_RECIPE_VERSION = 1
REQUIREMENTS_FILE = "emr_requirements.txt"
SAGEMAKER_REQUIREMENTS_FILE = "sagemaker_requirements.txt"
SAGEMAKER_PLATFORM = f"manylinux_{training_image.GLIBC[0]}_{training_image.GLIBC[1]}_x86_64"
SAGEMAKER_ENV_NAME = "environment.tar.gz"
SAGEMAKER_ENV_COMPRESSION = 6  # half a gigabyte of packages: level 9 costs twice the time for 2% less
ENV_ALIAS = "environment"
TOKENIZER_ALIAS = "tokenizer"
ENV_PYTHON = f"./{ENV_ALIAS}/bin/python"
MODEL_CHANNEL = "model"
SAGEMAKER_SOURCE_NAME = "sourcedir.tar.gz"

KIND_WHEEL, KIND_SCRIPT, KIND_ENV, KIND_TOKENIZER, KIND_JAR, KIND_SOURCE, KIND_MODEL, KIND_SAGEMAKER_ENV = (
    "wheels", "scripts", "emr-env", "tokenizer", "jars", "sagemaker-source", "models", "sagemaker-env")


def manylinux_platforms(glibc_minor: int) -> tuple[str, ...]:
    """Every platform tag a glibc 2.<minor> system runs: pip does not widen --platform to older tags itself."""
    return tuple(f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 4, -1)) + (
        "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")


_PLATFORMS = manylinux_platforms(34)  # Amazon Linux 2023, EMR Serverless 7.x workers


class NotStaged(Exception):
    """A file a job needs is not under the code prefix."""


class CodeAccessDenied(NotStaged):
    """AWS refused to say whether a staged file is there."""


class BucketUnreachable(Exception):
    """The code prefix could not be consulted at all: no credentials, no endpoint, or the wrong region."""


@dataclass(frozen=True)
class Artifact:
    """One staged object: what it is, where it goes, its bytes' sha256."""

    role: str
    kind: str
    name: str
    uri: str
    sha256: str
    size: int
    path: str = field(default="", compare=False)
    content_key: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("path",)}
        return {k: v for k, v in out.items() if v != ""}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def code_uri(code_prefix: str, kind: str, content_key: str, name: str) -> str:
    """s3://bucket/<prefix>/<kind>/<content key>/<name>: one object per content, never overwritten."""
    return f"{code_prefix.rstrip('/')}/{kind}/{content_key[:16]}/{name}"


def requirements_text(name: str = REQUIREMENTS_FILE) -> str:
    """The pinned closure an environment is built from (the EMR one by default)."""
    return resources.files("governed_ft_dagster.provision").joinpath(name).read_text()


def env_recipe_key() -> str:
    """What decides the EMR environment's content: the lock, the interpreter, the platform, the packing tool."""
    recipe = json.dumps({"requirements": requirements_text(), "python": EMR_PYTHON_VERSION,
                         "python_prefix": EMR_PYTHON_PREFIX, "platform": EMR_PLATFORM,
                         "venv_pack": VENV_PACK_VERSION, "recipe": ENV_RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()


def env_uri(code_prefix: str) -> str:
    return code_uri(code_prefix, KIND_ENV, env_recipe_key(), f"{ENV_ALIAS}.tar.gz")


def sagemaker_env_recipe_key() -> str:
    """What decides the training environment's content: the lock, the container's Python and platform."""
    recipe = json.dumps({"requirements": requirements_text(SAGEMAKER_REQUIREMENTS_FILE),
                         "python": training_image.PYTHON_VERSION, "platform": SAGEMAKER_PLATFORM,
                         "container": [training_image.FRAMEWORK, training_image.FRAMEWORK_VERSION,
                                       training_image.PY_VERSION], "compression": SAGEMAKER_ENV_COMPRESSION,
                         "recipe": ENV_RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()


def sagemaker_env_uri(code_prefix: str) -> str:
    """The staged training environment; its folder alone is the job's `environment` channel."""
    return code_uri(code_prefix, KIND_SAGEMAKER_ENV, sagemaker_env_recipe_key(), SAGEMAKER_ENV_NAME)


def folder_of(uri: str) -> str:
    """The prefix (ending in /) that holds one staged object."""
    return uri.rsplit("/", 1)[0] + "/"


def jar_uri(code_prefix: str, name: str) -> str:
    """The staged URI of a jar the release lacks, addressed by its pinned sha256."""
    if name not in versions.EMR_JAR_SHA256:
        raise NotStaged(f"jar {name} has no pinned sha256 in stack/versions.py EMR_JAR_SHA256")
    return code_uri(code_prefix, KIND_JAR, versions.EMR_JAR_SHA256[name], name)


def provider_jar_uri(code_prefix: str) -> str:
    """The staged URI of the S3A credentials provider, addressed by what decides its content (source and toolchain)."""
    from governed_ft_dagster.stack import spark_runtime

    return code_uri(code_prefix, KIND_JAR, spark_runtime.provider_key(), spark_runtime.PROVIDER_JAR)


def model_uri(code_prefix: str, model_id: str, revision: str) -> str:
    """The staged prefix of the base model at one revision (a folder; SageMaker copies it into a channel)."""
    return f"{code_prefix.rstrip('/')}/{KIND_MODEL}/{model_id}/{revision}/"


def model_complete_uri(uri: str) -> str:
    """The marker written after a model folder's last file, beside the prefix so the channel never copies it."""
    return f"{uri.rstrip('/')}.complete"


def source_uri(code_prefix: str, tarball: bytes) -> str:
    """The staged URI of one sourcedir.tar.gz, addressed by its bytes."""
    return code_uri(code_prefix, KIND_SOURCE, hashlib.sha256(tarball).hexdigest(), SAGEMAKER_SOURCE_NAME)


def build_emr_env(cache_dir: Path, log: Callable[[str], None] = lambda line: None) -> Path:
    """The packed EMR environment for the current recipe, built once per recipe with pip and venv-pack."""
    target = cache_dir / "emr-env" / env_recipe_key()[:16] / f"{ENV_ALIAS}.tar.gz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="emr-env-", dir=target.parent) as tmp:
        venv_dir, lock = Path(tmp) / "venv", Path(tmp) / REQUIREMENTS_FILE
        lock.write_text(requirements_text())
        log(f"building the EMR environment (CPython {EMR_PYTHON_VERSION}, {EMR_PLATFORM}) in {venv_dir}")
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)])
        site = venv_dir / "lib" / f"python{EMR_PYTHON_VERSION}" / "site-packages"
        _pip_install_for(site, lock, EMR_PYTHON_VERSION, _PLATFORMS)
        _link_to_plain_python(venv_dir)
        packed = Path(tmp) / f"{ENV_ALIAS}.tar.gz"
        _run([_venv_pack(), "--prefix", str(venv_dir), "--output", str(packed), "--python-prefix", EMR_PYTHON_PREFIX,
              "--quiet"])
        os.replace(packed, target)
    return target


def build_sagemaker_env(cache_dir: Path, log: Callable[[str], None] = lambda line: None) -> Path:
    """The training environment for the current recipe: one reproducible tar.gz of a site-packages folder, built
    once per recipe for the container's Python and glibc, without the container's own torch."""
    target = cache_dir / KIND_SAGEMAKER_ENV / sagemaker_env_recipe_key()[:16] / SAGEMAKER_ENV_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sagemaker-env-", dir=target.parent) as tmp:
        site, lock = Path(tmp) / "site-packages", Path(tmp) / SAGEMAKER_REQUIREMENTS_FILE
        lock.write_text(requirements_text(SAGEMAKER_REQUIREMENTS_FILE))
        log(f"building the SageMaker training environment (CPython {training_image.PYTHON_VERSION}, "
            f"{SAGEMAKER_PLATFORM}) in {site}")
        _pip_install_for(site, lock, training_image.PYTHON_VERSION, manylinux_platforms(training_image.GLIBC[1]))
        packed = Path(tmp) / SAGEMAKER_ENV_NAME
        packed.write_bytes(tree_tarball(site, SAGEMAKER_ENV_COMPRESSION))
        os.replace(packed, target)
    return target


def _pip_install_for(site: Path, lock: Path, python_version: str, platforms: Iterable[str]) -> None:
    """The lock's wheels for another interpreter and platform into a folder, no scripts, no bytecode."""
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--only-binary=:all:", "--no-compile", "--implementation", "cp", "--python-version", python_version,
          *[arg for tag in platforms for arg in ("--platform", tag)], "--target", str(site), "-r", str(lock)])
    shutil.rmtree(site / "bin", ignore_errors=True)


def _link_to_plain_python(venv_dir: Path) -> None:
    """Point the venv's interpreter links at <base>/bin/python, the one path venv-pack's --python-prefix rewrites whole.

    venv-pack swaps the prefix "<base>/bin/python" for "<python-prefix>/bin/python3.11" by string, so a link to
    <base>/bin/python3.11 would come out as .../python3.113.11.
    """
    home = next(line.split("=", 1)[1].strip() for line in (venv_dir / "pyvenv.cfg").read_text().splitlines()
                if line.split("=", 1)[0].strip().lower() == "home")
    for link in (venv_dir / "bin").iterdir():
        if link.is_symlink() and os.path.isabs(os.readlink(link)):
            link.unlink()
            link.symlink_to(Path(home).parent / "bin" / "python")


def _venv_pack() -> str:
    tool = Path(sys.executable).parent / "venv-pack"
    found = str(tool) if tool.exists() else shutil.which("venv-pack")
    if not found:
        raise RuntimeError(f"venv-pack is not installed; pip install venv-pack=={VENV_PACK_VERSION}")
    return found


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def tree_tarball(folder: Path, compresslevel: int = 9) -> bytes:
    """A reproducible tar.gz of a folder's files (sorted, zeroed times and owners), paths relative to the folder."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=compresslevel) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mode = path.stat().st_size, 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


class CodePrefix:
    """The code prefix on S3: finds what is staged, uploads what is missing (never overwrites)."""

    def __init__(self, s3: Any, code_prefix: str):
        if not code_prefix.startswith("s3://"):
            raise ValueError(f"the code prefix must be an s3:// URI, not {code_prefix!r}")
        self.s3, self.code_prefix = s3, code_prefix

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        bucket, key = split_s3_uri(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            if code in ("403", "AccessDenied", "Forbidden"):
                raise CodeAccessDenied(
                    f"AWS refused s3:GetObject on arn:aws:s3:::{bucket}/{key} (403): this identity lacks s3:GetObject "
                    f"on the code prefix, or s3:ListBucket on {bucket} for a file that is missing; attach the "
                    f"orchestrator policy that `governed-ft aws apply` creates") from None
            if code in ("301", "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                raise BucketUnreachable(f"bucket {bucket} is not in region {self.s3.meta.region_name}; pass the "
                                        "bucket's region with --region or AWS_REGION") from None
            raise
        except (NoCredentialsError, PartialCredentialsError):
            raise BucketUnreachable(f"no AWS credentials to look into s3://{bucket}/; set AWS_PROFILE or "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except NoRegionError:
            raise BucketUnreachable("no AWS region given; pass --region or set AWS_REGION") from None
        except EndpointConnectionError as exc:
            raise BucketUnreachable(f"the S3 endpoint {exc.kwargs.get('endpoint_url', '')} is unreachable; check "
                                    "--region and the network") from None
        return True

    def require(self, uri: str, what: str) -> str:
        """The URI when the object is staged; NotStaged naming the file and the command otherwise."""
        if not self.exists(uri):
            raise NotStaged(f"{what} is not staged at {uri}; run `governed-ft aws stage` with this installation")
        return uri

    def file(self, kind: str, path: Path, what: str = "") -> str:
        """The staged URI of this exact local file (looked up by its sha256)."""
        return self.require(code_uri(self.code_prefix, kind, sha256_file(path), path.name), what or str(path))

    def tree(self, kind: str, folder: Path, name: str) -> str:
        """The staged URI of this exact folder's reproducible tarball."""
        data = tree_tarball(folder)
        return self.require(code_uri(self.code_prefix, kind, hashlib.sha256(data).hexdigest(), name), str(folder))

    def upload(self, artifact: Artifact, dry_run: bool) -> str:
        """'present', 'upload' (dry run) or 'uploaded'."""
        if artifact.kind == KIND_MODEL:
            return self._upload_folder(artifact, dry_run)
        if self.exists(artifact.uri):
            return "present"
        if dry_run:
            return "upload"
        bucket, key = split_s3_uri(artifact.uri)
        self.s3.upload_file(artifact.path, bucket, key, ExtraArgs={"Metadata": {"sha256": artifact.sha256}})
        return "uploaded"

    def _upload_folder(self, artifact: Artifact, dry_run: bool) -> str:
        bucket, prefix = split_s3_uri(artifact.uri)
        complete = split_s3_uri(model_complete_uri(artifact.uri))[1]
        if self.exists(f"s3://{bucket}/{complete}"):
            return "present"
        if dry_run:
            return "upload"
        root = Path(artifact.path)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            self.s3.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())
        self.s3.put_object(Bucket=bucket, Key=complete, Body=artifact.sha256.encode())
        return "uploaded"


def source_artifact(code_prefix: str, source_dir: Path, work_dir: Path) -> Artifact:
    """The SageMaker sourcedir.tar.gz of a source folder, written under work_dir."""
    from governed_ft_dagster.job_code import source_tarball

    source = work_dir / SAGEMAKER_SOURCE_NAME
    source.write_bytes(source_tarball(str(source_dir)))
    return file_artifact(code_prefix, "SageMaker source_dir", KIND_SOURCE, source)


def file_artifact(code_prefix: str, role: str, kind: str, path: Path, content_key: str = "") -> Artifact:
    sha = sha256_file(path)
    return Artifact(role, kind, path.name, code_uri(code_prefix, kind, content_key or sha, path.name), sha,
                    path.stat().st_size, str(path), content_key)


def folder_sha256(folder: Path) -> tuple[str, int]:
    """One sha256 over a folder's relative paths and file hashes, and its size in bytes."""
    digest, size = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
        size += path.stat().st_size
    return digest.hexdigest(), size


def model_artifact(code_prefix: str, folder: Path, model_id: str, revision: str) -> Artifact:
    sha, size = folder_sha256(folder)
    return Artifact("base model weights", KIND_MODEL, model_id, model_uri(code_prefix, model_id, revision), sha, size,
                    str(folder), revision)


JOBS = ("emr", "sagemaker")


def plan(code_prefix: str, work_dir: Path, *, tokenizer_dir: Optional[Path], jar_files: dict[str, Path],
         cache_dir: Path, log: Callable[[str], None] = lambda line: None,
         jobs: Iterable[str] = JOBS, provider_jar: Optional[Path] = None) -> list[Artifact]:
    """Every artifact the jobs run from, built locally (the environment once per recipe) under work_dir."""
    from governed_ft_dagster.job_code import (
        PREPROCESS_SCRIPT,
        PY_FILES_SUFFIX,
        job_script,
        project_wheel,
        training_source_dir,
    )

    jobs = set(jobs)
    artifacts: list[Artifact] = []
    if "sagemaker" in jobs:
        _, source_dir = training_source_dir(work_dir / "sagemaker-source")
        artifacts.append(source_artifact(code_prefix, source_dir, work_dir))
        artifacts.append(file_artifact(code_prefix, "SageMaker Python environment (environment channel)",
                                       KIND_SAGEMAKER_ENV, build_sagemaker_env(cache_dir, log),
                                       content_key=sagemaker_env_recipe_key()))
    if "emr" not in jobs:
        return artifacts
    if tokenizer_dir is None or not Path(tokenizer_dir).is_dir():
        raise NotStaged(f"the Spark job needs the tokenizer files; {tokenizer_dir} is not a folder (--tokenizer-dir)")
    wheel = project_wheel(work_dir / "wheel", PY_FILES_SUFFIX)
    tokenizer = work_dir / f"{TOKENIZER_ALIAS}.tar.gz"
    tokenizer.write_bytes(tree_tarball(tokenizer_dir))
    artifacts[:0] = [
        file_artifact(code_prefix, "project wheel (--py-files, named .zip)", KIND_WHEEL, wheel),
        file_artifact(code_prefix, "EMR entry point", KIND_SCRIPT, job_script(PREPROCESS_SCRIPT)),
        file_artifact(code_prefix, "EMR Python environment (spark.archives)", KIND_ENV, build_emr_env(cache_dir, log),
                      content_key=env_recipe_key()),
        file_artifact(code_prefix, "tokenizer (spark.archives)", KIND_TOKENIZER, tokenizer),
    ]
    for name in versions.EMR_JARS:
        if name not in jar_files:
            raise NotStaged(f"jar {name} was not found locally; run `governed-ft stack fetch` (or set "
                            f"GOVERNED_FT_JAR_MIRROR)")
        artifact = file_artifact(code_prefix, "jar (--jars)", KIND_JAR, jar_files[name])
        if artifact.sha256 != versions.EMR_JAR_SHA256[name]:
            raise NotStaged(f"{jar_files[name]} has sha256 {artifact.sha256}, not the pinned "
                            f"{versions.EMR_JAR_SHA256[name]}")
        artifacts.append(artifact)
    if provider_jar is None:
        raise NotStaged("the Spark job needs the S3A credentials provider jar (built from source by "
                        "`governed-ft aws stage` with a JDK and the release's Hadoop and SDK jars)")
    from governed_ft_dagster.stack import spark_runtime

    artifacts.append(file_artifact(code_prefix, "S3A credentials provider (--jars)", KIND_JAR, provider_jar,
                                   content_key=spark_runtime.provider_key()))
    return artifacts


def spark_submit_parameters(conf: dict[str, str], *, jars: Iterable[str], py_files: Iterable[str],
                            archives: dict[str, str], env: Optional[dict[str, str]] = None) -> str:
    """The sparkSubmitParameters of a staged run: the packed environment as the driver's and executors' Python."""
    conf = dict(conf)
    archives = dict(archives)
    if ENV_ALIAS not in archives:
        raise ValueError(f"the job needs its Python environment in archives[{ENV_ALIAS!r}]")
    conf["spark.archives"] = ",".join(f"{uri}#{alias}" for alias, uri in archives.items())
    for prefix in ("spark.emr-serverless.driverEnv.", "spark.executorEnv."):
        conf[prefix + "PYSPARK_PYTHON"] = ENV_PYTHON
    conf["spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON"] = ENV_PYTHON
    for key, value in (env or {}).items():
        conf[f"spark.emr-serverless.driverEnv.{key}"] = value
        conf[f"spark.executorEnv.{key}"] = value
    tokens = [token for key, value in conf.items() for token in ("--conf", f"{key}={value}")]
    jars, py_files = list(jars), list(py_files)
    if jars:
        tokens += ["--jars", ",".join(jars)]
    if py_files:
        tokens += ["--py-files", ",".join(py_files)]
    spaced = [t for t in tokens if any(c.isspace() for c in t) or not t]
    if spaced:
        raise ValueError(f"EMR Serverless splits sparkSubmitParameters on whitespace; these values contain some or "
                         f"are empty: {spaced}")
    return " ".join(tokens)


def by_kind(artifacts: Iterable[Artifact]) -> dict[str, list[Artifact]]:
    out: dict[str, list[Artifact]] = {}
    for artifact in artifacts:
        out.setdefault(artifact.kind, []).append(artifact)
    return out


def job_parameters(artifacts: list[Artifact], spark_conf: dict[str, str], *, model: Optional[Artifact],
                   entry_program: str) -> dict[str, Any]:
    """The staged parts of StartJobRun and CreateTrainingJob, exactly as the resources send them."""
    kinds = by_kind(artifacts)
    out: dict[str, Any] = {}
    if KIND_SOURCE in kinds:
        hyperparameters = {"sagemaker_program": json.dumps(entry_program),
                           "sagemaker_submit_directory": json.dumps(kinds[KIND_SOURCE][0].uri)}
        if model:
            hyperparameters["base_model_revision"] = json.dumps(model.content_key)
        channels = [model_channel(model.uri)] if model else []
        if KIND_SAGEMAKER_ENV in kinds:
            channels.append(environment_channel(kinds[KIND_SAGEMAKER_ENV][0].uri))
        out["sagemaker_create_training_job"] = {"HyperParameters": hyperparameters, "InputDataConfig": channels}
    if KIND_SCRIPT not in kinds:
        return out
    out["emr_serverless_start_job_run"] = {
        "entryPoint": kinds[KIND_SCRIPT][0].uri,
        "entryPointArguments": ["...", "--tokenizer-dir", TOKENIZER_ALIAS, "..."],
        "sparkSubmitParameters": spark_submit_parameters(
            spark_conf, jars=[a.uri for a in kinds.get(KIND_JAR, [])], py_files=[kinds[KIND_WHEEL][0].uri],
            archives={ENV_ALIAS: kinds[KIND_ENV][0].uri, TOKENIZER_ALIAS: kinds[KIND_TOKENIZER][0].uri}),
    }
    return out


def model_channel(uri: str) -> dict[str, Any]:
    """The training job's input channel with the staged base model (from the code bucket, never governed data)."""
    return _code_channel(MODEL_CHANNEL, uri)


def environment_channel(env_object_uri: str) -> dict[str, Any]:
    """The channel that mounts the staged training environment (its folder holds that one object)."""
    return _code_channel(ENV_ALIAS, folder_of(env_object_uri))


def _code_channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "InputMode": "File", "CompressionType": "None",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}}}
