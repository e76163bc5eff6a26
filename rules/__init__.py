"""Rule engine; until it lands, the rules stage passes batches through unchanged."""
