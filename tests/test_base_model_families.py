"""Any base model: LoRA targets, chat template and context from the model itself, the registered name from the
settings, and a second architecture family (a tiny random Qwen2) through the whole local graph by settings alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from governed_ft_dagster.settings import SettingsError, load_settings
from governed_ft_dagster.training.base_model import (
    LORA_TARGET_MODULES,
    STAGED_MARKER,
    context_length,
    load_tokenizer,
)
from governed_ft_dagster.training.packing import IGNORE_INDEX, tokenize_chat
from governed_ft_dagster.training.trainer import lora_target_modules
from conftest import link_group
from test_packing import chat_records, corpus_texts, tiny_base  # noqa: F401  (tiny_base: session fixture)

# Qwen's ChatML template as Qwen2 tokenizers ship it: no generation markers, so the assistant's tokens are found by
# tokenising conversation prefixes.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
QWEN_RUN = {"max_steps": 12, "epochs": 100.0, "per_device_batch_size": 2, "learning_rate": 2e-2,
            "lr_scheduler": "constant", "gradient_checkpointing": False, "save_steps": 50, "seed": 7}


def build_tiny_qwen2(texts: list[str], out_dir: Path, vocab_size: int = 2048, chat_template: str | None =
                     QWEN_CHAT_TEMPLATE, max_positions: int = 2048) -> Path:
    """A randomly initialised two-layer Qwen2 with a byte-level BPE trained on texts: a folder like a hub download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        model_max_length=1024)
    if chat_template:
        tokenizer.chat_template = chat_template
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory) -> Path:
    return build_tiny_qwen2(corpus_texts(), tmp_path_factory.mktemp("bases") / "tiny-qwen2")


def test_lora_targets_are_every_projection_of_the_blocks_or_the_override(tiny_base, tiny_qwen2):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    assert lora_target_modules(AutoModelForCausalLM.from_pretrained(tiny_base)) == list(LORA_TARGET_MODULES)
    qwen = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    assert lora_target_modules(qwen) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                         "down_proj"]
    assert lora_target_modules(qwen, "q_proj, v_proj") == ["q_proj", "v_proj"]
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64))
    assert lora_target_modules(gpt2) == ["c_attn", "c_proj", "c_fc"]  # Conv1D projections; never lm_head


def test_the_context_is_1024_tokens_within_what_the_model_takes(tiny_base, tiny_qwen2):
    from transformers import AutoConfig, Qwen2Config

    assert context_length(AutoConfig.from_pretrained(tiny_base), load_tokenizer(tiny_base)) == 1024
    short = Qwen2Config(max_position_embeddings=512)
    assert context_length(short) == 512
    assert context_length(short, requested=256) == 256
    with pytest.raises(ValueError, match="max_length 2048 is longer than the 512 tokens the base model takes"):
        context_length(short, requested=2048)


def test_the_chat_template_is_the_tokenizers_own_or_the_override(tmp_path, tiny_qwen2):
    messages = chat_records(2)[0]["messages"]
    answer = messages[-1]["content"]
    own = load_tokenizer(tiny_qwen2)  # ChatML without generation markers: found by re-tokenising prefixes
    example, outcome = tokenize_chat(own, messages)
    assert outcome == "ok"
    assert own.decode([t for t in example.labels if t != IGNORE_INDEX]) == f"{answer}<|im_end|>\n"

    bare = build_tiny_qwen2(corpus_texts()[:200], tmp_path / "no-template", vocab_size=512, chat_template=None)
    with pytest.raises(ValueError, match="has no chat template; set chat_template to one of mistral, chatml"):
        load_tokenizer(bare)
    chatml = load_tokenizer(bare, "chatml")  # the built-in ChatML with generation markers
    example, _ = tokenize_chat(chatml, messages)
    assert chatml.decode([t for t in example.labels if t != IGNORE_INDEX]) == f"{answer}<|im_end|>"
    template = tmp_path / "template.jinja"
    template.write_text(QWEN_CHAT_TEMPLATE)
    assert load_tokenizer(bare, str(template)).chat_template == QWEN_CHAT_TEMPLATE
    with pytest.raises(ValueError, match="neither a built-in template"):
        load_tokenizer(bare, "llama9")


