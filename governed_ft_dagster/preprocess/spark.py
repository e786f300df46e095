"""The curated transformation as small PySpark DataFrame functions (no Dagster): raw sections -> instruction records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from governed_ft_dagster.preprocess import text

__all__ = [
    "OUTPUT_COLUMNS",
    "RAW_SCHEMA",
    "REJECT_COLUMNS",
    "Curation",
    "assign_split",
    "count_tokens",
    "drop_superseded",
    "curate",
    "drop_duplicates_exact",
    "drop_near_duplicates",
    "enforce_token_budget",
    "keep_extracted",
    "normalise",
    "run_curation",
    "split_risk_factors",
    "to_instruction_records",
]

RAW_SCHEMA = (
    "cik string, ticker string, entity_name string, form_type string, is_amendment boolean, fiscal_year int, "
    "fiscal_period string, quarter int, accession_number string, filing_date string, report_date string, "
    "source_url string, status string, risk_factors_text string, text_sha256 string, extractor_version string, "
    "extracted_at string, amends_accession string, superseded_by string"
)
OUTPUT_COLUMNS = ("record_id", "cik", "ticker", "accession_number", "form_type", "fiscal_year", "risk_factor_heading",
                  "messages", "n_tokens", "split", "source_table", "source_version", "run_id", "text_sha256",
                  "amends_accession")
AMENDMENT_COLUMNS = ("amends_accession", "superseded_by")
REJECT_COLUMNS = ("record_id", "cik", "ticker", "accession_number", "form_type", "fiscal_year", "ordinal",
                  "risk_factor_heading", "reason", "detail")
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.8

MESSAGES_TYPE = T.ArrayType(T.StructType([T.StructField("role", T.StringType()),
                                          T.StructField("content", T.StringType())]))
_RISK_FACTORS_TYPE = T.ArrayType(T.StructType([
    T.StructField("ordinal", T.IntegerType()), T.StructField("heading", T.StringType()),
    T.StructField("body", T.StringType()), T.StructField("section", T.StringType()),
    T.StructField("method", T.StringType()),
]))
_CHUNKS_TYPE = T.ArrayType(T.StructType([
    T.StructField("part", T.IntegerType()), T.StructField("parts", T.IntegerType()),
    T.StructField("body", T.StringType()), T.StructField("record_id", T.StringType()),
    T.StructField("messages", MESSAGES_TYPE), T.StructField("n_tokens", T.IntegerType()),
]))
_SIGNATURE_TYPE = T.StructType([T.StructField("shingles", T.ArrayType(T.LongType())),
                                T.StructField("bands", T.ArrayType(T.LongType()))])

# Tokenizers by directory, loaded once per Python worker and reused by every task it runs.
_TOKENIZERS: dict[str, Any] = {}
_PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _load_tokenizer(tokenizer_dir: str):
    """The base model's tokenizer; a plain tokenizers-backed one is loaded without AutoTokenizer's torch import."""
    config = Path(tokenizer_dir) / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text()).get("tokenizer_class") in _PLAIN_TOKENIZER_CLASSES:
        from transformers import TokenizersBackend

        return TokenizersBackend.from_pretrained(tokenizer_dir)
    from governed_ft_dagster.training.base_model import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _tokenizer(tokenizer_dir: str):
    if tokenizer_dir not in _TOKENIZERS:
        tokenizer = _load_tokenizer(tokenizer_dir)
        # Only counted here, never truncated: silence the "longer than the maximum sequence length" warning.
        tokenizer.model_max_length = 1 << 30
        _TOKENIZERS[tokenizer_dir] = tokenizer
    return _TOKENIZERS[tokenizer_dir]


def _token_counts(tokenizer, conversations: list[list[dict[str, str]]]) -> list[int]:
    """Tokens of each conversation rendered with the chat template (prompt and answer)."""
    if not conversations:
        return []
    encoded = tokenizer.apply_chat_template(conversations, tokenize=True)
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return [len(x) for x in ids]


def _token_ends(tokenizer, bare: str) -> list[int]:
    """End offset in bare of each of its tokens."""
    return [end for _, end in tokenizer(bare, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def _filing_order() -> Column:
    """Earliest filing first; accession number and position break ties, so the order is total."""
    return F.struct(F.coalesce(F.col("filing_date"), F.lit("9999-12-31")).alias("d"),
                    F.col("accession_number").alias("a"), F.col("ordinal").alias("o"))


def _rejects(df: DataFrame, reason: Column, detail: Column | None = None) -> DataFrame:
    """Project rows onto the reject schema with a reason (and optional detail)."""
    def col_or_null(name: str, dtype: str) -> Column:
        return F.col(name) if name in df.columns else F.lit(None).cast(dtype)

    return df.select(
        col_or_null("record_id", "string").alias("record_id"), F.col("cik"), F.col("ticker"),
        F.col("accession_number"), F.col("form_type"), F.col("fiscal_year"),
        col_or_null("ordinal", "int").alias("ordinal"),
        col_or_null("risk_factor_heading", "string").alias("risk_factor_heading"),
        reason.alias("reason"), (detail if detail is not None else F.lit(None).cast("string")).alias("detail"),
    )


def drop_superseded(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Leave out rows whose Risk Factors an amendment superseded (its own row is trained on instead)."""
    for name in AMENDMENT_COLUMNS:
        if name not in raw.columns:  # a raw table written before amendments were tracked
            raw = raw.withColumn(name, F.lit(None).cast("string"))
    superseded = F.col("superseded_by").isNotNull()
    return raw.where(~superseded), _rejects(raw.where(superseded), F.lit("superseded"),
                                            F.concat(F.lit("superseded by "), F.col("superseded_by")))


