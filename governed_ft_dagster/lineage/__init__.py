"""Lineage: records derived from the asset graph (pure), the facts they are built from, and the sinks they go to."""
