"""The base model: a tiny local model of the Ministral 3 family, or the production model by its hub id."""

from pathlib import Path
from typing import Any, Optional, TypeVar

import dagster as dg
from pydantic import Field

from governed_ft_dagster.training.base_model import BASE_MODEL_ID, TINY_MARKER, build_tiny_base

ConfigT = TypeVar("ConfigT", bound=dg.Config)


class BaseModelResource(dg.ConfigurableResource):
    """Where the base model and its tokenizer come from; the tokenizer counts tokens for the curated step too."""

    model_ref: str = Field(default=BASE_MODEL_ID, description="Hub id or local directory of the base model.")
    tokenizer_dir: Optional[str] = Field(default=None, description="Local directory with the tokenizer files; default: model_ref when it is a directory.")
    build_tiny_if_missing: bool = Field(default=False, description="Build the tiny local base at model_ref when absent.")
    tiny_corpus_dir: Optional[str] = Field(default=None, description="Folder of documents the tiny tokenizer is trained on.")
    finetune_defaults: dict[str, Any] = Field(default_factory=dict, description="Fine-tuning values this base needs instead of the production defaults; values set in the run config still win.")

    def finetune_config(self, config: ConfigT) -> ConfigT:
        """config with this base's defaults for the fields the run config left unset."""
        unset = {k: v for k, v in self.finetune_defaults.items() if k not in config.model_fields_set}
        return type(config)(**{**config.model_dump(include=config.model_fields_set), **unset}) if unset else config

    def ensure(self) -> str:
        """The model reference, building the tiny local base first when asked to."""
        path = Path(self.model_ref)
        if self.build_tiny_if_missing and not (path / TINY_MARKER).exists():
            build_tiny_base(_corpus_texts(self.tiny_corpus_dir), path)
        return self.model_ref

    def tokenizer_path(self) -> str:
        self.ensure()
        if self.tokenizer_dir:
            return self.tokenizer_dir
        if Path(self.model_ref).is_dir():
            return self.model_ref
        raise dg.Failure(description=(f"the tokenizer of {self.model_ref} must be a local directory for Spark workers; "
                                      "download it once and set tokenizer_dir"))


def _corpus_texts(folder: Optional[str]):
    """Visible text of the documents under folder (the local EDGAR sample), a deterministic order."""
    from lxml import html

    if not folder or not Path(folder).is_dir():
        raise dg.Failure(description=f"no corpus folder at {folder!r} to train the tiny tokenizer on; materialize raw_risk_factors first or set tiny_corpus_dir")
    for path in sorted(Path(folder).rglob("*.htm*")):
        try:
            yield html.fromstring(path.read_bytes()).text_content()
        except Exception:
            continue
