"""``%qimage export``: a run's images into a folder (PNGs, manifest.csv, index.html, a zip).

The work is ``journal._export.export``; here only the line is read: names of the notebook's
variables (followed like ``--ref``, nothing eval'd), or task ids and journal keys when a restart
has emptied the namespace, or ``--last N``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ._magic_args import parse

if TYPE_CHECKING:
    from ._magics import QImageMagics

__all__ = ["export_command"]


@magic_arguments(name="qimage export")
@argument("what", nargs="*", help="variables holding images or Generations, or task ids, then the folder")
@argument("--zip", action="store_true", help="also write FOLDER.zip beside the folder")
@argument("--last", type=int, default=None, metavar="N", help="the journal's N newest generations")
@argument("--overwrite", action="store_true", help="replace files of the same name with other content")
@argument("--provider", metavar="P", default=None, help="whose journal entries (default: the one in use)")
def export_command(magics: QImageMagics, line: str) -> None:
    """%qimage export NAME... DIR [--zip] [--last N] [--overwrite]: full-size PNGs with their
    provenance, manifest.csv and an offline index.html in DIR (and DIR.zip with --zip)."""
    args = parse(export_command, line)
    if not args.what:
        raise UsageError("%qimage export NAME DIR: name the images (or --last N) and the folder, e.g. %qimage export cats out/cats")
    *names, folder = args.what
    if not names and args.last is None:
        raise UsageError(
            f"%qimage export {folder}: say what to export before the folder: a variable, task ids, or --last N"
        )
    from .._exceptions import ValidationError
    from ..journal._export import export
    from ._refs import evaluate
    from ._session import get_session

    store = get_session().client(args.provider).store
    items = []
    for name in names:
        try:
            found, value = evaluate(name, magics.shell.user_ns)
        except ValidationError:
            found, value = False, None  # not a variable reference: a task id such as task_01-ab
        items.append(value if found else name)
    done = export(items, folder, zip=args.zip, last=args.last, overwrite=args.overwrite, store=store)
    said = f"{len(done.images)} image{'s' if len(done.images) != 1 else ''} -> {done.directory}"
    files = "manifest.csv, index.html" + (f"; archive {done.archive}" if done.archive else "")
    same = f" ({len(done.unchanged)} files already there, unchanged)" if done.unchanged else ""
    print(f"exported {said} ({files}){same}")
