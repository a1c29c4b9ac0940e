"""`reusenet <command>`: a thin layer over the library. Mistakes print one line and exit with status 2.

Each command is a module in `reusenet.commands` with `add_parser(subparsers)` and `run(args)`; this file
finds them, so a new command is a new module.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from .errors import UserError

EXIT_USER_ERROR = 2


def command_modules() -> dict:
    """{command name: module}; the name is the module's COMMAND, or its file name."""
    modules = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda info: info.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{commands.__name__}.{info.name}")
            modules[getattr(module, "COMMAND", info.name)] = module
    return modules


def build_parser(modules: dict | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reusenet", description=__doc__.split(":")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (modules or command_modules()).values():
        module.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    modules = command_modules()
    args = build_parser(modules).parse_args(argv)
    try:
        modules[args.command].run(args)
    except UserError as err:
        print(f"reusenet {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"reusenet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
