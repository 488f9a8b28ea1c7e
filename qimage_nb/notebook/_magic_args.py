"""The ``%%qimage`` argument syntax: its definitions, how a line is read, and how one is written.

IPython's ``magic_arguments`` builds the parser (and the ``%%qimage?`` help) from the definitions
in :func:`cell_arguments`. Its splitter (non-POSIX shlex) keeps quotes on a token and knows no
escapes, so :func:`parse` drops one surrounding pair from each value, and :func:`reproduce_cell`
writes values the way :func:`parse` reads them back. Only IPython is imported here: loading the
extension stays light.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

if TYPE_CHECKING:
    from .._contract import GenerationRequest

__all__ = [
    "DEFAULT_OUTPUT",
    "LINE_HELP",
    "LINE_SUBCOMMANDS",
    "cell_arguments",
    "keep_empty_cells",
    "parse",
    "parse_cell_line",
    "parse_params",
    "reproduce_cell",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_OUTPUT = "qimages"

LINE_SUBCOMMANDS = (
    "login",
    "logout",
    "config",
    "emulator",
    "models",
    "resume",
    "history",
    "pending",
    "panel",
    "export",
)
LINE_HELP = "\n".join(
    [
        "%qimage SUBCOMMAND: manage the session (generation is the %%qimage cell magic).",
        "",
        "  %qimage login [P|--provider P] ask for the provider's API key (hidden prompt; memory only)",
        "  %qimage login dashscope [REGION] [--workspace ID]",
        "                                 the same, with the key's region (singapore, beijing, us-east-1...)",
        "  %qimage logout [--provider P]  forget it",
        "  %qimage config                 effective settings (never the key), the balance, the cost",
        "                                 of this session's generations",
        "  %qimage emulator [--provider P] [--auto] [--stop] [--latency S]",
        "                                 the provider's bundled offline emulator in this kernel",
        "                                 (--auto: only when no key is configured)",
        "  %qimage models [--provider P]  the model ids the API in use lists",
        "  %qimage resume [TASK_ID | --all | --resend KEY] [-o NAME]",
        "                                 fetch a task's images without submitting it again; --resend",
        "                                 sends a submit whose outcome is unknown again, same key (no",
        "                                 second bill only where the host honours keys: APIMart; on",
        "                                 DashScope it may bill again)",
        "  %qimage history [-n N] [--pending]",
        "                                 the journal of generations on this machine",
        "  %qimage pending                tasks submitted but never downloaded",
        "  %qimage panel                  the interactive panel",
        "  %qimage export NAME DIR [--zip] [--last N]",
        "                                 full-size PNGs, manifest.csv and index.html in DIR (NAME:",
        "                                 a variable, or task ids after a restart)",
    ]
)

# In the order --help lists them.
_CELL_ARGUMENTS = (
    argument(
        "-o", "--output", metavar="NAME", default=None,
        help=f"variable that receives the images as a list of PIL images, in the API's order "
        f"(default: {DEFAULT_OUTPUT}, or %%config QImageMagics.output)",
    ),
    argument(
        "--provider", metavar="P", default=None,
        help="the host: apimart (the APIMart API), dashscope (Alibaba Model Studio), fal or replicate; "
        "comma-separated hosts make a comparison grid, one column per host; default: "
        "%%config QImageMagics.provider, $QIMAGE_PROVIDER, or the one whose key is set",
    ),
    argument(
        "--model", action="append", metavar="M",
        help="qwen-image-2.0 (default) or qwen-image-2.0-pro ('standard' and 'pro' work too), qwen-image-3.0 "
        "or qwen-image-3.0-pro, or another model the provider serves (%%qimage models); comma-separated "
        "values make a comparison grid",
    ),
    argument("--pro", action="store_true", help="use qwen-image-2.0-pro (better text, finer texture)"),
    argument(
        "--size", action="append", metavar="SIZE",
        help="aspect ratio: 1:1 (default; 3.0 picks its own), 4:3, 3:4, 16:9, 9:16, 3:2, 2:3; WIDTHxHEIGHT "
        "where the provider takes pixel sizes (dashscope); auto: the model chooses; comma-separated for a grid",
    ),
    argument("--resolution", action="append", metavar="1K|2K", help="1K (default) or 2K; comma-separated for a grid"),
    argument("-n", type=int, default=None, metavar="N", help="images per request, 1 to 6 (default 1)"),
    argument("--negative", metavar="TEXT", default=None, help="negative prompt (quote it), up to 500 characters"),
    argument(
        "--seed", action="append", metavar="N",
        help="seed, 0 to 2147483647, where the provider takes one (dashscope); comma-separated for a grid",
    ),
    argument("--extend", action="store_true", help="let the provider rewrite the prompt (where it can: dashscope)"),
    argument("--no-extend", action="store_true", help="send the prompt as written, no rewriting (dashscope)"),
    argument("--watermark", action="store_true", help="ask the provider for its watermark (dashscope)"),
    argument(
        "--param", action="append", metavar="NAME=VALUE",
        help="a host parameter qimage_nb does not know, sent as written (VALUE read as JSON where it "
        "parses, else as text), e.g. --param enable_thinking=false --param prompt_extend_mode=agent",
    ),
    argument(
        "--ref", action="append", nargs="+", metavar="URL_OR_NAME",
        help="reference image(s), at most 3: an http(s) URL, a variable holding images this package "
        "made (e.g. qimages[0]; their source URL is reused), another PIL image or a file path "
        "(uploaded first)",
    ),
    argument(
        "--each", metavar="VAR", default=None,
        help="one generation per item of VAR (a list of strings, a list of dicts or a pandas DataFrame): "
        "the cell body is a template, {} the whole item, {column} a field, {{ }} literal braces",
    ),
    argument("--dry-run", action="store_true", help="show the plan and its estimated cost; send nothing"),
    argument(
        "--max-cost", metavar="AMOUNT", default=None,
        help="refuse the cell when its estimate is higher, and stop submitting before spending more (e.g. 0.50)",
    ),
    argument("--new", action="store_true", help="fresh images even if an identical request is cached"),
    argument(
        "--background", action="store_true",
        help="return at once; thumbnails still fill in and NAME is bound when the images arrive",
    ),
    argument("--timeout", type=float, default=None, metavar="S", help="seconds to wait (default 900)"),
)  # fmt: skip


def cell_arguments(func: F) -> F:
    """Give ``func`` the ``%%qimage`` arguments: its parser, and its docstring followed by the help."""
    for decorate in reversed(_CELL_ARGUMENTS):  # as if stacked above the function, top first
        func = decorate(func)
    func = magic_arguments(name="%qimage")(func)
    # magic_arguments writes the usage as a reStructuredText literal block ("::" and an indent),
    # which %%qimage? shows raw: plain words read better there.
    doc = func.__doc__ or ""
    if doc.startswith("::\n\n  "):
        usage, _, rest = doc.removeprefix("::\n\n  ").partition("\n\n")
        head, *more = usage.splitlines()
        indent = " " * len("Usage: %%qimage ")
        func.__doc__ = "\n".join(["Usage: " + head, *(indent + line.strip() for line in more)]) + "\n\n" + rest
    return func


@cell_arguments
def _cell_syntax(line: str, cell: str) -> None:
    """Generate images with Qwen Image 2.0; the cell body is the prompt."""


def _unquote(value: Any) -> Any:
    """Drop one pair of surrounding quotes: IPython's argument splitter keeps them on the value."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(item) for item in value]
    return value


