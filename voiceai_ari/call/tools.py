"""The tools the model acts through: flat GA declarations (realtime-api.md A.9) and their execution.

Arguments from the model are hostile: they become validated pydantic models before any side effect, and every
refusal or failure goes back to the model as a JSON result (style.md item 10); `ToolRegistry.execute` never
raises. Call control goes through the narrow `ToolContext` port; only `api_call` does I/O itself.
"""

import asyncio
import importlib
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import aiohttp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from ..config import HTTP_METHODS
from ..proxy import use_env_proxy
from .url_allowlist import allowed_url, base_entry

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DTMF_RE = re.compile(r"[0-9*#A-D]{1,32}")
DTMF_RULE = "digits must be 1 to 32 DTMF keys from 0-9, *, #, A, B, C, D (e.g. '1', '42#')"
CALL_CONTROL_TIMEOUT_S = 120.0  # hangup/transfer wait for the goodbye to be played out first


class ToolContext(Protocol):
    """What a tool may do to the call; implemented by `Call`."""

    call_id: str
    caller_number: str

    async def hangup(self) -> None: ...                       # after the queued bot audio has played out
    async def send_dtmf(self, digits: str) -> None: ...       # POST /channels/{id}/dtmf
    async def transfer(self, destination: "TransferDestination") -> None: ...  # raises TransferFailed


class TransferFailed(Exception):
    """The transfer did not take the caller away; the caller is still with the bot. The message says why."""


class TransferNotPossible(TransferFailed):
    """No transfer was attempted: the call is not in a state to be transferred (ending, already transferring)."""


@dataclass(frozen=True)
class TransferDestination:
    """One `transfer_targets` entry: a dialplan location (continue) or an endpoint (redirect)."""

    name: str
    context: str | None = None
    extension: str | None = None
    priority: int | None = None
    endpoint: str | None = None

    @classmethod
    def parse(cls, name: str, value: str) -> "TransferDestination":
        """Parse "context,extension,priority" or "TECH/resource". Raises: ValueError naming the target."""
        parts = [p.strip() for p in value.split(",")]
        if len(parts) == 3 and all(parts) and parts[2].isdigit() and int(parts[2]) >= 1:
            return cls(name, context=parts[0], extension=parts[1], priority=int(parts[2]))
        tech, sep, resource = value.strip().partition("/")
        if len(parts) == 1 and sep and re.fullmatch(r"[A-Za-z0-9_]+", tech) and resource.strip():
            return cls(name, endpoint=value.strip())
        raise ValueError(f"transfer target {name!r}: {value!r} is neither context,extension,priority "
                         "(priority a positive integer) nor TECH/resource")


@dataclass(frozen=True)
class ToolResult:
    output: str              # JSON text sent back as function_call_output.output
    ok: bool                 # False: refused or failed; the output explains it to the model
    ends_call: bool = False  # hangup/transfer: no response.create afterwards


def tool_error(message: str) -> ToolResult:
    return ToolResult(json.dumps({"error": message}), ok=False)


class Tool:
    """One callable tool. Subclasses implement `run`; `args` are the parsed JSON object, not yet validated."""

    timeout_s: float | None = None  # None: the registry's default

    def __init__(self, name: str, description: str, parameters: dict) -> None:
        self.name, self.description, self.parameters = name, description, parameters

    def declaration(self) -> dict:
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}

    async def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _strip_titles(schema: Any, mapping: bool = False) -> Any:
    """Drop pydantic's generated "title"s (noise in the prompt); keep a property that is *named* title."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v, k in ("properties", "$defs") and not mapping) for k, v in schema.items()
                if mapping or not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _format_errors(name: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in e["loc"]) or "arguments"
        parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return f"Invalid arguments for {name}: " + "; ".join(parts)


class FunctionTool(Tool):
    """A tool made by `@tool` from an `async def fn(ctx, *, arg: type = default)`."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], name: str, description: str) -> None:
        fields: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # model field -> argument name (aliases avoid BaseModel attributes)
        try:
            params = list(inspect.signature(fn, eval_str=True).parameters.values())
        except NameError as exc:
            raise TypeError(f"tool {name}: cannot resolve an annotation: {exc}") from exc
        if not params:
            raise TypeError(f"tool {name}: the first parameter must be the call context (ctx)")
        for i, p in enumerate(params[1:]):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) or p.name.startswith("_"):
                raise TypeError(f"tool {name}: parameter {p.name!r} must be a named keyword argument")
            ann = Any if p.annotation is p.empty else p.annotation
            default = ... if p.default is p.empty else p.default
            fields[f"a{i}"] = (Annotated[ann, Field(alias=p.name)], default)
            self._names[f"a{i}"] = p.name
        self.fn = fn
        self.model: type[BaseModel] = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"),
                                                   **fields)
        super().__init__(name, description, _strip_titles(self.model.model_json_schema()))

    async def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        try:
            model = self.model.model_validate(args)
        except ValidationError as exc:
            return tool_error(_format_errors(self.name, exc))
        out = await self.fn(ctx, **{arg: getattr(model, f) for f, arg in self._names.items()})
        if isinstance(out, ToolResult):
            return out
        if out is None or isinstance(out, str):
            out = {"status": "done"} if out is None else {"result": out}
        return ToolResult(json.dumps(out, default=str), ok=True)


