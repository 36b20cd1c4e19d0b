"""Data selection: per-example scorers, samplers and coresets (see DESIGN.md)."""
