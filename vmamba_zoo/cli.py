"""The ``vmamba-zoo`` command line."""
import argparse
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vmamba-zoo")
    parser.parse_args(argv)
    return 0
