"""The base model: Ministral 3 3B in production, a tiny model of the same family locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

BASE_MODEL_ID = "mistralai/Ministral-3-3B-Instruct-2512"
CONTEXT_LENGTH = 1024
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
TINY_MARKER = "governed_ft_tiny_base.json"
# Written by `governed-ft aws stage-model` into the staged folder: which hub model and revision the files are.
STAGED_MARKER = "governed_ft_staged_model.json"
# The tiny base starts from random weights: at the production learning rate its LoRA barely moves in one epoch
# (8.3538 -> 8.3237 on the demo). These values make the local demo's adapter learn; production keeps its defaults.
TINY_FINETUNE_DEFAULTS = {"learning_rate": 1e-2, "epochs": 2.0, "gradient_checkpointing": False}

# Mistral-style chat template: system prompt block, [INST] user [/INST] assistant</s>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ message['content'] }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ message['content'] }}[/INST]"
    "{% elif message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
)


def tiny_config(vocab_size: int):
    """A Ministral3 text decoder of a few layers with the production module names and YaRN RoPE."""
    from transformers import Ministral3Config

    return Ministral3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4 * CONTEXT_LENGTH,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        rope_parameters={"rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 4.0,
                         "original_max_position_embeddings": CONTEXT_LENGTH, "beta_fast": 32.0, "beta_slow": 1.0,
                         "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1},
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """A byte-level BPE tokenizer trained on the corpus, with Mistral's control tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", model_max_length=CONTEXT_LENGTH,
                                        additional_special_tokens=list(SPECIAL_TOKENS[4:]))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_base(texts: Iterable[str], out_dir: Path, vocab_size: int = 4096, seed: int = 0) -> Path:
    """Write a randomly initialised tiny base model and its corpus-trained tokenizer to out_dir."""
    import torch
    from transformers import Ministral3ForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    model = Ministral3ForCausalLM(tiny_config(len(tokenizer)))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / TINY_MARKER).write_text(json.dumps({"family": "ministral3", "production_base": BASE_MODEL_ID,
                                                   "seed": seed, "vocab_size": len(tokenizer)}))
    return out_dir


def staged_identity(model_dir: str | Path) -> dict[str, str]:
    """The hub id and revision a staged model folder holds ({} for any other folder or a hub id)."""
    marker = Path(model_dir) / STAGED_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def load_tokenizer(model_ref: str | Path):
    """The base model's tokenizer: a local tiny base directory or the production hub id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_ref))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model_ref: str | Path, dtype=None, quantization_config=None):
    """The base model's text decoder for causal-LM training, from a hub id or a local directory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_ref))
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if config.model_type == "mistral3":
        from transformers import Mistral3ForConditionalGeneration

        return Mistral3ForConditionalGeneration.from_pretrained(str(model_ref), **kwargs)
    return AutoModelForCausalLM.from_pretrained(str(model_ref), **kwargs)
