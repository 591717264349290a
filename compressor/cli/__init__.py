"""The `compressor` command line: `app` assembles the sub-commands in `commands/`.

`common` holds the argument helpers several commands share and `console`
the human output (rich tables, progress, JSON for scripts).
"""

from compressor.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
