"""What a ``%%qimage`` cell asks for, checked before anything is sent: the plan (the grid's axes as
the user gave them, with ``%config`` defaults filled in, or ``--each``'s items) and the cell (one
validated request per combination, built once and sent as is, with its label), and the heading of
its output area.

Every refusal is one ``UsageError`` line naming the option, or the ``%config`` value, it came from.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from itertools import product
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ._magic_args import parse_params, split_values

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ..core._client import AsyncClient
    from ._display import LiveGallery

__all__ = ["CellPlanner"]


@dataclass
class _Plan:
    """What a cell asks for, before any request is built: the grid's axes as the user gave them."""

    prompt: str
    negative: str | None
    n: int
    combos: list[tuple[str, str | None, str, int | None]]  # model, size (None: the model's), resolution, seed
    name: str
    timeout: float
    fresh: bool
    background: bool
    provider: str | None = None  # --provider, else the session's
    prompt_extend: bool | None = None
    watermark: bool | None = None
    host_params: dict[str, Any] = dataclass_field(default_factory=dict)  # --param NAME=VALUE
    from_config: dict[str, str] = dataclass_field(default_factory=dict)  # field -> the trait it came from
    prompts: list[str] | None = None  # --each: one filled prompt per item
    item_labels: list[str] | None = None
    each: str | None = None
    dry_run: bool = False
    max_cost: float | None = None


@dataclass
class _Cell:
    """The cell's generations: one validated request each (built once, sent as is), their labels."""

    plan: _Plan
    requests: list[GenerationRequest]
    labels: list[str | None]
    columns: int | None
    items: list[int] | None = None  # --each: the item each request was filled from


