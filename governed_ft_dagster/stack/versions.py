"""Pinned versions of everything the local stack fetches from Maven Central."""

from __future__ import annotations

from dataclasses import dataclass

# EMR Serverless emr-7.10.0, per the EMR release guide ("Application versions in Amazon EMR 7.x releases", "Hadoop
# version history"): Spark 3.5.5-amzn-1 / Scala 2.12.18, Hadoop 3.4.1-amzn-2 (S3A on the AWS SDK for Java v2),
# AWS SDK for Java 2.31.48 and 1.12.782, Delta 3.3.0-amzn-2, Python 3.9 and 3.11 on Amazon Linux 2023 (the packed job
# environment links to /usr/bin/python3.11). The job stages its own Delta: 3.2.1 is the first Delta the catalog
# connector 0.2.1 can create tables with, and local Spark runs it too.
EMR_RELEASE_LABEL = "emr-7.10.0"
EMR_SPARK_VERSION = "3.5.5"
EMR_HADOOP_VERSION = "3.4.1"
EMR_AWS_SDK_V2_VERSION = "2.31.48"
SPARK_VERSION = "3.5.3"
SCALA_BINARY = "2.12"
DELTA_VERSION = "3.2.1"
# Local Spark runs the release's Hadoop in place of the 3.3.4 that pyspark bundles (stack/spark_runtime.py).
HADOOP_VERSION = EMR_HADOOP_VERSION
# The release's SDK line (2.31); 2.31.48 itself is not served by the Maven registry these machines reach.
AWS_SDK_V2_VERSION = "2.31.16"
UC_SERVER_VERSION = "0.4.1"
UC_SPARK_CONNECTOR_VERSION = "0.2.1"
JACKSON_VERSION = "2.15.4"


@dataclass(frozen=True)
class Artifact:
    """One Maven coordinate."""

    group: str
    artifact: str
    version: str
    transitive: bool = True

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def jar_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"


JAR_GROUPS: dict[str, tuple[Artifact, ...]] = {
    "uc-server": (
        Artifact("io.unitycatalog", "unitycatalog-server", UC_SERVER_VERSION),
        Artifact("com.fasterxml.jackson.core", "jackson-databind", JACKSON_VERSION),
    ),
    "spark": (
        Artifact("io.delta", f"delta-spark_{SCALA_BINARY}", DELTA_VERSION, transitive=False),
        Artifact("io.delta", "delta-storage", DELTA_VERSION, transitive=False),
        Artifact("org.antlr", "antlr4-runtime", "4.9.3", transitive=False),
    ),
    # The release's Hadoop client, replacing pyspark's own (its shaded runtime carries hadoop-shaded-guava).
    "hadoop": (
        Artifact("org.apache.hadoop", "hadoop-client-api", HADOOP_VERSION, transitive=False),
        Artifact("org.apache.hadoop", "hadoop-client-runtime", HADOOP_VERSION, transitive=False),
    ),
    # The release's S3A and the SDK it is built on: only the aws path reads s3:// (about 650 MB, the SDK bundle).
    "s3a": (
        Artifact("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION, transitive=False),
        Artifact("software.amazon.awssdk", "bundle", AWS_SDK_V2_VERSION, transitive=False),
    ),
    # The catalog's Spark connector and its REST client; everything else they need is in Spark 3.5.
    "uc-spark": (
        Artifact("io.unitycatalog", f"unitycatalog-spark_{SCALA_BINARY}", UC_SPARK_CONNECTOR_VERSION, transitive=False),
        Artifact("io.unitycatalog", "unitycatalog-client", UC_SPARK_CONNECTOR_VERSION, transitive=False),
    ),
}


# Jars the EMR release does not ship, staged under the code prefix and put on --jars, pinned by content.
EMR_JAR_SHA256: dict[str, str] = {
    f"delta-spark_{SCALA_BINARY}-{DELTA_VERSION}.jar": "088e187da689a347a6a8556dcb22318e3dfcfb995d807f5e2c19b4d0a7ee9499",
    f"delta-storage-{DELTA_VERSION}.jar": "4dcc179fc4076bda5060a4038f979c53e1f5916cf04971e28f9441db390763c7",
}
EMR_JARS: tuple[str, ...] = tuple(EMR_JAR_SHA256)
