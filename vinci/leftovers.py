"""What a killed process leaves behind: temporary files and folders named `...-<its PID>`.

Writers here stage output under such a name and rename it into place; a SIGKILL between the two
leaves the staged copy. The next writer removes the ones whose process is gone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable


def writer_is_gone(path: Path) -> bool:
    """True when `path` ends in -<PID> and no process has that PID."""
    pid = path.name.rsplit("-", 1)[-1]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_dead(paths: Iterable[Path]) -> None:
    """Delete each of `paths` (file or folder) whose writer process is gone."""
    for path in paths:
        if writer_is_gone(path):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
