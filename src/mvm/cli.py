"""The ``mvm`` command line: parse, build a config, call one run function per subcommand.

Each subcommand lives in ``mvm/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports happen inside ``run`` so ``mvm --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ["pretrain", "synth", "motion", "prepare", "masks", "convert", "data", "tokenizer", "finetune", "evaluate",
            "probe", "extract"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvm", description="Masked video modelling toolkit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"mvm.commands.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--config`` and repeated ``--set``, shared by every subcommand that takes a config."""
    p.add_argument("--config", help="preset name (e.g. tiny-synthetic) or TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `mvm` alone is the main job, as `make run` runs it.
    if not argv:
        argv = ["pretrain"]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 2
    from mvm.config import ConfigError
    from mvm.data.formats import DataSourceError

    try:
        return _end_rank(int(args._run(args) or 0))
    except ConfigError as e:
        print(f"mvm {args.command}: config error: {e}", file=sys.stderr)
        return 2
    except DataSourceError as e:  # raised before anything is written: a user's data, not a bug
        print(f"mvm {args.command}: data error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mvm {args.command}: interrupted", file=sys.stderr)
        return 130


def _end_rank(code: int) -> int:
    """``code``; but a process torchrun started ends here, once its output is flushed.

    Its job is done (checkpoints and summary written, the process group destroyed, loader workers
    stopped), and the interpreter's teardown can abort it: a gloo thread still joinable when the
    objects holding the group are freed ("terminate called without an active exception",
    SIGABRT; seen twice in a few hundred torchrun runs of the tests, once after a finished FSDP
    pretraining). torchrun would report that rank as failed, and stop its peers."""
    import os

    if "TORCHELASTIC_RUN_ID" in os.environ:  # (torch.distributed.is_torchelastic_launched)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
