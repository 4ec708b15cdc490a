"""Pytest plugin: the MPT contract suite and the scenario suite, per backend.

* :mod:`gvt_core.testing.plugin` (entry point ``pytest11``): ``--gvt-backend
  NAME`` (repeatable; default every usable installed backend),
  ``--gvt-backend-option KEY=VALUE``, and the fixtures ``gvt_backend_name``,
  ``gvt_backend_options``, ``mpt_host``, ``guest_vm``, ``attached``.
* :mod:`gvt_core.testing.recording`: :class:`RecordingOps`, core ops that
  record every backend -> core call.
* ``test_contract.py``: every MPT hook's documented behaviour, run with
  ``pytest --pyargs gvt_core.testing --gvt-backend NAME``.
"""