def parse(func: Any, line: str) -> Any:
    """``parse_argstring`` (UsageError on bad input, generated help) with quotes removed from values.

    A misspelt option gets the nearest real one suggested: argparse alone says only
    "unrecognized arguments: --sise 16:9".
    """
    from IPython.core.error import UsageError

    try:
        args = parse_argstring(func, line)
    except UsageError as exc:
        raise UsageError(_with_suggestion(str(exc), func)) from None
    for name, value in vars(args).items():
        setattr(args, name, _unquote(value))
    return args


def _with_suggestion(message: str, func: Any) -> str:
    import difflib

    parser = getattr(func, "parser", None)
    if parser is None or "unrecognized arguments:" not in message:
        return message
    known = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    unknown = message.split("unrecognized arguments:", 1)[1].split()
    for token in unknown:
        name = token.split("=", 1)[0]
        if name.startswith("-"):
            close = difflib.get_close_matches(name if name.startswith("--") else "-" + name, known, n=1, cutoff=0.6)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    return message


def keep_empty_cells(lines: list[str]) -> list[str]:
    """An input transformer: a ``%%qimage`` cell with no body reaches the magic as an empty prompt.

    IPython refuses a cell magic with an empty body before the magic runs ("did you mean the line
    magic %qimage?"), while a body of spaces reaches it and gets the magic's own message ("prompt is
    empty: describe the image..."). One newline as the body makes the two cases the same.
    """
    if lines and lines[0].startswith("%%qimage") and not lines[0].startswith("%%qimage?"):
        first = lines[0][len("%%qimage"):]
        if (not first or first[0].isspace()) and not "".join(lines[1:]):
            return [lines[0] if lines[0].endswith("\n") else lines[0] + "\n", "\n"]
    return lines