class CellPlanner:
    """The checks and building of a cell's requests (a mixin of :class:`~qimage_nb.notebook._magics.QImageMagics`,
    whose ``%config`` traits it reads)."""

    def _config_error(self, trait: str, message: str) -> UsageError:
        value = getattr(self, trait)
        return UsageError(f"{message} (from %config QImageMagics.{trait} = {value!r}; fix it or pass the option)")

    def _checked_display_settings(self) -> tuple[int, str, int]:
        from ..journal._thumbnails import THUMB_FORMATS

        if not 32 <= self.thumb_px <= 1024:
            raise self._config_error("thumb_px", f"thumb_px is {self.thumb_px}; use 32 to 1024 pixels")
        fmt = self.thumb_format.strip().upper()
        if fmt not in THUMB_FORMATS:
            raise self._config_error("thumb_format", f"thumb_format {self.thumb_format!r} is not JPEG or WEBP")
        if not 1 <= self.concurrency <= 64:
            raise self._config_error("concurrency", f"concurrency is {self.concurrency}; use 1 to 64")
        return self.thumb_px, fmt, self.concurrency

    def _checked_name(self, name: str | None, *, option: str = "-o") -> str:
        if name is None:
            name = self.output
            if not (name.isidentifier() and not keyword.iskeyword(name)):
                raise self._config_error("output", f"output {name!r} is not a Python variable name")
            return name
        if not (name.isidentifier() and not keyword.iskeyword(name)):
            raise UsageError(f"{option} {name!r} is not a Python variable name; e.g. {option} cats")
        return name

    def _plan(self, args: Any, prompt: str) -> _Plan:
        from ..view._words import MODEL_ALIASES

        from_config: dict[str, str] = {}
        models = [MODEL_ALIASES.get(m.lower(), m) for m in split_values(args.model)]
        if args.pro:
            if models and models != ["qwen-image-2.0-pro"]:
                raise UsageError("--pro and --model disagree; pass one of them")
            models = ["qwen-image-2.0-pro"]
        if not models:
            models = [MODEL_ALIASES.get(self.model.strip().lower(), self.model)]  # "pro" works here too
            from_config["model"] = "model"
        sizes: list[str | None] = list(split_values(args.size))
        if not sizes:
            sizes = [self.size or None]  # unset: the model's default (3.0 chooses its own size)
            from_config["size"] = "size"
        resolutions = split_values(args.resolution)
        if not resolutions:
            resolutions = [self.resolution]
            from_config["resolution"] = "resolution"
        seeds: list[int | None] = []
        for value in split_values(args.seed):
            try:
                seeds.append(int(value))
            except ValueError:
                raise UsageError(f"--seed {value!r} is not a whole number; e.g. --seed 42 or --seed 1,2,3") from None
        if args.extend and args.no_extend:
            raise UsageError("--extend and --no-extend disagree; pass one of them")
        n = args.n
        if n is None:
            n = self.n
            from_config["n"] = "n"
        timeout = args.timeout
        if timeout is None:
            timeout = self.timeout
            if not 0 < timeout < float("inf"):
                raise self._config_error("timeout", f"timeout is {timeout}; use a positive number of seconds")
        elif not 0 < timeout < float("inf"):
            raise UsageError(f"--timeout {timeout} must be a positive number of seconds")
        from ._batch import fill_prompts, items_of, max_cost_of

        prompts = labels = None
        if args.each is not None:
            items = items_of(args.each.strip(), self.shell.user_ns)
            prompts = fill_prompts(prompt, items)
            labels = [items.label(i) for i in range(len(items))]
        return _Plan(
            prompts=prompts,
            item_labels=labels,
            each=args.each.strip() if args.each is not None else None,
            dry_run=args.dry_run,
            max_cost=max_cost_of(args.max_cost),
            prompt=prompt,
            negative=args.negative,
            n=n,
            combos=list(product(models, sizes, resolutions, seeds or [None])),
            name=self._checked_name(args.output),
            timeout=timeout,
            fresh=args.new,
            background=args.background,
            provider=args.provider,
            prompt_extend=True if args.extend else False if args.no_extend else None,
            watermark=True if args.watermark else None,
            host_params=parse_params(args.param),
            from_config=from_config,
        )

    def _build(self, plan: _Plan, urls: list[str] | None) -> _Cell:
        """One request per combination of the grid (duplicates dropped, order kept), each made once
        with every field the cell gives; a bad value is one UsageError line naming its option."""
        from .._contract import GenerationRequest
        from .._exceptions import ValidationError
        from ..view._words import SHORT_MODEL

        if plan.prompts is not None:
            return self._build_each(plan, urls)
        requests: list[GenerationRequest] = []
        for model, size, resolution, seed in plan.combos:
            try:
                sized = {"size": size} if size is not None else {}  # none given: the model's default
                request = GenerationRequest.create(
                    plan.prompt, model=model, **sized, resolution=resolution, n=plan.n,
                    negative_prompt=plan.negative, image_urls=urls or None, seed=seed,
                    prompt_extend=plan.prompt_extend, watermark=plan.watermark,
                    host_params=plan.host_params or None,
                )
            except ValidationError as exc:
                raise self._usage(plan, exc) from None
            if request not in requests:
                requests.append(request)
        labels: list[str | None] = [None]
        columns = None
        if len(requests) > 1:
            axes = [(r.model, r.size, r.resolution, r.seed) for r in requests]
            varied = [i for i in range(4) if len({a[i] for a in axes}) > 1]

            def label(r: GenerationRequest) -> str:
                bits = [SHORT_MODEL.get(r.model, r.model), r.size, r.resolution]
                if r.size == "auto":
                    bits[1:] = ["size chosen by the model"]
                if r.seed is not None:
                    bits.append(f"seed {r.seed}")
                return " · ".join(bits)

            labels = [label(r) for r in requests]
            per_row = len(requests) // len({a[varied[0]] for a in axes}) if len(varied) >= 2 else len(requests)
            columns = per_row * plan.n
        return _Cell(plan=plan, requests=requests, labels=labels, columns=columns)

    def _build_each(self, plan: _Plan, urls: list[str] | None) -> _Cell:
        """--each: one request per item (times the grid's combinations), item by item, so the
        images bind in item order; every filled prompt checked before anything is sent."""
        import dataclasses

        assert plan.prompts is not None and plan.item_labels is not None
        requests: list[GenerationRequest] = []
        labels: list[str | None] = []
        items: list[int] = []
        for index, (prompt, label) in enumerate(zip(plan.prompts, plan.item_labels, strict=True)):
            try:
                one = self._build(dataclasses.replace(plan, prompt=prompt, prompts=None), urls)
            except UsageError as exc:
                raise UsageError(f"--each {plan.each}: item {index}: {exc}") from None
            requests += one.requests
            grid = len(one.requests) > 1
            labels += [f"{label} · {combo}" if grid else label for combo in one.labels]
            items += [index] * len(one.requests)
        columns = (len(requests) // len(plan.prompts)) * plan.n if len(requests) > len(plan.prompts) else None
        return _Cell(plan=plan, requests=requests, labels=labels, columns=columns, items=items)

    def _usage(self, plan: _Plan, exc: Any) -> UsageError:
        """A ValidationError as the one line the user sees: naming the %config value it came from."""
        if exc.field in plan.from_config:
            return self._config_error(plan.from_config[exc.field], exc.message)
        if exc.field == "negative_prompt":
            return UsageError(f"--negative: {exc.message}")
        return UsageError(exc.message)

    async def _checked(self, client: AsyncClient, cell: _Cell) -> _Cell:
        """Every request of the cell checked against the provider before anything is submitted."""
        from .._exceptions import ValidationError

        for request in cell.requests:
            try:
                await client.check(request)
            except ValidationError as exc:
                raise self._usage(cell.plan, exc) from None
        return cell

    def _live_for(
        self, cell: _Cell, thumb_px: int, fmt: str, *, emulator: bool, host_title: str | None = None
    ) -> LiveGallery:
        """The cell's output area, its heading saying what the plan asks for."""
        from .._contract import _short, parse_pixel_size
        from ._display import LiveGallery, LiveSlot

        plan = cell.plan
        slots = [LiveSlot(request=r, label=label) for r, label in zip(cell.requests, cell.labels, strict=True)]
        first = cell.requests[0]
        size = first.size if parse_pixel_size(first.size) else f"{first.size} {first.resolution}"
        if first.size == "auto":
            size = "size chosen by the model"
        if plan.prompts is not None:
            combos = len(cell.requests) // len(plan.prompts)
            subtitle = f"--each {plan.each}: {len(plan.prompts)} items"
            subtitle += f" x {combos} combinations" if combos > 1 else f" · {first.model} · {size}"
            subtitle += f" x {plan.n} -> {plan.name}" if plan.n > 1 else f" -> {plan.name}"
        elif len(cell.requests) == 1:
            subtitle = f"{first.model} · {size} · {plan.n} image{'s' if plan.n > 1 else ''} -> {plan.name}"
            if first.seed is not None:
                subtitle += f" · seed {first.seed}"
        else:
            subtitle = f"comparison grid: {len(cell.requests)} combinations x {plan.n} -> {plan.name}"
        if plan.negative:
            subtitle += f" · negative: {_short(plan.negative, 80)}"
        if plan.prompt_extend is not None:
            subtitle += " · prompt rewriting on" if plan.prompt_extend else " · prompt as written"
        if plan.watermark:
            subtitle += " · watermark"
        if plan.host_params:
            subtitle += " · " + ", ".join(f"{k}={v!r}" for k, v in plan.host_params.items())
        if host_title:
            subtitle += f" · on {host_title}"
        if emulator:
            # %qimage emulator said what the emulator is, once; each output only names it.
            subtitle += " · from the emulator"
        gallery = LiveGallery
        if plan.prompts is not None:
            from ._batch import BatchGallery

            gallery = BatchGallery  # one progress line for the batch, not one per item
        return gallery(
            slots,
            title=_short(plan.prompt, 200),
            subtitle=subtitle,
            banner=None,
            thumb_px=thumb_px,
            fmt=fmt,
            columns=cell.columns,
        )
