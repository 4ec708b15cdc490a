"""gvt-acrngt backend."""