def parse_cell_line(line: str) -> Any:
    """The ``%%qimage`` line read as the cell magic reads it."""
    return parse(_cell_syntax, line)


def split_values(values: list[str] | None) -> list[str]:
    """``--size 1:1,16:9`` (or repeated options) -> ``["1:1", "16:9"]``, order kept, no duplicates."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def split_refs(groups: list[list[str]] | None) -> list[str]:
    """``--ref a b --ref c`` -> ``["a", "b", "c"]``."""
    return [token for group in groups or [] for token in group]


# --- writing a cell --------------------------------------------------------------------------


def _quote(value: str) -> str:
    """Quote one %%qimage argument the way :func:`parse` reads it back.

    A value is wrapped in a quote character it does not contain whenever it has whitespace or
    quotes, or starts with ``-`` (argparse would take it for an option). A value holding both kinds
    of quote, or a line break, cannot be written at all: refused rather than printed as a cell that
    means something else.
    """
    if "\n" in value or "\r" in value:
        raise ValueError("a value with a line break cannot be passed as a %%qimage argument")
    if value and not value.startswith("-") and not any(c.isspace() or c in "'\"" for c in value):
        return value
    for mark in ("'", '"'):
        if mark not in value:
            return f"{mark}{value}{mark}"
    raise ValueError("a value with both ' and \" cannot be passed as a %%qimage argument")


def parse_params(values: list[str] | None) -> dict[str, Any]:
    """``--param NAME=VALUE`` as a dict: VALUE as JSON where it parses (false, 3, "x", [1]), else text."""
    from IPython.core.error import UsageError

    params: dict[str, Any] = {}
    for item in values or ():
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {item!r} is not NAME=VALUE; e.g. --param enable_thinking=false")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        params[name.strip()] = value
    return params


def reproduce_cell(request: GenerationRequest, *, name: str = DEFAULT_OUTPUT, provider: str | None = None) -> str:
    """The exact ``%%qimage`` cell that makes this request again (served from the journal when unchanged).

    ``provider``: the host's name, written as ``--provider`` when given. Raises ``ValueError`` when
    an argument (negative prompt or reference URL) holds both kinds of quote or a line break, which
    the magic's argument syntax cannot express.
    """
    options = [("-o", name)]
    if provider:
        options.append(("--provider", provider))
    options += [
        ("--model", request.model),
        ("--size", request.size),
        ("--resolution", request.resolution),
        ("-n", str(request.n)),
    ]
    if request.negative_prompt:
        options.append(("--negative", request.negative_prompt))
    if request.seed is not None:
        options.append(("--seed", str(request.seed)))
    for url in request.image_urls:
        if not isinstance(url, str):
            raise ValueError("a local picture sent inside the request cannot be written as --ref: name its file or variable")
        options.append(("--ref", url))
    options += [("--param", f"{name}={json.dumps(value, ensure_ascii=False)}")
                for name, value in request.host_params.items()]
    flags = []
    if request.prompt_extend is not None:
        flags.append("--extend" if request.prompt_extend else "--no-extend")
    if request.watermark:
        flags.append("--watermark")
    return (
        "%%qimage "
        + " ".join([*(f"{option} {_quote(value)}" for option, value in options), *flags])
        + "\n"
        + request.prompt
    )
