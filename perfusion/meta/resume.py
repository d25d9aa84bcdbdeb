"""When a ``perfusion meta-train`` run may continue from a checkpoint in its run folder.

A resume checkpoint carries the digest (:func:`perfusion.cache.digest`) of the settings that
shape the result (:func:`result_settings`: everything but where files go, how often they are
written and logged, threads, and how many processes share the work). A rerun continues only
with the same digest, so a changed configuration never resumes an old run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfusion.cache import DIGEST_KEY, canonical, digest
from perfusion.errors import PerfusionError
from perfusion.fitting.init import UnsafeCheckpointError, load_torch_file
from perfusion.meta.checkpoint import flatten
from perfusion.meta.config import MetaConfig

RESULT_FREE_KEYS = (
    "name",
    "checkpoint_dir",
    "checkpoint_every",
    "eval_every",
    "threads",
    "trainer",
    "fit.device",
    "fit.steps",
    "fit.stop",
)
"""MetaConfig keys that leave the learned initialisation as it is (to float tolerance):
``fit.steps`` is replaced by ``n_inner`` and the inner loop never stops early (``fit.stop``); ``fit.device`` and ``trainer`` change only where the
arithmetic runs, so a run started on one CPU may continue on several processes or a GPU."""
SETTINGS_KEY = "result_settings"


def result_settings(cfg: MetaConfig) -> dict[str, Any]:
    """The settings that shape the initialisation, as flat ``key.path: value`` plain data."""
    flat = flatten(canonical(cfg))
    return {
        key: value
        for key, value in flat.items()
        if not any(key == free or key.startswith(free + ".") for free in RESULT_FREE_KEYS)
    }


def result_digest(cfg: MetaConfig) -> str:
    """:func:`perfusion.cache.digest` of :func:`result_settings`."""
    return digest(result_settings(cfg))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest outer step in ``run_dir`` (``last.ckpt`` or ``step-*.ckpt``).

    Lightning writes the ``step-*`` file before refreshing ``last.ckpt``, so a kill between the
    two leaves ``last.ckpt`` one interval behind; an unreadable file (killed mid-write) is skipped.
    """
    steps = {}
    for path in [run_dir / "last.ckpt", *sorted(run_dir.glob("step-*.ckpt"))]:
        if not path.is_file():
            continue
        try:
            steps[path] = int(load_torch_file(path, "resume checkpoint")["global_step"])
        except UnsafeCheckpointError:
            raise  # crafted, not killed mid-write: refuse the run rather than skip the file
        except (PerfusionError, KeyError, TypeError, ValueError, IndexError):
            continue  # partial or foreign file: not a resume point
    return max(steps, key=steps.get) if steps else None


def check_resumable(last: Path, fields, frame: dict[str, Any], cfg: MetaConfig) -> int:
    """The outer step of ``last``; refuses a checkpoint of other fields, another frame or other
    result-shaping settings (naming the run folder to remove and the keys that differ)."""
    saved = load_torch_file(last, "resume checkpoint")
    if not isinstance(saved, dict):
        raise PerfusionError("not a resume checkpoint (no dict)", last)
    advice = f"remove {last.parent} or choose another name="
    for key, now in (("architecture", fields.architecture()), ("frame", frame)):
        found = saved.get(key)
        if found is not None and found != now:
            raise PerfusionError(
                f"resume checkpoint has another {key} (differs in {_differ(found, now)}); {advice}",
                last,
            )
    if saved.get(DIGEST_KEY) != result_digest(cfg):
        found, now = saved.get(SETTINGS_KEY) or {}, result_settings(cfg)
        what = (
            f"differs in {_differ(found, now)}" if found else "made before settings were recorded"
        )
        raise PerfusionError(
            f"resume checkpoint was made with other settings ({what}); {advice}", last
        )
    return int(saved.get("global_step", 0))


def _differ(found: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two dicts (missing on one side counts)."""
    return sorted(k for k in set(found) | set(now) if found.get(k) != now.get(k))
