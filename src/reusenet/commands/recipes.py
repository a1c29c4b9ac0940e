"""`reusenet recipes`: list the bundled recipes."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    subparsers.add_parser("recipes", help="list the bundled recipes")


def run(args) -> None:
    from ..engine import list_recipes
    from ..engine.config import RECIPE_DIR

    for name in list_recipes():
        first_line = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:28s} {first_line}")
