"""SEC EDGAR access and Risk Factors extraction (pure, no Dagster imports)."""
