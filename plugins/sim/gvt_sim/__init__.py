"""gvt-sim backend."""
