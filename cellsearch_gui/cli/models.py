"""`cellsearch models ...`: list, verify, import and download model weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.models import checkpoints, install
from cellsearch_gui.core.models.hub import offline_mode
from cellsearch_gui.core.models.registry import REGISTRY, parse_model_list


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="list, import, download or verify model weights")
    models.set_defaults(handler=cmd_models)
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="each model, whether its weights are present, its licence")
    mlist.add_argument("--long", action="store_true", help="also the layer embedded and the weights source")
    verify = msub.add_parser("verify", help="check the sha256 of every present checkpoint")
    verify.add_argument("ids", nargs="*")
    imp = msub.add_parser("import", help="copy a checkpoint into the weights folder after checking it")
    imp.add_argument("id", nargs="?", help="model id; without it, FILE is a folder of pinned checkpoints")
    imp.add_argument("file", type=Path, help="checkpoint file (.pth/.pt/.bin/.safetensors) or a saved model "
                                             "folder (transformers save_pretrained, hub snapshot)")
    imp.add_argument("--allow-unpinned", action="store_true",
                     help="accept a file whose sha256 differs from the pinned one")
    down = msub.add_parser("download", help="download a model's pinned checkpoint")
    down.add_argument("ids", nargs="+")


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command in ("list", "verify"):
        return _list(args)
    if args.models_command == "import":
        return _import(args)
    if args.models_command == "download":
        for model_id in parse_model_list(",".join(args.ids)):
            print(f"downloaded {model_id} -> {checkpoints.download_weights(model_id)}")
        return 0
    return 2


def _list(args: argparse.Namespace) -> int:
    """The table of models and their weights; with ``verify``, 1 when a checksum does not match."""
    ids = parse_model_list(",".join(args.ids)) if getattr(args, "ids", None) else sorted(REGISTRY)
    verify = args.models_command == "verify"
    print(f"weights folder: {checkpoints.weights_dir()}" + ("   (offline mode)" if offline_mode() else ""))
    print(f"{'id':<23}{'dim':>6}{'input':>7}  {'roles':<15}{'weights':<19}{'licence'}")
    bad = 0
    for model_id in ids:
        st = checkpoints.status(REGISTRY[model_id], verify=verify)
        bad += st.verified is False
        spec = st.spec
        print(f"{spec.id:<23}{spec.dim:>6}{spec.input_size:>7}  {','.join(spec.roles):<15}{st.state:<19}"
              f"{spec.licence}")
        if getattr(args, "long", False):
            print(f"{'':<6}layer:   {spec.layer}\n{'':<6}weights: {spec.weights_source}"
                  + (f"\n{'':<6}file:    {st.path}" if st.path else ""))
    return 1 if bad else 0


def _import(args: argparse.Namespace) -> int:
    if args.id is None:  # a folder of checkpoints (USB stick): each file recognised by its sha256
        folder = args.file
        done = install.import_folder(folder)
        for model_id, path in done:
            print(f"imported {model_id} -> {path}")
        if not done:
            raise CellSearchError(f"{folder}: no file matches a pinned checkpoint")
        return 0
    path = install.import_weights(args.id, args.file, allow_unpinned=args.allow_unpinned)
    print(f"imported {args.id} -> {path}")
    return 0
