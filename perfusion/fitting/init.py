"""Loading a field initialisation (``perfusion fit init=PATH``): the one place that reads one.

A checkpoint is a ``torch.save`` dict with at least ``state_dict`` (PerfusionFields weights) and
``architecture`` (``PerfusionFields.architecture()``); when present, ``domain`` (the fixed
scales) must match the fit's Domain, because an initialisation is an anatomical prior in those
units. Meta-learning (perfusion.meta) writes these; ``fit`` records the checkpoint's ``fit``
settings (steps, batch, loss) so the fit can repeat the inner loop.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from perfusion.errors import PerfusionError


class UnsafeCheckpointError(PerfusionError):
    """A torch file holding pickled objects beyond tensors and plain values: never loaded."""


_UNSAFE_GLOBAL = re.compile(r"Unsupported (?:global|class): (?:GLOBAL )?([\w.]+)")


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` of a trusted-format file: tensors and plain containers only, on the CPU.

    Every torch file the project reads goes through here with ``weights_only=True``: a pickle
    may name any importable function (``os.system``, ``builtins.open``) and unpickling calls it,
    so a crafted ``.ckpt``/``.pt`` would run code before any check could look at its content.
    Our own files hold only tensors, dicts, lists, strings and numbers (numpy states are stored
    as tensors, see :mod:`perfusion.meta.reptile`), so no global needs allow-listing.

    Raises:
        UnsafeCheckpointError: the file names a global that is not a tensor or plain value.
        PerfusionError: the file is missing, truncated or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise PerfusionError(f"{what} not found", path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSAFE_GLOBAL.search(str(exc))
        if found or "WeightsUnpickler" in str(exc):
            name = found.group(1) if found else "an unsupported object"
            raise UnsafeCheckpointError(
                f"refused {what}: it holds pickled code or objects ({name}), not only tensors "
                "and plain values; nothing was loaded",
                path,
            ) from None
        raise PerfusionError(f"unreadable {what} (UnpicklingError)", path) from None
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise PerfusionError(f"unreadable {what} ({type(exc).__name__})", path) from None


def read_init(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint dict; missing, unreadable or unsafe files raise :class:`PerfusionError`."""
    path = Path(path)
    if not path.is_file():
        raise PerfusionError("initialisation checkpoint not found", path)
    checkpoint = load_torch_file(path, "checkpoint")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise PerfusionError("not a field initialisation (no 'state_dict')", path)
    return checkpoint


