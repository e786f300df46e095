"""The asset graph: raw filings to a registered model version."""