def keep_extracted(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Keep rows whose Risk Factors section was extracted; reject the rest as not_extracted:<status>."""
    ok = F.coalesce(F.col("status") == F.lit("extracted"), F.lit(False))
    rejected = raw.where(~ok)
    return raw.where(ok), _rejects(rejected, F.concat(F.lit("not_extracted:"), F.coalesce(F.col("status"), F.lit("null"))))


@F.udf(T.StringType())
def _clean_udf(value: str | None) -> str:
    return text.clean_section(value)


def normalise(df: DataFrame) -> DataFrame:
    """Add clean_text: NFKC, whitespace with paragraph breaks kept, page furniture and running headers removed."""
    return df.withColumn("clean_text", _clean_udf(F.col("risk_factors_text")))


@F.udf(T.StringType())
def _record_id_udf(accession_number: str, ordinal: int, part: int, parts: int, body: str) -> str:
    return text.record_id(accession_number, ordinal, part, parts, body)


@F.udf(_RISK_FACTORS_TYPE)
def _split_udf(clean: str | None) -> list[tuple]:
    return [(rf.ordinal, rf.heading, rf.body, rf.section, rf.method) for rf in text.split_risk_factors(clean or "")]


def split_risk_factors(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """One row per risk factor (record_id, ordinal, heading, body, section); a filing with none: empty_after_cleaning."""
    with_factors = df.withColumn("_factors", _split_udf(F.col("clean_text"))).cache()
    empty = with_factors.where(F.size("_factors") == 0)
    exploded = (with_factors.where(F.size("_factors") > 0)
                .select(*[c for c in df.columns if c not in ("risk_factors_text", "clean_text")],
                        F.explode("_factors").alias("_rf"))
                .select("*", F.col("_rf.ordinal").alias("ordinal"), F.col("_rf.heading").alias("risk_factor_heading"),
                        F.col("_rf.body").alias("body"), F.col("_rf.section").alias("section"),
                        F.col("_rf.method").alias("split_method"))
                .drop("_rf")
                .withColumn("part", F.lit(1)).withColumn("parts", F.lit(1))
                .withColumn("record_id", _record_id_udf("accession_number", "ordinal", "part", "parts", "body")))
    return exploded, _rejects(empty, F.lit("empty_after_cleaning"))


@F.udf(T.StringType())
def _exact_key_udf(body: str) -> str:
    return text.exact_key(body)


def drop_duplicates_exact(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Keep the earliest filing's copy of each body that is identical after normalisation; reject the others."""
    keyed = (df.withColumn("_key", _exact_key_udf("body")).withColumn("_order", _filing_order())
             .withColumn("_rank", F.row_number().over(Window.partitionBy("_key").orderBy("_order")))
             .withColumn("_first", F.first("record_id").over(Window.partitionBy("_key").orderBy("_order")))
             .cache())
    kept = keyed.where(F.col("_rank") == 1).drop("_key", "_order", "_rank", "_first")
    dropped = keyed.where(F.col("_rank") > 1)
    return kept, _rejects(dropped, F.lit("exact_duplicate"), F.concat(F.lit("duplicate of "), F.col("_first")))


def _signature_udf(num_perm: int, bands: int, shingle_size: int):
    @F.udf(_SIGNATURE_TYPE)
    def signature(body: str) -> tuple[list[int], list[int]]:
        shingles = text.shingle_hashes(body, shingle_size)
        return shingles, text.lsh_band_keys(text.minhash_signature(shingles, num_perm), bands)

    return signature


def drop_near_duplicates(df: DataFrame, threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
                         num_perm: int = text.NUM_PERM, bands: int = text.LSH_BANDS,
                         shingle_size: int = text.SHINGLE_WORDS) -> tuple[DataFrame, DataFrame]:
    """Reject a risk factor whose shingle Jaccard with an earlier filing's one reaches threshold (LSH candidates only)."""
    key = (F.col("record_id") if "record_id" in df.columns
           else F.concat_ws("#", "accession_number", F.col("ordinal").cast("string")))
    keyed = (df.withColumn("_key", key).withColumn("_order", _filing_order())
             .withColumn("_sig", _signature_udf(num_perm, bands, shingle_size)("body"))
             .cache())
    buckets = keyed.select("_key", "_order", F.posexplode("_sig.bands").alias("_band", "_bucket"))
    early, late = buckets.alias("e"), buckets.alias("l")
    pairs = (early.join(late, (F.col("e._band") == F.col("l._band")) & (F.col("e._bucket") == F.col("l._bucket")))
             .where(F.col("e._order") < F.col("l._order"))
             .select(F.col("e._key").alias("_early"), F.col("l._key").alias("_late")).distinct())
    shingles = keyed.select("_key", F.col("_sig.shingles").alias("_sh"))
    scored = (pairs.join(shingles.withColumnRenamed("_key", "_early").withColumnRenamed("_sh", "_sh_e"), "_early")
              .join(shingles.withColumnRenamed("_key", "_late").withColumnRenamed("_sh", "_sh_l"), "_late")
              .withColumn("_jaccard", F.size(F.array_intersect("_sh_e", "_sh_l"))
                          / F.greatest(F.size(F.array_union("_sh_e", "_sh_l")), F.lit(1)))
              .where(F.col("_jaccard") >= F.lit(threshold)))
    # The earliest matching copy names the duplicate; a later copy is rejected even if its match was rejected too.
    best = (scored.groupBy("_late")
            .agg(F.min(F.struct(F.col("_early").alias("k"), F.col("_jaccard").alias("j"))).alias("_match")))
    flagged = keyed.join(best.withColumnRenamed("_late", "_key"), "_key", "left")
    kept = flagged.where(F.col("_match").isNull()).drop("_key", "_order", "_sig", "_match")
    dropped = flagged.where(F.col("_match").isNotNull())
    detail = F.format_string("near duplicate of %s (jaccard %.3f)", F.col("_match.k"), F.col("_match.j"))
    return kept, _rejects(dropped, F.lit("near_duplicate"), detail)


@F.udf(MESSAGES_TYPE)
def _messages_udf(body: str, heading: str, entity_name: str | None, form_type: str | None, part: int, parts: int):
    return text.build_messages(body, heading, entity_name, form_type, part, parts)


def to_instruction_records(df: DataFrame) -> DataFrame:
    """Add the chat messages: system, user with the body, assistant with the heading as the answer."""
    for name in ("part", "parts"):
        if name not in df.columns:
            df = df.withColumn(name, F.lit(1))
    if "record_id" not in df.columns:
        df = df.withColumn("record_id", _record_id_udf("accession_number", "ordinal", "part", "parts", "body"))
    return (df.withColumn("messages", _messages_udf("body", "risk_factor_heading", "entity_name", "form_type",
                                                  "part", "parts")))


def _count_tokens_udf(tokenizer_dir: str):
    @F.pandas_udf(T.IntegerType())
    def n_tokens(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        tokenizer = _tokenizer(tokenizer_dir)
        for messages in batches:
            conversations = [[{"role": m["role"], "content": m["content"]} for m in row] for row in messages]
            yield pd.Series(_token_counts(tokenizer, conversations), dtype="int32")

    return n_tokens


def count_tokens(df: DataFrame, tokenizer_dir: str) -> DataFrame:
    """Add n_tokens: the chat-templated length of messages under the tokenizer in tokenizer_dir (loaded once per worker)."""
    return df.withColumn("n_tokens", _count_tokens_udf(str(tokenizer_dir))(F.col("messages")))


def chunk_record(tokenizer, max_tokens: int, accession_number: str, ordinal: int, body: str, heading: str,
                 entity_name: str | None, form_type: str | None) -> list[tuple]:
    """An over-budget record as parts that each fit: (part, parts, body, record_id, messages, n_tokens); [] if none."""
    def counts(pieces: list[str], parts: list[tuple[int, int]]) -> list[int]:
        return _token_counts(tokenizer, [text.build_messages(piece, heading, entity_name, form_type, *part)
                                         for piece, part in zip(pieces, parts)])

    # Sized with the widest part marker; each final record is counted again with its real one.
    pieces = text.chunk_paragraphs_counted(body, lambda texts: counts(texts, [(99, 99)] * len(texts)),
                                           lambda bare: _token_ends(tokenizer, bare), max_tokens)
    if not pieces or len(pieces) < 2:
        return []
    out = []
    final = counts(pieces, [(i, len(pieces)) for i in range(1, len(pieces) + 1)])
    for i, (piece, count) in enumerate(zip(pieces, final), start=1):
        if count > max_tokens:
            return []
        out.append((i, len(pieces), piece, text.record_id(accession_number, ordinal, i, len(pieces), piece),
                    text.build_messages(piece, heading, entity_name, form_type, i, len(pieces)), count))
    return out


def _chunk_udf(tokenizer_dir: str, max_tokens: int):
    @F.udf(_CHUNKS_TYPE)
    def chunk(accession_number: str, ordinal: int, body: str, heading: str, entity_name: str | None,
              form_type: str | None) -> list[tuple]:
        return chunk_record(_tokenizer(tokenizer_dir), max_tokens, accession_number, ordinal, body, heading,
                            entity_name, form_type)

    return chunk


def enforce_token_budget(df: DataFrame, tokenizer_dir: str, max_tokens: int = 1024) -> tuple[DataFrame, DataFrame]:
    """Keep records within max_tokens; split longer ones into paragraph chunks that fit, else reject as over_token_budget."""
    df = df.cache()
    within = df.where(F.col("n_tokens") <= max_tokens)
    over = df.where(F.col("n_tokens") > max_tokens).withColumn("_tokens_before", F.col("n_tokens"))
    chunked = over.withColumn("_chunks", _chunk_udf(str(tokenizer_dir), max_tokens)(
        "accession_number", "ordinal", "body", "risk_factor_heading", "entity_name", "form_type")).cache()
    rescued = (chunked.where(F.size("_chunks") > 0)
               .drop("part", "parts", "body", "record_id", "messages", "n_tokens")
               .withColumn("_chunk", F.explode("_chunks"))
               .select("*", *[F.col(f"_chunk.{c}").alias(c)
                              for c in ("part", "parts", "body", "record_id", "messages", "n_tokens")])
               .drop("_chunks", "_chunk", "_tokens_before")
               .select(*df.columns))
    failed = chunked.where(F.size("_chunks") == 0)
    detail = F.format_string("%d tokens > %d", F.col("_tokens_before"), F.lit(max_tokens))
    return within.unionByName(rescued), _rejects(failed, F.lit("over_token_budget"), detail)


def assign_split(df: DataFrame, validation_fraction: float = 0.1, seed: int = 0) -> DataFrame:
    """Add split ("train" or "validation") from a hash of the CIK, so no company is in both."""
    @F.udf(T.StringType())
    def split(cik: str) -> str:
        return text.split_for(cik, validation_fraction, seed)

    return df.withColumn("split", split("cik"))


@dataclass
class Curation:
    """Curated records, rejected rows with their reason, and the run's statistics."""

    curated: DataFrame
    rejects: DataFrame
    stats: dict[str, Any]


def _curated_stats(curated: DataFrame) -> dict[str, Any]:
    """Row, chunk, split and token-length figures of the curated records in one pass."""
    chunked = F.col("parts") > 1
    aggregates = [F.count("*").alias("rows"), F.min("n_tokens").alias("min"), F.max("n_tokens").alias("max"),
                  F.avg("n_tokens").alias("mean"), F.percentile_approx("n_tokens", [0.5, 0.9, 0.99], 10000).alias("p"),
                  F.count(F.when(chunked, 1)).alias("chunks"),
                  F.countDistinct(F.when(chunked, F.concat_ws("#", "accession_number", F.col("ordinal").cast("string"))))
                  .alias("parents")]
    for name in ("train", "validation"):
        in_split = F.col("split") == name
        aggregates += [F.count(F.when(in_split, 1)).alias(f"{name}_records"),
                       F.countDistinct(F.when(in_split, F.col("cik"))).alias(f"{name}_companies")]
    row = curated.agg(*aggregates).first()
    p50, p90, p99 = row["p"] or (None, None, None)
    return {
        "rows_out": row["rows"], "chunked_risk_factors": row["parents"], "chunks": row["chunks"],
        "token_length": {"min": row["min"], "p50": p50, "p90": p90, "p99": p99, "max": row["max"],
                         "mean": None if row["mean"] is None else round(row["mean"], 2)},
        "splits": {name: {"records": row[f"{name}_records"], "companies": row[f"{name}_companies"]}
                   for name in ("train", "validation")},
    }


def run_curation(raw: DataFrame, tokenizer_dir: str, source_version: int | None, run_id: str, max_tokens: int = 1024,
                 source_table: str = "", validation_fraction: float = 0.1, seed: int = 0,
                 near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD) -> Curation:
    """Raw sections -> curated instruction records, rejects and statistics (curated and rejects are cached)."""
    rows_in = raw.count()
    current, superseded = drop_superseded(raw)
    extracted, not_extracted = keep_extracted(current)
    factors, empty = split_risk_factors(normalise(extracted))
    factors = factors.cache()
    n_factors = factors.count()
    unique, exact = drop_duplicates_exact(factors)
    distinct, near = drop_near_duplicates(unique, near_duplicate_threshold)
    counted = count_tokens(to_instruction_records(distinct), tokenizer_dir)
    fitting, over = enforce_token_budget(counted, tokenizer_dir, max_tokens)
    curated = (assign_split(fitting, validation_fraction, seed)
               .withColumn("source_table", F.lit(source_table))
               .withColumn("source_version", F.lit(source_version).cast("long"))
               .withColumn("run_id", F.lit(run_id))
               .withColumn("n_tokens", F.col("n_tokens").cast("int"))
               .cache())
    rejects = reduce(DataFrame.unionByName, [superseded, not_extracted, empty, exact, near, over]).cache()

    figures = _curated_stats(curated)
    reasons = dict(sorted((r["reason"], r["n"]) for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()))
    filing_rejects = sum(n for reason, n in reasons.items()
                         if reason.startswith("not_extracted:") or reason in ("empty_after_cleaning", "superseded"))
    # Ledger: each raw row is rejected whole or split into risk factors; an over-budget one may become chunks.
    records_in = filing_rejects + n_factors - figures["chunked_risk_factors"] + figures["chunks"]
    rejects_total = sum(reasons.values())
    stats = {
        "rows_in": rows_in,
        "risk_factors": n_factors,
        "chunked_risk_factors": figures["chunked_risk_factors"],
        "chunks": figures["chunks"],
        "records_in": records_in,
        "rows_out": figures["rows_out"],
        "rejects": reasons,
        "rejects_total": rejects_total,
        "balanced": records_in == figures["rows_out"] + rejects_total,
        "token_length": figures["token_length"],
        "max_tokens": max_tokens,
        "splits": figures["splits"],
        "task": text.TASK,
        "preprocess_version": text.PREPROCESS_VERSION,
    }
    return Curation(curated.select(*OUTPUT_COLUMNS), rejects.select(*REJECT_COLUMNS), stats)


def curate(raw_df: DataFrame, tokenizer_dir: str, source_version: int | None, run_id: str, max_tokens: int = 1024,
           **options: Any) -> tuple[DataFrame, dict[str, Any]]:
    """The curated training records and the run's statistics (see run_curation for rejects and options)."""
    result = run_curation(raw_df, tokenizer_dir, source_version, run_id, max_tokens, **options)
    return result.curated, result.stats
