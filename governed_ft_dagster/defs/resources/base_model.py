"""The base model: a tiny local model of the Ministral 3 family, the production model, or any causal LM."""

from pathlib import Path
from typing import Any, Optional, TypeVar

import dagster as dg
from pydantic import Field

from governed_ft_dagster.training.base_model import BASE_MODEL_ID, TINY_MARKER, build_tiny_base

ConfigT = TypeVar("ConfigT", bound=dg.Config)
# What a tokenizer folder needs (the Spark workers count tokens with it); the weights stay out.
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "chat_template.*", "*.model", "vocab*", "merges.txt",
                   "added_tokens.json", "config.json")


class BaseModelResource(dg.ConfigurableResource):
    """Where the base model and its tokenizer come from; the tokenizer counts tokens for the curated step too."""

    model_ref: str = Field(default=BASE_MODEL_ID, description="Hub id or local directory of the base model.")
    revision: Optional[str] = Field(default=None, description="Pinned hub revision (40-hex commit) of a hub id.")
    tokenizer_dir: Optional[str] = Field(default=None, description="Local directory with the tokenizer files; default: model_ref when it is a directory.")
    build_tiny_if_missing: bool = Field(default=False, description="Build the tiny local base at model_ref when absent.")
    tiny_corpus_dir: Optional[str] = Field(default=None, description="Folder of documents the tiny tokenizer is trained on.")
    finetune_defaults: dict[str, Any] = Field(default_factory=dict, description="Fine-tuning values this base needs instead of the production defaults; values set in the run config still win.")
    lora_target_modules: list[str] = Field(default_factory=list, description="Modules LoRA adapts; empty: every "
                                           "linear projection of the model's decoder blocks.")
    chat_template: Optional[str] = Field(default=None, description="Chat template instead of the tokenizer's own: "
                                         "mistral, chatml, or a template file.")

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

    def job_hyperparameters(self) -> dict[str, str]:
        """What the training job is told about its base: the reference, its revision and the overrides set."""
        values = {"base_model": self.ensure()}
        if self.revision:
            values["base_model_revision"] = self.revision
        if self.lora_target_modules:
            values["lora_target_modules"] = ",".join(self.lora_target_modules)
        if self.chat_template:
            values["chat_template"] = self.chat_template
        return values

    def tokenizer_path(self) -> str:
        self.ensure()
        if self.tokenizer_dir:
            return self.tokenizer_dir
        if Path(self.model_ref).is_dir():
            return self.model_ref
        if self.revision:
            from huggingface_hub import snapshot_download

            return snapshot_download(self.model_ref, revision=self.revision, allow_patterns=list(TOKENIZER_FILES))
        raise dg.Failure(description=(f"the tokenizer of {self.model_ref} must be a local directory for Spark workers; "
                                      "pin the model's revision to download it, or set tokenizer_dir"))


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
