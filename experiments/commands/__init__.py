"""The ``perfusion bench`` and ``perfusion compare`` commands, dispatched by :mod:`perfusion.cli`."""
