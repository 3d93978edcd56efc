"""Command logic behind `cotscope <command>`: each module has ``main(argv) -> int`` (argparse inside)."""
