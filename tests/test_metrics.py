"""Metrics that the model can influence: a tool call's label is a registered tool name or "unknown"."""

import asyncio

from voiceai_ari.ari import Channel
from voiceai_ari.call.app import VoiceAiApp
from voiceai_ari.call.call import Call
from voiceai_ari.call.tools import ToolRegistry, tool
from voiceai_ari.config import load_settings
from voiceai_ari.providers.base import ToolCall


@tool()
async def check_order(ctx, *, order: str) -> str:
    """Look up an order."""
    return f"order {order} has shipped"


class ModelStub:
    """Only what `Call._run_tool` touches: the tool result goes back to the model."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []

    def send_tool_result(self, call_id: str, output: str, respond: bool = True) -> None:
        self.results.append((call_id, output))


def test_a_made_up_tool_name_is_counted_as_unknown_and_creates_no_series():
    async def main() -> bytes:
        s = load_settings(_env_file=None, transcript_dir="", control_port=0)
        app = VoiceAiApp(s, model_factory=ModelStub, tools=ToolRegistry([check_order]))
        call = Call(channel=Channel(id="chan-1"), ari=app.ari, media=None, model=ModelStub(), tools=app.tools,
                    settings=s, bind=app._bind, metrics=app.metrics)
        await call._run_tool(ToolCall("c1", "check_order", '{"order": "A17"}'))
        for made_up in ("rm_rf_everything", "exfiltrate_db", "check_order "):
            await call._run_tool(ToolCall("c2", made_up, "{}"))
        assert [out for _, out in call.model.results][0] == '{"result": "order A17 has shipped"}'
        return app.metrics.exposition()

    text = asyncio.run(main()).decode()
    lines = [x for x in text.splitlines() if x.startswith("voiceai_tool_calls_total")]
    assert lines == ['voiceai_tool_calls_total{name="check_order",outcome="ok"} 1.0',
                     'voiceai_tool_calls_total{name="unknown",outcome="error"} 3.0']
    assert "rm_rf_everything" not in text and "exfiltrate_db" not in text
