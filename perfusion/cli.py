"""``perfusion <command> [PATH ...] [key=value ...]``: dispatch, one-line errors, exit codes.

Each command lives in ``perfusion/commands/<name>.py`` as ``main(argv: list[str]) -> None``;
it is imported only when called, so ``perfusion --help`` stays fast. A
:class:`~perfusion.errors.PerfusionError` becomes ``perfusion <command>: <file>: <fault>`` on
stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import os
import sys

from perfusion.errors import PerfusionError

COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "print what a case, ISLES folder or NIfTI holds"),
    "convert": ("convert", "turn a CTP DICOM series or an ISLES case into a case folder"),
    "preprocess": ("preprocess", "motion correction, masks, baseline, AIF/VOF: a fit-ready case"),
    "phantom": ("phantom", "write digital phantom cases with known truth (brain cohort or Kudo)"),
    "fit": ("fit", "fit perfusion maps to a case (ReSPPINN, SPPINN, bSVD, NLR)"),
    "bench": ("bench", "accuracy benchmark of every method against phantom truth"),
    "meta-train": ("meta_train", "Reptile meta-learning of a field initialisation"),
    "compare": ("compare", "ReSPPINN@500 (meta-init) vs no-init vs SPPINN on held-out phantoms"),
    "loocv": ("loocv", "leave-one-out cross-validation of the infarct-core U-Net"),
    "train-seg": ("train_seg", "train the final infarct-core U-Net on a whole cohort"),
    "segment": ("segment", "segment the infarct core of a case with a trained U-Net"),
    "sweep": ("sweep", "run a W&B sweep YAML offline with a local driver"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: perfusion <command> [PATH ...] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"perfusion: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    module = importlib.import_module(f"perfusion.commands.{COMMANDS[name][0]}")
    try:
        module.main(rest)
    except PerfusionError as exc:
        print(f"perfusion {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"perfusion {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
