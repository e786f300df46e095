"""Pinned versions of everything the local stack fetches from Maven Central."""

from __future__ import annotations

from dataclasses import dataclass

# EMR Serverless emr-7.10.0: Spark 3.5.5 / Scala 2.12 and /usr/bin/python3.11 on Amazon Linux 2023 (the packed
# job environment links to it). Delta 3.2.1 is the first Delta the catalog connector 0.2.1 can create tables with.
EMR_RELEASE_LABEL = "emr-7.10.0"
EMR_SPARK_VERSION = "3.5.5"
SPARK_VERSION = "3.5.3"
SCALA_BINARY = "2.12"
DELTA_VERSION = "3.2.1"
HADOOP_VERSION = "3.3.4"
AWS_SDK_BUNDLE_VERSION = "1.12.262"
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
        Artifact("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION, transitive=False),
        Artifact("com.amazonaws", "aws-java-sdk-bundle", AWS_SDK_BUNDLE_VERSION, transitive=False),
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
