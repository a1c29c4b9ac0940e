"""`reusenet recipes`: list the bundled recipes, compare specs and RefiNet recipes."""
from __future__ import annotations

# Sub-folders of recipes/ hold files for other commands; each is listed under the command that reads it.
KINDS = (("", "training recipes: reusenet train --recipe NAME [--reduced]"),
         ("compare", "compare specs: reusenet compare --spec recipes/compare/NAME.yaml"),
         ("refinet", "RefiNet recipes: reusenet refinet fit --recipe NAME"))


def add_parser(subparsers) -> None:
    subparsers.add_parser("recipes", help="list the bundled recipes, compare specs and RefiNet recipes")


def run(args) -> None:
    from ..engine.config import RECIPE_DIR

    for folder, title in KINDS:
        paths = sorted((RECIPE_DIR / folder).glob("*.yaml"))
        if not paths:
            continue
        print(f"{title}\n")
        for path in paths:
            first_line = path.read_text().splitlines()[0].lstrip("# ")
            print(f"  {path.stem:26s} {first_line}")
        print()
