"""Turn the project's own errors into one readable Dagster failure, without a stack trace first."""

import contextlib
from typing import Iterator

import dagster as dg

from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError
from governed_ft_dagster.edgar.client import EdgarError
from governed_ft_dagster.settings import SettingsError
from governed_ft_dagster.stack.errors import StackError

READABLE = (CatalogError, EdgarError, SettingsError, StackError)


@contextlib.contextmanager
def readable_failures() -> Iterator[None]:
    """Re-raise known errors as dg.Failure whose description is the error's own sentence."""
    try:
        yield
    except READABLE as exc:
        metadata = {"error_type": dg.MetadataValue.text(type(exc).__name__)}
        if isinstance(exc, CatalogPermissionError):
            metadata.update(principal=dg.MetadataValue.text(exc.principal),
                            securable=dg.MetadataValue.text(exc.securable),
                            missing_privileges=dg.MetadataValue.text(", ".join(exc.privileges)))
        raise dg.Failure(description=str(exc), metadata=metadata, allow_retries=False) from None
