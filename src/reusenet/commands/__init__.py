"""One module per `reusenet` command: each defines `add_parser(subparsers)` and `run(args)`.

Optional `COMMAND` names the command when it differs from the module name (e.g. `eval`, a Python keyword).
"""
