"""Model loading (embedded defaults, local paths, hub names) and per-family adapters."""
