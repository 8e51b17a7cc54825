"""``mydfs-tracker``: the scheduler and namespace of a mydfs cluster."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mydfs-tracker",
        description="The mydfs tracker: knows every storage group from its heartbeats, "
        "places new files, and keeps the durable file table.",
    )
    parser.parse_args(argv)
    print("mydfs-tracker: the tracker service is not part of this version yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
