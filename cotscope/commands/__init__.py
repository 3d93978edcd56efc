"""CLI subcommands with their own argument parsers: each module has ``main(argv) -> int`` (wired in cotscope.cli)."""
