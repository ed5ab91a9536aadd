"""The `drove` binary (Drove's server, worker and CLI), installed by pip.

pip puts `drove` in the environment's scripts directory (a virtualenv's `bin/`), so in an
activated environment it is on PATH. From Python, `binary_path()` finds it, and
`python -m drove_server ARGS` runs it with ARGS.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Iterator

__all__ = ["binary_path", "__version__"]

_DIST = "drove-server"
_EXE = "drove.exe" if sys.platform == "win32" else "drove"

try:
    __version__ = metadata.version(_DIST)
except metadata.PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"


def _this_distribution() -> metadata.Distribution | None:
    # The .dist-info beside this package is the one pip installed it with; prefer it to a
    # lookup by name, which may find another copy elsewhere on sys.path.
    here = Path(__file__).resolve().parent.parent
    infos = sorted(here.glob("drove_server-*.dist-info"))
    if len(infos) == 1:
        return metadata.Distribution.at(infos[0])
    try:
        return metadata.distribution(_DIST)
    except metadata.PackageNotFoundError:
        return None


def _candidates() -> Iterator[str]:
    # 1. Where pip says it put it: the installed RECORD names the script relative to
    #    site-packages, whatever the scheme (virtualenv, --user, --prefix).
    dist = _this_distribution()
    for f in (dist.files or []) if dist is not None else []:
        if f.name == _EXE and f.parent.name in ("bin", "Scripts"):
            yield os.path.normpath(os.path.abspath(str(f.locate())))
    # 2. This interpreter's scripts directory, then the user scheme's.
    yield os.path.join(sysconfig.get_path("scripts"), _EXE)
    if sys.version_info >= (3, 10):
        user = sysconfig.get_preferred_scheme("user")
    else:
        user = "nt_user" if os.name == "nt" else "posix_user"
    yield os.path.join(sysconfig.get_path("scripts", scheme=user), _EXE)
    # 3. `pip install --target DIR` puts scripts in DIR/bin, beside the package.
    yield str(Path(__file__).resolve().parent.parent / "bin" / _EXE)


def binary_path() -> str:
    """The absolute path of the installed `drove` executable.

    Raises FileNotFoundError if it cannot be found (e.g. the scripts were not installed).
    """
    tried: list[str] = []
    for path in _candidates():
        if path in tried:
            continue
        tried.append(path)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "the drove binary of the drove-server package was not found; looked in: " + ", ".join(tried)
    )
