"""gvt-kvmgt backend."""
