"""gvt-xengt backend."""
