"""``python -m nora.torchvision_hook install | uninstall | status [--dir DIR]``: the start-up hook
that lets torchvision, and so timm, peft and transformers, import next to CPU torch in any order.

The hook is a one-line ``nora_torchvision_hook.pth`` in site-packages (``make setup`` writes it into
``.venv``); at every interpreter start it loads ``nora/_torchvision.py``, where the logic lives, by
its path and installs its import finder — without importing torch or the ``nora`` package.  (The
command line lives here because ``python -m nora._torchvision`` would warn: ``import nora`` has
imported that module already.)
"""

from __future__ import annotations

import argparse
import re
import sysconfig
from pathlib import Path

from nora import _torchvision

__all__ = ["PTH_NAME", "install_startup_hook", "pth_text", "startup_hook_status", "uninstall_startup_hook"]

PTH_NAME = "nora_torchvision_hook.pth"

# Run by site.py at start-up (a .pth line that starts with "import" is executed).
_PTH_CODE = (
    "try:\n"
    " if {name!r} not in sys.modules:\n"  # a second site directory with the hook: one finder is enough
    "  import importlib.util as u\n"
    "  s = u.spec_from_file_location({name!r}, {path!r})\n"
    "  m = u.module_from_spec(s)\n"
    "  s.loader.exec_module(m)\n"
    "  sys.modules[s.name] = m\n"
    "  m.install()\n"
    "except OSError:\n"
    " pass\n"  # nora moved or removed: start as if the hook were not there
    "except Exception as e:\n"
    " print('nora torchvision hook ({pth}) failed:', repr(e), file=sys.stderr)\n"
)


def _site_dir(site_dir=None) -> Path:
    return Path(site_dir) if site_dir is not None else Path(sysconfig.get_paths()["purelib"])


def pth_text(source=None) -> str:
    """The .pth file: a comment, then one line that loads ``source`` (default: nora/_torchvision.py)
    by its path and installs the finder; a missing file is skipped silently, any other failure is
    one line on stderr — start-up goes on either way."""
    path = str(Path(source or _torchvision.__file__).resolve())
    code = _PTH_CODE.format(name=_torchvision._HOOK_MODULE, path=path, pth=PTH_NAME)
    return (
        f"# nora torchvision hook, loads {path} ; remove: python -m nora.torchvision_hook uninstall\n"
        f"import sys; exec({code!r})\n"
    )


def install_startup_hook(site_dir=None) -> Path:
    """Write the hook into ``site_dir`` (default: this interpreter's site-packages); returns its path.
    Always rewrites it, so its time stamp says when it was last installed (the Makefile's target)."""
    target = _site_dir(site_dir) / PTH_NAME
    target.write_text(pth_text())
    return target


def uninstall_startup_hook(site_dir=None) -> Path | None:
    """Remove the hook from ``site_dir``; returns its path if there was one, else None."""
    target = _site_dir(site_dir) / PTH_NAME
    if not target.exists():
        return None
    target.unlink()
    return target


def startup_hook_status(site_dir=None) -> str:
    """One line: 'installed: PTH loads FILE', 'stale: ...' (FILE is gone) or 'not installed: PTH'."""
    target = _site_dir(site_dir) / PTH_NAME
    if not target.exists():
        return f"not installed: {target}"
    found = re.search(r"loads (.*) ; remove", target.read_text())
    source = found.group(1) if found else "?"
    return f"{'installed' if Path(source).is_file() else 'stale'}: {target} loads {source}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nora.torchvision_hook",
        description="The start-up hook (a .pth file in site-packages) that lets torchvision, timm, peft "
        "and transformers import next to CPU torch in any order; see nora/_torchvision.py.",
    )
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument("--dir", default=None, help="site-packages directory (default: this interpreter's)")
    args = parser.parse_args(argv)
    if args.action == "install":
        print(f"installed {install_startup_hook(args.dir)} (remove: python -m nora.torchvision_hook uninstall)")
    elif args.action == "uninstall":
        removed = uninstall_startup_hook(args.dir)
        print(f"removed {removed}" if removed else f"not installed: {_site_dir(args.dir) / PTH_NAME}")
    else:
        print(startup_hook_status(args.dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
