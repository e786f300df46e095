"""Spark as the pinned EMR release runs it, on this machine: pyspark's Spark with the release's Hadoop client, S3A and
AWS SDK v2 in place of the Hadoop that pyspark bundles, and the project's S3A credentials provider built from source."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

from governed_ft_dagster.stack import jars
from governed_ft_dagster.stack.errors import StackError
from governed_ft_dagster.stack.versions import AWS_SDK_V2_VERSION, HADOOP_VERSION

# pyspark's own Hadoop (3.3.4 in Spark 3.5's PyPI build), replaced whole by the release's.
PYSPARK_HADOOP = re.compile(r"hadoop-(client-api|client-runtime|shaded-guava|yarn-server-web-proxy)-[\d.]+\.jar")
PROVIDER_SOURCES = ("VendedCredentialsProvider.java", "VendedCredentialsClientFactory.java")
PROVIDER_JAR = "governed-ft-s3a-credentials.jar"
JAVA_RELEASE = "17"  # the release's Amazon Corretto 17
MARKER = ".complete"


def pyspark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def spark_home(home: Path, s3a: bool = False) -> Path:
    """A SPARK_HOME for spark-submit and in-process sessions: pyspark's bin, Python and jars, the release's Hadoop
    client in place of pyspark's, and with s3a its hadoop-aws and SDK v2 bundle; built once per content."""
    replacements = [p for group in ("hadoop", *(("s3a",) if s3a else ())) for p in jars.classpath(home, group)]
    base = pyspark_home()
    kept = sorted(p for p in (base / "jars").glob("*.jar") if not PYSPARK_HADOOP.fullmatch(p.name))
    key = hashlib.sha256("\n".join(map(str, [base, *kept, *replacements])).encode()).hexdigest()[:16]
    target = home / "spark-runtime" / key
    if (target / MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".spark-home-") as tmp:
        staged = Path(tmp) / "home"
        (staged / "jars").mkdir(parents=True)
        for name in ("bin", "python"):
            (staged / name).symlink_to(base / name, target_is_directory=True)
        for jar in (*kept, *replacements):
            (staged / "jars" / jar.name).symlink_to(jar.resolve())
        (staged / MARKER).write_text(f"pyspark {base}; Hadoop {HADOOP_VERSION}{'; S3A' if s3a else ''}\n")
        try:
            staged.rename(target)
        except OSError:
            if not (target / MARKER).exists():  # built by another process meanwhile: keep theirs
                raise
    return target


def spark_submit(spark_home_dir: Path) -> Path:
    return spark_home_dir / "bin" / "spark-submit"


def provider_sources() -> dict[str, str]:
    folder = resources.files("governed_ft_dagster.stack").joinpath("java")
    return {name: folder.joinpath(name).read_text() for name in PROVIDER_SOURCES}


def provider_key() -> str:
    """What decides the provider jar's content: its sources, the Java release and the APIs it is compiled against."""
    recipe = {"sources": provider_sources(), "java_release": JAVA_RELEASE, "hadoop": HADOOP_VERSION,
              "aws_sdk": AWS_SDK_V2_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def credentials_provider_jar(home: Path, javac: str | None = None) -> Path:
    """The S3A credentials provider and client factory compiled from the package's sources with javac against the
    release's Hadoop client, S3A and SDK v2 (jar groups 'hadoop' and 's3a'); a reproducible jar, built once per
    provider_key()."""
    target = home / "jars" / "s3a-provider" / provider_key()[:16] / PROVIDER_JAR
    if target.is_file():
        return target
    javac = javac or shutil.which("javac")
    if not javac:
        raise StackError("javac is not on PATH; install a JDK 17 (`apt-get install -y openjdk-17-jdk-headless`) so "
                         "the S3A credentials provider can be built from its source")
    compile_path = [p for group in ("hadoop", "s3a") for p in jars.classpath(home, group)
                    if p.name.startswith(("hadoop-client-api-", "hadoop-aws-", "bundle-"))]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        classes, sources = Path(tmp) / "classes", []
        for name, text in provider_sources().items():
            sources.append(Path(tmp) / name)
            sources[-1].write_text(text)
        proc = subprocess.run([javac, "--release", JAVA_RELEASE, "-nowarn", "-d", str(classes),
                               "-cp", ":".join(map(str, compile_path)), *map(str, sources)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise StackError(f"javac could not build the S3A credentials provider: {proc.stderr.strip()[-2000:]}")
        built = Path(tmp) / PROVIDER_JAR
        with zipfile.ZipFile(built, "w", zipfile.ZIP_DEFLATED) as jar:
            for path in sorted(p for p in classes.rglob("*.class")):
                info = zipfile.ZipInfo(path.relative_to(classes).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
                jar.writestr(info, path.read_bytes())
        built.replace(target)
    return target
