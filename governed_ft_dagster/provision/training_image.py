"""The training job's container: the AWS Deep Learning Container for PyTorch training, looked up with the sagemaker SDK."""

from __future__ import annotations

from governed_ft_dagster.provision import ProvisionError

FRAMEWORK = "pytorch"
# pytorch-training 2.9.0 for SageMaker: CPython 3.12.10 at /usr/local/bin/python3, torch 2.9.0, CUDA 13.0,
# Ubuntu 22.04 (glibc 2.35); the newest PyTorch training DLC the pinned sagemaker SDK lists for Python 3.12.
FRAMEWORK_VERSION = "2.9.0"
PY_VERSION = "py312"
PYTHON_VERSION = "3.12"
GLIBC = (2, 35)
IMAGE_SCOPE = "training"


def image_uri(region: str, instance_type: str) -> str:
    """The DLC's ECR URI for the region and instance type (GPU or CPU build), from the sagemaker SDK's image table."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(framework=FRAMEWORK, region=region, version=FRAMEWORK_VERSION,
                                   py_version=PY_VERSION, instance_type=instance_type, image_scope=IMAGE_SCOPE)
    except ValueError as exc:
        reason = str(exc).split(". ")[0].rstrip(".")
        raise ProvisionError(f"no PyTorch {FRAMEWORK_VERSION} {PY_VERSION} training image for region {region!r} and "
                             f"instance type {instance_type!r} ({reason}); pick another region or "
                             "instance type, or set image_uri to an image built on that container") from None
