"""A small tmpfs: a disk that fills up for real (ENOSPC, SQLITE_FULL), then is thrown away.

    with Tmpfs(tmp_path / "disk", size="2m") as disk:   # root only: mount(8)
        ...                                            # disk.path is the mount point

Mounting needs root (CI runs as root). Without it this raises PermissionError saying so,
which fails the test: a disk-full test that quietly did not run would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class Tmpfs:
    def __init__(self, path: Path, size: str) -> None:
        self.path = Path(path)
        self.size = size
        self.mounted = False

    def mount(self) -> Tmpfs:
        if os.geteuid() != 0:
            raise PermissionError(
                "the disk-full test mounts a small tmpfs and needs root (CI runs as root); "
                f"run it as root (uid is {os.geteuid()}) — it must not be skipped"
            )
        mount = shutil.which("mount")
        if mount is None:
            raise RuntimeError("mount(8) not found: install the Debian package 'mount'")
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run([mount, "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs",
                        str(self.path)], check=True, capture_output=True, text=True)
        self.mounted = True
        return self

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def unmount(self) -> None:
        if not self.mounted:
            return
        # lazily: a file the test still holds open must not keep the mount around
        subprocess.run(["umount", "-l", str(self.path)], check=True, capture_output=True)
        self.mounted = False

    def __enter__(self) -> Tmpfs:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.unmount()
