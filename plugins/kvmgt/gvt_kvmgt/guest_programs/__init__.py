"""C sources of standalone guest programs (compiled at run time with gcc)."""
