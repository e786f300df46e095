"""Curation of Risk Factors sections into instruction records: pure text functions (text) and Spark functions (spark)."""
