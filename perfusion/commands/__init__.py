"""One module per console subcommand, each exposing ``main(argv: list[str]) -> None``."""
