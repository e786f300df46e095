"""The base model: Ministral 3 3B in production, a tiny model of the same family locally, or any causal LM.

What training needs from a base (its LoRA targets, chat template and context) is read from the model's config and
tokenizer, each with an override.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

BASE_MODEL_ID = "mistralai/Ministral-3-3B-Instruct-2512"
# The training context: this many tokens unless the model allows fewer or max_length asks otherwise.
CONTEXT_LENGTH = 1024
# What the target-module derivation yields for Ministral 3 (and most decoders): every projection of each block.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
TINY_MARKER = "governed_ft_tiny_base.json"
TINY_FAMILY = "ministral3"  # the architecture of the tiny local base: the production base's
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
# ChatML (Qwen and others), with generation markers so the assistant's tokens are found without re-tokenising.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_TEMPLATES = {"mistral": CHAT_TEMPLATE, "chatml": CHATML_TEMPLATE}


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
    (out_dir / TINY_MARKER).write_text(json.dumps({"family": TINY_FAMILY, "production_base": BASE_MODEL_ID,
                                                   "seed": seed, "vocab_size": len(tokenizer)}))
    return out_dir


def tiny_identity(model_dir: str | Path) -> dict[str, Any]:
    """The tiny base's marker (its family, the production base it stands for); {} for any other folder."""
    marker = Path(model_dir) / TINY_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def staged_identity(model_dir: str | Path) -> dict[str, str]:
    """The hub id and revision a staged model folder holds ({} for any other folder or a hub id)."""
    marker = Path(model_dir) / STAGED_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def load_tokenizer(model_ref: str | Path, chat_template: str | None = None):
    """The base model's tokenizer (a local directory or a hub id), with its own chat template or the override.

    chat_template: empty for the tokenizer's own, a built-in name (mistral, chatml) or the path of a Jinja file.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_ref))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = resolve_chat_template(chat_template)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {model_ref} has no chat template; set chat_template to one of "
                         f"{', '.join(CHAT_TEMPLATES)} or to the path of a Jinja template file")
    return tokenizer


def resolve_chat_template(name_or_path: str) -> str:
    """A built-in chat template by name, or the text of a template file."""
    if name_or_path in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ValueError(f"chat_template {name_or_path!r} is neither a built-in template ({', '.join(CHAT_TEMPLATES)}) "
                         "nor a template file")
    return path.read_text()


def text_config(config: Any) -> Any:
    """The decoder's own config (the text config of a vision-language model)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def model_context_limit(config: Any, tokenizer: Any = None) -> int | None:
    """The longest sequence the model takes: its position limit, lowered by the tokenizer's stated maximum."""
    limits = [getattr(text_config(config), "max_position_embeddings", None)]
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and stated < 10**7:  # transformers states "no limit" as a huge number
        limits.append(stated)
    known = [int(limit) for limit in limits if limit]
    return min(known) if known else None


def context_length(config: Any, tokenizer: Any = None, requested: int | None = None) -> int:
    """The training context: requested (refused above the model's limit), else CONTEXT_LENGTH within the limit."""
    limit = model_context_limit(config, tokenizer)
    if requested:
        if limit is not None and requested > limit:
            raise ValueError(f"max_length {requested} is longer than the {limit} tokens the base model takes")
        return int(requested)
    return min(CONTEXT_LENGTH, limit) if limit else CONTEXT_LENGTH


def load_base_model(model_ref: str | Path, dtype=None, quantization_config=None,
                    attn_implementation: str | None = None):
    """The base model's text decoder for causal-LM training, from a hub id or a local directory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_ref))
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if config.model_type == "mistral3":
        from transformers import Mistral3ForConditionalGeneration

        return Mistral3ForConditionalGeneration.from_pretrained(str(model_ref), **kwargs)
    return AutoModelForCausalLM.from_pretrained(str(model_ref), **kwargs)
