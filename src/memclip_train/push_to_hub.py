"""`python -m memclip_train.push_to_hub`: a trained model to a Hugging Face Hub repo, with a model card made from its
run (the command, data, settings and results in the run folder).

    python -m memclip_train.push_to_hub logs/stage2 --repo-id me/vit-b-16-mem           # a run folder: its final/
    python -m memclip_train.push_to_hub logs/stage2/checkpoints/epoch_5.pt --repo-id me/vit-b-16-mem-e5
    python -m memclip_train.push_to_hub path/to/saved --repo-id me/x --private --revision v1
    python -m memclip_train.push_to_hub --model ViT-Tiny-8 --pretrained synth --repo-id me/vit-tiny-8-synth
    python -m memclip_train.push_to_hub logs/stage2 --repo-id me/x --dry-run staged/   # write the folder, no upload

The Hub token comes from ``--token``, ``HF_TOKEN`` or ``hf auth login``. Load the result with
``memclip.create_model("hf-hub:me/vit-b-16-mem")``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from torch import nn

import memclip
from memclip.model_card import render_card
from memclip.pretrained import list_shipped_tags, shipped_card
from memclip.push import push_to_hub, write_hub_folder
from memclip.registry import is_saved_model_dir

from .checkpoints import load_checkpoint
from .error_reporting import UserError, add_debug_flag, report_user_errors
from .run_card import flatten_config, read_params, run_card_facts

PROG = "python -m memclip_train.push_to_hub"
logger = logging.getLogger("memclip_train.push_to_hub")


def load_source(source: Path) -> Tuple[nn.Module, Optional[Path], Optional[dict]]:
    """The model of a run folder (its final/), a saved folder or a training checkpoint, the run folder it belongs
    to (or None) and the params to describe it with (None: the run folder's params.txt).

    Raises:
        UserError: the path is none of these.
    """
    if source.is_dir() and not is_saved_model_dir(source) and is_saved_model_dir(source / "final"):
        return memclip.create_model(str(source / "final")), source, None
    if is_saved_model_dir(source):
        run_dir = source.parent if (source.parent / "params.txt").is_file() else None
        return memclip.create_model(str(source)), run_dir, None
    if source.is_file() and source.suffix == ".pt":
        checkpoint = load_checkpoint(source)
        args = checkpoint.get("args") or {}
        name = args.get("model", {}).get("model")
        if not name:
            raise UserError(f"{source} records no --model: give a saved folder or a run folder instead")
        run_dir = source.parent.parent if source.parent.name == "checkpoints" else None
        params = dict(read_params(run_dir) if run_dir is not None else {}, **flatten_config(args))
        return memclip.create_model(name, pretrained=str(source)), run_dir, params
    raise UserError(f"{source} is neither a run folder (with final/), a saved model folder (memclip_config.json) "
                    "nor a training checkpoint (.pt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", type=Path, help="a run folder, a saved model folder or a checkpoint")
    parser.add_argument("--model", help="with --pretrained: weights that ship with memclip (e.g. ViT-Tiny-8)")
    parser.add_argument("--pretrained", help="with --model: the shipped tag (e.g. synth)")
    parser.add_argument("--repo-id", required=True, help="the Hub repo, ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="the branch to push to (created if missing)")
    parser.add_argument("--commit-message", help="default: Upload <model> with memclip")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--license", default="mit", help="the weights' licence in the card (an SPDX id)")
    parser.add_argument("--token", help="a Hub token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--dry-run", type=Path, metavar="DIR", help="write the folder that would be uploaded to DIR "
                                                                   "and stop (no network)")
    add_debug_flag(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    if args.source is not None and (args.model or args.pretrained):
        raise UserError("give a SOURCE folder or checkpoint, or --model and --pretrained (shipped weights), not both")
    if args.source is None:
        if not (args.model and args.pretrained):
            raise UserError("give a SOURCE (run folder, saved folder or checkpoint), or --model and --pretrained")
        card = shipped_card(args.model, args.pretrained, repo_id=args.repo_id)
        if card is None:
            raise UserError(f"--pretrained {args.pretrained}: not a tag of {args.model} that ships with memclip "
                            f"(shipped: {list_shipped_tags(args.model)}); push other weights from a saved folder")
        model = memclip.create_model(args.model, pretrained=args.pretrained)
    else:
        model, run_dir, params = load_source(args.source)
        card = render_card(run_card_facts(model, run_dir, params, repo_id=args.repo_id, license=args.license))
    if args.dry_run is not None:
        folder = write_hub_folder(model, args.dry_run, card=card)
        print(f"wrote {folder} (not uploaded): {', '.join(sorted(p.name for p in folder.iterdir()))}")
        return
    info = push_to_hub(model, args.repo_id, card=card, private=args.private or None, token=args.token,
                       revision=args.revision, commit_message=args.commit_message, create_pr=args.create_pr)
    print(f"pushed to https://huggingface.co/{args.repo_id} ({getattr(info, 'commit_url', info)}); load it with "
          f"memclip.create_model(\"hf-hub:{args.repo_id}\")")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s")
    return report_user_errors(PROG, args.debug, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
