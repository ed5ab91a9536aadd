"""`python -m drove_server ARGS` runs `drove ARGS` (e.g. `python -m drove_server serve`)."""

from __future__ import annotations

import os
import sys

from drove_server import binary_path


def main() -> None:
    path = binary_path()
    args = [path, *sys.argv[1:]]
    if sys.platform == "win32":
        import subprocess

        sys.exit(subprocess.call(args))
    # Replace this process: signals (Ctrl-C, SIGTERM) and the exit status are drove's own.
    os.execv(path, args)


if __name__ == "__main__":
    main()
