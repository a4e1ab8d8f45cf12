"""``python -m bench [--quick] ...`` runs the benchmark; ``python -m bench profile ...`` profiles the gateway.

Run from the repository root (bench/run.sh and bench/profile.sh do).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["profile"]:
        from bench.profile import main as profile_main

        return profile_main(argv[1:])
    if argv[:1] == ["run"]:
        argv = argv[1:]
    from bench.runner import Bench, add_arguments

    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the Rhetor gateway "
                                     "(subcommand `profile` for py-spy profiles)")
    add_arguments(parser)
    Bench(parser.parse_args(argv)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
