"""The model's side of a call without I/O: idle prompts, failed responses, the cost of cached tokens, and
/readyz's model health."""

import pytest
import requests

from voiceai_ari.call.conversation import MAX_FAILED_IN_ROW, TurnGuard, usage_cost
from voiceai_ari.config import load_settings


def test_idle_caller_is_prompted_n_times_then_left():
    g = TurnGuard(idle_prompts=2)
    assert [g.caller_idle(), g.caller_idle()] == ["prompt", "prompt"]
    g.caller_spoke()                              # speech starts the count again
    assert [g.caller_idle(), g.caller_idle(), g.caller_idle()] == ["prompt", "prompt", "goodbye"]
    assert g.caller_idle() is None                # leaving already: nothing more
    g.caller_spoke()                              # unless the caller speaks up before the goodbye ends
    assert not g.saying_goodbye and g.caller_idle() == "prompt"
    assert TurnGuard(idle_prompts=0).caller_idle() == "goodbye"


def test_failed_responses_apologise_once_per_turn_then_fall_back():
    g = TurnGuard(idle_prompts=2)
    assert g.response_done("failed") == "apologise"
    assert g.response_done("failed") is None           # the apology failed too: no apology for the apology
    g.caller_spoke()                                   # a new turn may be apologised for
    assert g.response_done("failed") == "fallback"     # but three in a row is enough
    g = TurnGuard(idle_prompts=2)
    for _ in range(5):                                  # failures with good answers between never add up
        assert g.response_done("failed") == "apologise"
        assert g.response_done("completed") is None
    assert g.response_done("cancelled") is None and g.failed_in_row == 0


def test_cached_input_is_priced_as_cached(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings(_env_file=None)
    usage = {"total_tokens": 3300, "input_tokens": 3000, "output_tokens": 300,
             "input_token_details": {"cached_tokens": 1500, "text_tokens": 1000, "audio_tokens": 2000,
                                     "image_tokens": 0,
                                     "cached_tokens_details": {"text_tokens": 500, "audio_tokens": 1000}},
             "output_token_details": {"text_tokens": 100, "audio_tokens": 200}}
    counts, cost = usage_cost(usage, s)
    assert counts == {"audio_in": 1000, "cached_audio_in": 1000, "text_in": 500, "cached_text_in": 500,
                      "audio_out": 200, "text_out": 100}
    by_hand = (1000 * 32 + 1000 * 0.40 + 500 * 4 + 500 * 0.40 + 200 * 64 + 100 * 24) / 1e6
    assert cost == pytest.approx(by_hand)
    full_rate = (2000 * 32 + 1000 * 4 + 200 * 64 + 100 * 24) / 1e6
    assert cost < full_rate - 0.03


def test_cached_tokens_without_a_breakdown_are_split_by_kind(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    counts, _ = usage_cost({"input_token_details": {"cached_tokens": 300, "text_tokens": 100,
                                                    "audio_tokens": 300}}, load_settings(_env_file=None))
    assert counts["cached_audio_in"] + counts["cached_text_in"] == 300
    assert (counts["audio_in"], counts["text_in"]) == (75, 25)


def test_readyz_reports_the_model_failing():
    from tests.test_control import serve_in_thread, stop_in_thread
    loop, box = serve_in_thread(ready=True)
    try:
        url = f"http://127.0.0.1:{box['api'].port}/readyz"
        r = requests.get(url, timeout=5)
        assert r.status_code == 200 and r.json()["model_ok"] is True
        box["app"].metrics.model_failed_in_row = MAX_FAILED_IN_ROW
        r = requests.get(url, timeout=5)
        assert r.status_code == 503 and r.json()["model_ok"] is False and r.json()["ari_connected"] is True
    finally:
        stop_in_thread(loop, box)
