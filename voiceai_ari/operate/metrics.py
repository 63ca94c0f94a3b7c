"""Prometheus metrics for one app, in their own registry.

Nothing here runs on the 20 ms hot path: RTP and playout counters are read from the calls' own counters when
Prometheus scrapes (live calls) and folded into totals when a call ends. Latencies are histograms observed
once per event (call set-up, turn, barge-in), never per frame.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..media.transport import TICK_LATE_BUCKETS, FrameClock

if TYPE_CHECKING:
    from ..call.app import VoiceAiApp

# the media counters of a call (RtpMedia.stats) that add up across calls
MEDIA_TOTALS = ("rx_packets", "tx_packets", "playout_underruns", "audio_in_ms", "audio_out_ms")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.setup = Histogram("voiceai_call_setup_seconds", "StasisStart to call up (media bridged, model ready)",
                               buckets=LATENCY_BUCKETS, registry=self.registry)
        self.turn = Histogram("voiceai_turn_latency_seconds",
                              "caller stopped speaking (speech_stopped) to first bot audio queued for Asterisk",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.barge_in = Histogram("voiceai_barge_in_reaction_seconds",
                                  "speech_started received to the bot's audio stopped (next 20 ms packet)",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        # totals of ended calls, and event counters: plain Counters, read by the collector below
        self.ended: Counter[str] = Counter()
        self.rtp_dropped: Counter[str] = Counter()
        self.model_errors: Counter[str] = Counter()
        self.tools: Counter[tuple[str, str]] = Counter()
        self.tokens: Counter[str] = Counter()
        self.cost_usd = 0.0
        self.model_failed_in_row = 0   # model responses that failed in a row, any call (/readyz: model_ok)
        self._app: VoiceAiApp | None = None
        self._tool_names: frozenset[str] | set[str] = frozenset()

    def attach(self, app: VoiceAiApp) -> None:
        self._app = app
        self._tool_names = app.agents.known_tools   # every agent's tools (grows with a reload: still bounded)
        self.registry.register(_AppCollector(self))

    def tool_called(self, name: str, ok: bool) -> None:
        """Count a tool call. The name comes from the model: one it made up counts as "unknown", so a model
        cannot create new label values (series) at will."""
        self.tools[(name if name in self._tool_names else "unknown", "ok" if ok else "error")] += 1

    def call_ended(self, stats: dict[str, Any]) -> None:
        """Fold an ended call's media counters into the totals."""
        for key in (*MEDIA_TOTALS, "model_reconnects"):
            self.ended[key] += int(stats.get(key, 0))
        for reason, n in stats.get("rx_dropped", {}).items():
            self.rtp_dropped[reason] += n

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _AppCollector(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Any]:
        m, app = self.m, self.m._app
        assert app is not None
        live = [c.media.stats() for c in app.calls.values()]
        total = Counter(m.ended)
        dropped = Counter(m.rtp_dropped)
        for st in live:
            for key in MEDIA_TOTALS:
                total[key] += int(st.get(key, 0))
            dropped.update(st.get("rx_dropped", {}))
        yield _gauge("voiceai_calls_active", "calls in progress", len(app.calls))
        app.slots_used()   # drops outbound calls past their give-up time
        yield _gauge("voiceai_calls_originating", "outbound calls (POST /calls) ringing; they count against "
                     "VOICEAI_MAX_CALLS", len(app.originating))
        yield _gauge("voiceai_offline_demo", "1: no OPENAI_API_KEY, calls get the offline echo demo model",
                     int(app.settings.offline_demo))
        yield _counter("voiceai_calls", "calls accepted", app.total_calls)
        agents = CounterMetricFamily("voiceai_agent_calls", "calls accepted, by agent (the configured names)",
                                     labels=["agent"])
        for name in sorted(app.agents.known):
            agents.add_metric([name], app.calls_by_agent[name])
        yield agents
        yield _counter("voiceai_calls_refused", "calls refused (capacity or draining)", app.refused_calls)
        yield _labelled("voiceai_broadcast_offers", "StasisBroadcast offers (VOICEAI_BROADCAST), by outcome: "
                        "claimed, lost (another worker won), declined (full or draining)", "outcome",
                        app.claims.counts.items())
        rtp = CounterMetricFamily("voiceai_rtp_packets", "RTP packets", labels=["direction"])
        rtp.add_metric(["in"], total["rx_packets"])
        rtp.add_metric(["out"], total["tx_packets"])
        yield rtp
        yield _labelled("voiceai_rtp_dropped", "inbound RTP dropped, by reason", "reason", dropped.items())
        yield _counter("voiceai_playout_underruns", "20 ms slots with no bot audio mid-reply",
                       total["playout_underruns"])
        yield _labelled("voiceai_model_errors", "model error events, by code", "code", m.model_errors.items())
        rec = CounterMetricFamily("voiceai_reconnects", "reconnects", labels=["kind"])
        rec.add_metric(["ari"], app.ari.reconnects)
        rec.add_metric(["model"], m.ended["model_reconnects"] + sum(
            getattr(c.model, "reconnects", 0) for c in app.calls.values()))
        yield rec
        tools = CounterMetricFamily("voiceai_tool_calls", "tool calls, by tool and outcome", labels=["name", "outcome"])
        for (name, outcome), n in sorted(m.tools.items()):
            tools.add_metric([name, outcome], n)
        yield tools
        audio = CounterMetricFamily("voiceai_audio_seconds", "audio streamed", labels=["direction"])
        audio.add_metric(["in"], total["audio_in_ms"] / 1000)
        audio.add_metric(["out"], total["audio_out_ms"] / 1000)
        yield audio
        yield _labelled("voiceai_model_tokens", "tokens reported in response.done usage", "kind", m.tokens.items())
        yield from _clock_metrics()
        yield _counter("voiceai_model_cost_usd", "estimated model cost at the configured prices", m.cost_usd)
        yield _gauge("voiceai_dashboard_streams", "dashboard event streams open", app.events.subscribers)
        yield _counter("voiceai_dashboard_streams_dropped", "dashboard streams dropped for falling behind",
                       app.events.dropped)


def _clock_metrics() -> Iterator[Any]:
    """The shared 20 ms send clock: how late its ticks ran (choppy audio starts here), and its re-anchors."""
    try:
        clock = FrameClock.shared()
    except RuntimeError:   # no running loop: nothing to report
        return
    cumulative, buckets = 0, []
    for edge, n in zip((*TICK_LATE_BUCKETS, float("inf")), clock.late_bins):
        cumulative += n
        buckets.append(("+Inf" if edge == float("inf") else str(edge), cumulative))
    yield HistogramMetricFamily("voiceai_media_tick_lateness_seconds",
                                "how late the shared 20 ms send tick ran against its deadline",
                                buckets=buckets, sum_value=clock.late_sum)
    yield _counter("voiceai_media_clock_reanchors", "send clock re-anchored after a stall of over 100 ms",
                   clock.pacing.reanchors)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, items: Iterable[tuple[str, float]]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(items):
        fam.add_metric([key], n)
    return fam