def test_the_registered_name_follows_the_base_model_setting(tmp_path, tiny_qwen2):
    from governed_ft_dagster.defs.build import build_defs

    home = {"GOVERNED_FT_HOME": str(tmp_path / "state")}
    staged = tmp_path / "staged" / "ministral"
    staged.mkdir(parents=True)
    (staged / STAGED_MARKER).write_text(json.dumps({"id": "mistralai/Ministral-3-3B-Instruct-2512",
                                                    "revision": "0" * 40}))
    cases = [
        ({}, "ml.tiny_ministral3_sec_risk_factors"),
        ({"GOVERNED_FT_DEPLOYMENT": "aws"}, "ml.ministral_3b_sec_risk_factors"),
        ({"GOVERNED_FT_BASE_MODEL": str(tiny_qwen2)}, "ml.tiny_qwen2_sec_risk_factors"),
        ({"GOVERNED_FT_BASE_MODEL": str(staged)}, "ml.ministral_3b_sec_risk_factors"),
        ({"GOVERNED_FT_BASE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct", "GOVERNED_FT_MODEL_REVISION": "a" * 40},
         "ml.qwen2_5_0_5b_instruct_sec_risk_factors"),
        ({"GOVERNED_FT_MODEL_NAME": "ml.risk_factors_demo"}, "ml.risk_factors_demo"),
    ]
    for env, expected in cases:
        settings = load_settings({**home, **env})
        assert settings.model_name == expected, env
        assert build_defs(settings).resources["registry"].model_name == expected, env
    with pytest.raises(SettingsError, match="pin its revision with GOVERNED_FT_MODEL_REVISION"):
        load_settings({**home, "GOVERNED_FT_BASE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct"})
    with pytest.raises(SettingsError, match="'raw.models' is not a registered model name"):
        load_settings({**home, "GOVERNED_FT_MODEL_NAME": "raw.models"})


def test_a_qwen2_base_goes_through_the_whole_local_graph_by_settings_alone(running_stack, spark_home, edgar,
                                                                           tiny_qwen2):
    import dagster as dg

    from governed_ft_dagster.catalog.base import Principal
    from governed_ft_dagster.cli.lineage import read_lineage
    from governed_ft_dagster.defs.resources import local_resources
    from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE
    from governed_ft_dagster.lineage.derive import upstream_chain
    from governed_ft_dagster.stack.bootstrap import bootstrap
    from local_graph import run_local_graph

    for group in ("spark", "hadoop"):
        link_group(running_stack.home, spark_home, group)
    bootstrap(running_stack)
    stack = running_stack.settings
    settings = load_settings({"GOVERNED_FT_HOME": str(stack.home), "GOVERNED_FT_UC_PORT": str(stack.uc_port),
                              "GOVERNED_FT_CATALOG": stack.catalog_name, "GOVERNED_FT_DEPLOYMENT": "local",
                              "GOVERNED_FT_BASE_MODEL": str(tiny_qwen2)})
    resources = {**local_resources(settings), "edgar": edgar}
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_local_graph(instance, resources, QWEN_RUN)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
    trained = {k: v.value for k, v in result.asset_materializations_for_node("finetuned_lora_model")[0]
               .metadata.items()}
    registered = {k: v.value for k, v in result.asset_materializations_for_node("uc_model_version")[0]
                  .metadata.items()}
    assert trained["base_model"] == str(tiny_qwen2) and trained["hyperparameters"]["base_model"] == str(tiny_qwen2)
    catalog = settings.catalog_name
    model = f"{catalog}.ml.tiny_qwen2_sec_risk_factors"
    assert (registered["model_name"], registered["model_version"]) == (model, 1)

    client = resources["catalog"].client(Principal.REGISTRAR)
    found = client._request("GET", f"/api/2.1/unity-catalog/models/{model}/versions/1")  # type: ignore[attr-defined]
    assert found["model_name"] == "tiny_qwen2_sec_risk_factors"
    listed = client._request("GET", "/api/2.1/unity-catalog/models",  # type: ignore[attr-defined]
                             params={"catalog_name": catalog, "schema_name": "ml"})
    assert [m["name"] for m in listed.get("registered_models", [])] == ["tiny_qwen2_sec_risk_factors"]
    graph, _ = read_lineage(settings, model, "1")
    chain = upstream_chain(graph, model, "1")
    assert chain["curated_table"]["full_name"] == f"{catalog}.{CURATED_TABLE}"
    assert chain["raw_table"]["full_name"] == f"{catalog}.{RAW_TABLE}"
    assert chain["training_run"] and chain["preprocessing_run"]
