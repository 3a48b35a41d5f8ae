"""`nnunet-scnas`: one subcommand per module of this package, each with NAME, HELP, add_arguments, run."""
import argparse
import importlib
import sys

from nnunet_scnas import __version__
from nnunet_scnas.errors import UserError

# module names in this package, in the order `--help` lists them
SUBCOMMANDS = ("env", "doctor", "make_dataset", "estimate", "export_plans", "compare", "demo")


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="nnunet-scnas",
        description="SCNAS neural architecture search for 3D segmentation, inside nnU-Net v2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineErrorParser)
    for module_name in SUBCOMMANDS:
        module = importlib.import_module(f"nnunet_scnas.cli.{module_name}")
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"nnunet-scnas {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnunet-scnas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