def load_init(
    fields: nn.Module, path: str | Path, domain_scales: dict[str, float] | None = None
) -> dict[str, Any]:
    """Load the initialisation at ``path`` into ``fields`` after checking it fits.

    Refuses (one-line :class:`PerfusionError`) another architecture, other Domain scales, or
    weights that do not match the module. Returns the checkpoint (for its recorded settings).
    """
    path = Path(path)
    checkpoint = read_init(path)
    expected = fields.architecture()
    found = checkpoint.get("architecture")
    if found is not None and found != expected:
        keys = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        raise PerfusionError(f"checkpoint architecture differs from the fit's in {keys}", path)
    saved_scales = checkpoint.get("domain")
    if domain_scales is not None and saved_scales is not None:
        differ = sorted(k for k in domain_scales if saved_scales.get(k) != domain_scales[k])
        if differ:
            raise PerfusionError(f"checkpoint domain scales differ in {differ}", path)
    try:
        fields.load_state_dict(checkpoint["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PerfusionError(f"checkpoint does not fit the fields: {first}", path) from None
    return checkpoint


UNRECORDED_BEFORE = {
    "loss.norm": "l1",
    "loss.aif_grid_points": 512,
    "optim.eps": 1e-8,
    "ode_prefit_steps": 0,
    "ode_prefit_lr": 0.01,
    "ode_prefit_median": [3, 3, 1],
    "fields.mtt_levels": None,
    "loss.anchor": 0.0,
    "loss.anchor_share": 1.0,
    "optim.ode_lr_scale": 1.0,
    "optim.schedule": "onecycle",
    "optim.warmup_steps": 0,
    "loss.aif": "field",
    "sampling.whole_curves": False,
    "sampling.heldout_share": 0.02,
    "ode_prefit_voxels": 25000,
    "stop.rule": "none",
    "ode_prefit_prior_share": 0.5,
}
"""Inner-loop settings that older checkpoints do not record, with the value every fit had before
they recorded it; a checkpoint without them repeats that value, not today's default, and so it
does for the keys added to FitConfig since (:data:`perfusion.fitting.config.BEFORE_ADDED`)."""


SCAN_HANDLING = ("preprocess.motion_", "preprocess.reference_frame", "preprocess.threads")
"""Prefixes of recorded keys a fit from the checkpoint does not repeat: motion correction and
its parameters (meta-training phantoms do not move, a patient may) and the threads handle the
scan, and the keys that only flag it (``reuse.FLAG_ONLY_PREPROCESS_KEYS``, the contrast check)
judge it; none shapes the data the fields learned from."""


def recorded_settings(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's recorded inner-loop settings (``key.path: value``), completed with
    :data:`UNRECORDED_BEFORE` and ``BEFORE_ADDED``, without the :data:`SCAN_HANDLING` keys;
    empty when it records none."""
    from perfusion.fitting.config import BEFORE_ADDED  # the fit's config: only with a checkpoint
    from perfusion.fitting.reuse import FLAG_ONLY_PREPROCESS_KEYS

    settings = checkpoint.get("fit") or {}
    if not settings:
        return {}
    merged = {**BEFORE_ADDED, **UNRECORDED_BEFORE, **settings}
    skipped = (*SCAN_HANDLING, *(f"preprocess.{key}" for key in FLAG_ONLY_PREPROCESS_KEYS))
    return {k: v for k, v in merged.items() if not k.startswith(skipped)}


def init_overrides(path: str | Path, user_overrides: list[str]) -> tuple[list[str], list[str]]:
    """The checkpoint's recorded inner-loop settings as ``key=value`` overrides, and warnings.

    A fit from an initialisation must repeat Reptile's inner loop (steps, batch, optimiser, loss,
    AIF pre-fit, preprocessing). Returns (overrides to apply before the user's, one warning per
    user override that changes a recorded setting).
    """
    settings = recorded_settings(read_init(path))
    user = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in user_overrides if "=" in o}
    applied, warnings = [], []
    for key, value in settings.items():
        text = json.dumps(value)  # YAML reads JSON scalars and lists (null, true, [1, 2])
        applied.append(f"{key}={text}")
        if key in user and user[key] != str(value) and user[key] != text:
            warnings.append(
                f"{key}={user[key]} overrides the initialisation's inner loop ({key}={text}); "
                "the learned initialisation was made for the latter"
            )
    return applied, warnings


def with_init_settings(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``overrides`` with the ``init=`` checkpoint's recorded settings put first, and warnings.

    Without an ``init=`` (or with ``init=`` empty or null) the overrides come back unchanged.
    """
    init = [o.split("=", 1)[1] for o in overrides if o.startswith("init=")]
    if not init or init[-1] in ("", "null"):
        return list(overrides), []
    recorded, warnings = init_overrides(init[-1], overrides)
    return recorded + list(overrides), warnings


def build_fit_config(
    overrides: Sequence[str] = (), init: str | Path | None = None, warn: Any = None
) -> Any:
    """The one FitConfig builder of every command: ``configs/fit.yaml``, then the ``init=``
    checkpoint's recorded inner-loop settings (:func:`with_init_settings`), then ``overrides``
    (a ``config=NAME`` among them adds a preset such as ``model/sppinn`` after fit.yaml).

    ``init`` is the same as an ``init=PATH`` override. ``warn`` receives one line per override
    that changes a recorded setting. Returns the typed DictConfig (``to_object`` for the
    dataclass).
    """
    from perfusion.config import load_config
    from perfusion.fitting.config import FitConfig

    overrides = [*overrides, *([f"init={init}"] if init else [])]
    overrides, warnings = with_init_settings(overrides)
    for line in warnings:
        if warn is not None:
            warn(line)
    return load_config(FitConfig, ["fit.yaml"], overrides)
