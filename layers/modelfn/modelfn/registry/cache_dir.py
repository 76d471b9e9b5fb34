"""The disk cache's directory, private to this process's user.

Whoever can write in the cache directory can put files where the next cold load looks for them, so it must belong
to this user and nobody else may write in it. MODELFN_CACHE_DIR (default /tmp/modelfn, Lambda's only writable
disk) is created 0700. An existing one is used only if it is a real directory (not a symlink) owned by this
process's effective user and not writable by group or others; if it is merely readable by them, it is made 0700.
Anything else is refused: this process then caches in a fresh directory of its own from `tempfile.mkdtemp`
(0700, an unpredictable name, in $TMPDIR), removed when the process exits, with one warning naming the problem.
Never a directory under the refused one: whoever controls a directory can rename or replace what is in it."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

log = logging.getLogger("modelfn")
_fallbacks: dict[Path, Path] = {}
_guard = threading.Lock()


def private_dir(path: Path) -> Path:
    """`path` if it is (or has just been made) private to this user, else this process's own fallback for it."""
    with _guard:
        fallback = _fallbacks.get(path)
        if fallback is not None:
            return fallback
        problem = make_private(path)
        if problem is None:
            return path
        fallback = Path(tempfile.mkdtemp(prefix="modelfn-cache-"))
        atexit.register(shutil.rmtree, fallback, ignore_errors=True)
        log.warning(
            "cache directory %s %s: refused (another user could plant or swap model files there); this process "
            "caches in %s instead, which it removes at exit",
            path,
            problem,
            fallback,
        )
        _fallbacks[path] = fallback
        return fallback


def make_private(path: Path) -> str | None:
    """Create `path` 0700 (parents as the umask says), or check the existing one; None when it is private now,
    else what is wrong with it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
        return None
    except FileExistsError:
        pass
    except OSError as e:
        return f"cannot be created ({e.strerror})"
    info = os.lstat(path)
    user = os.geteuid()
    problems = [
        (stat.S_ISLNK(info.st_mode), "is a symbolic link"),
        (not stat.S_ISDIR(info.st_mode), "is not a directory"),
        (info.st_uid != user, f"belongs to uid {info.st_uid}, not to this process's uid {user}"),
        (bool(info.st_mode & 0o022), f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"),
    ]
    problem = next((why for bad, why in problems if bad), None)
    if problem is None and info.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, and only readable by others: the models it holds need not be
    return problem
