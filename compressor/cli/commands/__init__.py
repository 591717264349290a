"""Sub-commands of the `compressor` CLI, one module each (see compressor.cli)."""
