"""absl flag factories: prefixed optimiser flags and task flags from builder signatures."""
