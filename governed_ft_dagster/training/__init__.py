"""Base model, tokenizer and LoRA training logic (no Dagster imports)."""
