"""Experiments on the perfusion package: the accuracy bench and the meta-init comparison.

They import :mod:`perfusion` and are never imported by it (``tests/test_layers.py`` checks);
the one place the product reaches them is the CLI's dispatch table (:mod:`perfusion.cli`), by
module name, so that ``perfusion bench`` and ``perfusion compare`` run them.
"""