def tool(name: str | None = None, description: str | None = None) -> Callable[[Callable], FunctionTool]:
    """Make a tool from `async def fn(ctx, *, city: str, days: int = 1) -> str | dict | ToolResult`.

    Schema and validation come from the signature (`Annotated[..., Field(...)]` adds descriptions and limits),
    the description from the docstring. A str result is sent as {"result": ...}, anything else as JSON.
    Raises: TypeError for a sync function or *args/**kwargs; ValueError for a bad name or no description.
    """
    def wrap(fn: Callable) -> FunctionTool:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@tool needs an async def, got {fn!r}")
        tname = name or fn.__name__
        if not NAME_RE.fullmatch(tname):
            raise ValueError(f"tool name {tname!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        desc = description or inspect.getdoc(fn)
        if not desc:
            raise ValueError(f"tool {tname}: give a description or a docstring (the model reads it)")
        return FunctionTool(fn, tname, desc)
    return wrap


class ToolRegistry:
    """The tools of a call: their declarations for `session.update`, and `execute` for the model's calls."""

    def __init__(self, tools: Iterable[Tool] = (), *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: Tool) -> None:
        """Raises: ValueError on a duplicate or invalid name."""
        if not isinstance(tool.name, str) or not NAME_RE.fullmatch(tool.name):
            raise ValueError(f"tool name {tool.name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if tool.name in self._tools:
            raise ValueError(f"duplicate tool name {tool.name!r}")
        self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def declarations(self) -> list[dict]:
        return [t.declaration() for t in self._tools.values()]

    async def execute(self, ctx: ToolContext, name: str, arguments: str) -> ToolResult:
        """Run the tool `name` with the model's raw JSON `arguments`. Never raises (except on cancellation)."""
        start = time.monotonic()
        result = await self._execute(ctx, name, arguments)
        logger.info("tool call=%s name=%.64r ok=%s %.0f ms args=%.200r", getattr(ctx, "call_id", "?"), name,
                    result.ok, (time.monotonic() - start) * 1000, arguments)
        return result

    async def _execute(self, ctx: ToolContext, name: str, arguments: str) -> ToolResult:
        t = self._tools.get(name) if isinstance(name, str) else None
        if t is None:
            return tool_error(f"Unknown tool {str(name)[:64]!r}. Available tools: {', '.join(self._tools) or 'none'}.")
        try:
            args = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
        except (ValueError, RecursionError):
            return tool_error(f"The arguments for {name} are not valid JSON; send a JSON object.")
        if not isinstance(args, dict):
            return tool_error(f"The arguments for {name} must be a JSON object.")
        timeout = t.timeout_s or self.timeout_s
        try:
            return await asyncio.wait_for(t.run(ctx, args), timeout)
        except TimeoutError:
            return tool_error(f"The tool {name} did not finish within {timeout:g} s and was stopped.")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the call is ending: do not swallow our own cancellation
            return tool_error(f"The tool {name} was cancelled.")
        except Exception as exc:  # noqa: BLE001 - any failure becomes a result the model can read
            logger.warning("tool %s failed", name, exc_info=True)
            return tool_error(f"The tool {name} failed: {type(exc).__name__}: {str(exc)[:200]}")


async def http_request(url: str, method: str, payload: dict | None, timeout_s: float, max_bytes: int) -> ToolResult:
    """One request, redirects not followed, at most `max_bytes` of body read."""
    kwargs: dict[str, Any] = {"json": payload} if payload is not None else {}
    if payload is not None and method in ("GET", "DELETE"):  # no body: payload becomes the query string
        kwargs = {"params": {k: v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()}}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                         trust_env=use_env_proxy(url)) as session:  # HTTPS_PROXY, NO_PROXY
            async with session.request(method, url, allow_redirects=False, **kwargs) as resp:
                buf = bytearray()
                while len(buf) <= max_bytes:
                    chunk = await resp.content.read(max_bytes + 1 - len(buf))
                    if not chunk:
                        break
                    buf += chunk
                status = resp.status
    except TimeoutError:
        return tool_error(f"{method} {url} timed out after {timeout_s:g} s.")
    except aiohttp.ClientError as exc:
        return tool_error(f"{method} {url} failed: {type(exc).__name__}: {str(exc)[:200]}")
    truncated = len(buf) > max_bytes
    text = bytes(buf[:max_bytes]).decode("utf-8", errors="replace")
    try:
        body: Any = text if truncated else json.loads(text)
    except ValueError:
        body = text
    return ToolResult(json.dumps({"status": status, "body": body, "truncated": truncated}), ok=True)


# --- built-ins and start-up -----------------------------------------------------------------------------------

def _check_dtmf(v: str) -> str:
    if not DTMF_RE.fullmatch(v):
        raise ValueError(DTMF_RULE)
    return v


Digits = Annotated[str, Field(description="DTMF keys to send, e.g. '1' or '1234#'",
                              json_schema_extra={"pattern": "^[0-9*#A-D]{1,32}$"}), AfterValidator(_check_dtmf)]


def builtin_tools(settings: Any) -> list[Tool]:
    """hangup_call, send_dtmf, and transfer_call / api_call when their allowlists are set. Raises: ValueError."""
    @tool("hangup_call", "End the call. Say goodbye first; the call ends after your last words are played.")
    async def hangup_call(ctx: ToolContext) -> ToolResult:
        await ctx.hangup()
        return ToolResult(json.dumps({"status": "hanging up"}), ok=True, ends_call=True)

    @tool("send_dtmf", "Send DTMF key presses (touch tones) on the call, e.g. to navigate a phone menu.")
    async def send_dtmf(ctx: ToolContext, *, digits: Digits) -> ToolResult:
        await ctx.send_dtmf(digits)
        return ToolResult(json.dumps({"status": "sent", "digits": digits}), ok=True)

    hangup_call.timeout_s = CALL_CONTROL_TIMEOUT_S
    tools: list[Tool] = [hangup_call, send_dtmf]

    targets = {n: TransferDestination.parse(n, v) for n, v in settings.transfer_targets.items()}
    if targets:
        def known(v: str) -> str:
            if v not in targets:
                raise ValueError(f"unknown transfer target {v[:64]!r}; allowed: {', '.join(targets)}")
            return v

        Target = Annotated[str, Field(description="who to transfer to", json_schema_extra={"enum": list(targets)}),
                           AfterValidator(known)]

        @tool("transfer_call", "Transfer the caller to a person or department. Tell the caller first; the "
              "transfer happens after your last words are played. Allowed targets: " + ", ".join(targets) + ".")
        async def transfer_call(ctx: ToolContext, *, target: Target) -> ToolResult:
            try:
                await ctx.transfer(targets[target])
            except TransferFailed as exc:   # the caller is still on the line: the model must go on talking
                return tool_error(f"The transfer to {target} failed: {exc}. The caller is still on the line "
                                  "with you; tell them.")
            return ToolResult(json.dumps({"status": "transferred", "target": target}), ok=True, ends_call=True)

        transfer_call.timeout_s = CALL_CONTROL_TIMEOUT_S
        tools.append(transfer_call)

    bases = list(settings.http_tool_allowlist)
    if bases:
        t_s, max_b = settings.http_tool_timeout_s, settings.http_tool_max_bytes
        listed = [base_entry(e) for e in bases]
        used = [m for m in HTTP_METHODS if any(m in ms for _, ms in listed)]  # the schema offers only these
        Method = Literal[tuple(used)]  # type: ignore[valid-type]

        @tool("api_call", "Call an HTTP API. Allowed base URLs and their methods: "
              + "; ".join(f"{b} ({', '.join(ms)})" for b, ms in listed) + ". `endpoint` is a path "
              "relative to the first base URL (e.g. 'items/42') or a full URL under one of them. GET/DELETE send "
              "`payload` as query parameters, the other methods as a JSON body. Redirects are not followed. "
              "Returns {status, body, truncated}.")
        async def api_call(
                ctx: ToolContext, *,
                endpoint: Annotated[str, Field(description="path under an allowed base URL, e.g. 'items/42'")],
                method: Method = "GET" if "GET" in used else used[0],
                payload: Annotated[dict[str, Any] | None, Field(description="query (GET/DELETE) or JSON body")] = None,
        ) -> ToolResult:
            try:
                url = allowed_url(bases, endpoint, method)
            except ValueError as exc:
                return tool_error(str(exc))
            return await http_request(url, method, payload, t_s, max_b)

        api_call.timeout_s = t_s + 5
        tools.append(api_call)
    return tools


def load_tool_modules(modules: Iterable[str]) -> list[Tool]:
    """Import each module and collect its module-level `@tool` objects. Raises: ValueError naming the module."""
    found: list[Tool] = []
    for mod_name in modules:
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:  # noqa: BLE001 - SyntaxError, ImportError, errors at import time
            raise ValueError(f"cannot import tool module {mod_name!r}: {type(exc).__name__}: {exc}") from exc
        for obj in vars(mod).values():
            if isinstance(obj, FunctionTool) and not any(obj is f for f in found):  # `alias = fn`: once
                found.append(obj)
    return found


def build_registry(settings: Any) -> ToolRegistry:
    """Built-ins, then `settings.tool_modules`. Raises: ValueError (bad target or module, duplicate name)."""
    return ToolRegistry([*builtin_tools(settings), *load_tool_modules(settings.tool_modules)])
