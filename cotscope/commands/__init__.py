"""Subcommands with enough logic to deserve their own module; each exposes ``main(argv) -> int``."""
