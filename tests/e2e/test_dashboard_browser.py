"""The dashboard in a real browser: headless Chromium from Debian's packages driven by Selenium through Debian's
chromedriver (nothing downloads a browser or a driver), against a real bot, the Asterisk sandbox and sipp.

One call, watched the way an operator would: the page without the token can neither see nor act; with it,
the call appears within a second of being answered, the bot's lines appear as the fake model speaks, the
hang-up button ends the call (the caller receives BYE), the call shows in history with its cost, and its
stereo recording (caller left, bot right) is in step and plays on the page. Screenshots of each state go to
$VOICEAI_ARTIFACTS (default tests/artifacts/dashboard/, git-ignored); their paths are printed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from . import analysis as A
from .caller import Phone, ari, place_call
from .conftest import E2E_KEY
from .test_call import no_leftovers
from .test_conversation import frames_with_tone

pytestmark = pytest.mark.e2e
TOKEN = "dash-e2e-token-0123456789"
PORT = 18092
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("VOICEAI_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"))
GREETING, REPLY = "Hello, thanks for calling. How can I help?", "Your order ships tomorrow."


def chromium():
    """A headless Chromium: Debian's browser and driver at fixed paths, Selenium Manager never consulted."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver (scripts/test does)")
    # Selenium Manager (which may download a browser or a driver) is skipped when the driver's path is given;
    # pointing it at nothing makes any use of it an error instead of a silent download
    os.environ["SE_MANAGER_PATH"] = "/nonexistent/selenium-manager-is-not-used"
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(10)
    return driver


@pytest.fixture
def browser():
    driver = chromium()
    caps = driver.capabilities
    print(f"\n[e2e] browser: {caps.get('browserName')} {caps.get('browserVersion')}, chromedriver "
          f"{caps.get('chrome', {}).get('chromedriverVersion', '?').split(' ')[0]}")
    yield driver
    driver.quit()


class Page:
    """The browser, driven from a thread: Selenium blocks, and the caller's RTP runs on this event loop."""

    def __init__(self, driver) -> None:
        self.d = driver
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def run(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def js(self, script: str, *args):
        return await self.run(self.d.execute_script, script, *args)

    async def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        await self.run(self.d.save_screenshot, str(path))
        print(f"[e2e] screenshot: {path}")
        return path

    async def until(self, script: str, what: str, timeout: float = 10.0, *args):
        """Poll a JS expression (`return ...`) until it is truthy; its value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = await self.js(script, *args)
            if v:
                return v
            await asyncio.sleep(0.05)
        await self.shot(f"failed-{what.replace(' ', '-')}")
        raise AssertionError(f"page: {what} not seen in {timeout} s")


def visible(sel: str) -> str:
    return f"const e = document.querySelector({sel!r}); return !!e && !e.closest('[hidden]');"


async def test_dashboard_live_call_transcript_hangup_history_and_recording(make_bot, fake_model, browser, tmp_path):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    script = [{"audio": "tone", "tone_hz": 440, "tone_seconds": 1.0, "transcript": GREETING},
              {"audio": "tone", "tone_hz": 660, "tone_seconds": 1.0, "transcript": REPLY,
               "function_call": {"name": "send_dtmf", "arguments": {"digits": "42"}}},
              {"audio": "none"}, {"audio": "none"}]   # after the tool result, after the caller's key
    fake = await fake_model(mode="tone", speed=1, script=script)
    rec_dir = tmp_path / "recordings"
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="model",
                         VOICEAI_CONTROL_PORT=str(PORT), VOICEAI_CONTROL_TOKEN=TOKEN,
                         VOICEAI_RECORD_DIR=str(rec_dir), VOICEAI_TRANSFER_TARGETS='{"sales": "from-caller,200,1"}')
    page = Page(browser)
    url = f"http://127.0.0.1:{PORT}/dashboard/"

    # 1. without the token: a prompt, no calls, no actions
    await page.run(browser.get, url)
    await page.until(visible("#login-form"), "token prompt")
    assert await page.js("return !!document.querySelector('#live').closest('[hidden]')"), "no calls list"
    assert await page.js("return document.querySelectorAll('#calls tr[data-call]').length") == 0
    await page.shot("01-token-prompt")

    # 2. with it: the live page, empty; a watcher notes (wall clock) when the first call row appears
    await page.run(lambda: browser.find_element("id", "token").send_keys(TOKEN))
    await page.run(lambda: browser.find_element("css selector", "#login-form button").click())
    await page.until("return document.body.dataset.ready === '1'", "page ready")
    await page.until(visible("#no-calls"), "no calls")
    await page.js("""
        window.__rowAt = null;
        window.__peak = [-90, -90];    // the loudest caller / bot meter the row has shown
        new MutationObserver(() => {
          const row = document.querySelector('#calls tr[data-call]');
          if (!row) return;
          window.__rowAt = window.__rowAt || Date.now();
          row.querySelectorAll('.meter').forEach((m, i) => {
            window.__peak[i] = Math.max(window.__peak[i], +m.dataset.dbfs); });
        }).observe(document.querySelector('#calls tbody'), {childList: true});""")
    await page.shot("02-no-calls")

    # 3. a call: silence, then the caller speaks (1000 Hz, 0.8 s) after the greeting
    phone = Phone("g722")
    phone.play(A.silence(2.5) + A.tone(1000, 0.8, amplitude=8000) + A.silence(0.2))
    loop = asyncio.get_running_loop()
    wall = time.time() - loop.time()
    call = asyncio.create_task(place_call("100", phone=phone, call_seconds=30.0, workdir=tmp_path / "sipp"))
    while phone.remote is None and not call.done():     # the SDP answer reached the caller
        await asyncio.sleep(0.002)
    answered_wall = loop.time() + wall
    row_at = await page.until("return window.__rowAt", "the call's row", 5.0)
    appeared_s = row_at / 1000 - answered_wall
    print(f"[e2e] the call appeared in the page {appeared_s * 1000:.0f} ms after it was answered")
    assert appeared_s < 1.0
    call_id = await page.js("return document.querySelector('#calls tr[data-call]').dataset.call")
    await page.until("return document.querySelector('#calls tr[data-call] .meter[data-dbfs]')"
                     " && [...document.querySelectorAll('#calls .meter')].some(m => +m.dataset.dbfs > -50)",
                     "a level meter moving", 6.0)
    row = await page.js("return document.querySelector('#calls tr[data-call]').innerText")
    assert "sipp" in row and "talking" in row and "openai-realtime" in row and "rtp slin24 / g722" in row, row
    await page.shot("03-live-call")

    # 4. the call's page: the bot's lines appear as the fake model speaks them
    await page.run(lambda: browser.find_element("css selector", "#calls tr[data-call] a").click())
    await page.until("return [...document.querySelectorAll('#timeline li.bot')].some(l => l.innerText.includes("
                     f"{GREETING!r}))", "the greeting's transcript line", 8.0)
    greeting_seen = loop.time()
    await page.until("return [...document.querySelectorAll('#timeline li.bot')].some(l => l.innerText.includes("
                     f"{REPLY!r}))", "the reply's transcript line", 12.0)
    reply_seen = loop.time()
    peak_in, peak_out = await page.js("return window.__peak")
    print(f"[e2e] level meters peaked at {peak_in} dBFS (caller's tone) and {peak_out} dBFS (bot's)")
    assert peak_in > -30 and peak_out > -30, "both meters moved with the audio"
    # the tool the model called, with its arguments and result; then a key the caller presses
    tool = await page.until("const l = document.querySelector('#timeline li.tool'); return l && l.innerText",
                            "the tool call", 8.0)
    assert "send_dtmf" in tool and '"digits": "42"' in tool and '"status": "sent"' in tool, tool
    phone.send_dtmf("7")
    await page.until("return [...document.querySelectorAll('#timeline li.dtmf')].some(l => l.innerText.includes('7'))",
                     "the caller's key", 5.0)
    await page.shot("04-call-transcript")

    # the operator's actions: say, replace the instructions (the fake model receives both)
    fs = fake.sessions[0]
    await page.run(lambda: browser.find_element("id", "say-text").send_keys("Your parcel left the depot."))
    await page.run(lambda: browser.find_element("css selector", "#act-say button").click())

    def said() -> list[dict]:
        return [e for e in fs.events_of("conversation.item.create") if e["item"].get("role") == "system"
                and "Your parcel left the depot." in e["item"]["content"][0]["text"]]
    for _ in range(100):
        if said():
            break
        await asyncio.sleep(0.05)
    assert said(), "the page's Say reached the model"
    await page.run(lambda: browser.find_element("id", "instr-text").send_keys("Speak French."))
    await page.run(lambda: browser.find_element("css selector", "#act-instructions button").click())
    await page.until("return document.querySelector('#action-result').innerText.includes('updated')",
                     "instructions updated")
    for _ in range(40):
        if fs.config.get("instructions") == "Speak French.":
            break
        await asyncio.sleep(0.05)
    assert fs.config["instructions"] == "Speak French."

    # 5. another tab without the token: sees nothing, and the API refuses its hang-up
    main = browser.current_window_handle
    await page.run(browser.switch_to.new_window, "tab")   # a new tab: its own, empty sessionStorage
    await page.run(browser.get, url)
    await page.until(visible("#login-form"), "token prompt in the second tab")
    status = await page.run(browser.execute_async_script, """
        const done = arguments[arguments.length - 1];
        fetch('/calls/' + encodeURIComponent(arguments[0]) + '/hangup', {method: 'POST',
              headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => done(r.status));""", call_id)
    assert status == 401
    await page.shot("05-no-token-cannot-act")
    await page.run(browser.close)
    await page.run(browser.switch_to.window, main)
    assert not call.done(), "the call is still up after the refused hang-up"

    # 6. hang up from the page: the caller receives BYE
    clicked = loop.time()
    await page.run(lambda: browser.find_element("id", "act-hangup").click())
    res = await asyncio.wait_for(call, 15)
    assert res.got_bye, "the page's hang-up ends the call: " + res.summary()
    bye_s = res.sip_time("BYE", "recv") - clicked
    print(f"[e2e] BYE reached the caller {bye_s * 1000:.0f} ms after the hang-up click; greeting line shown "
          f"{greeting_seen - res.t_answered:.1f} s, reply line {reply_seen - res.t_answered:.1f} s after the answer")
    await page.until("return [...document.querySelectorAll('#timeline li')].some(l => l.dataset.event === 'call_end')",
                     "call_end in the timeline", 8.0)
    await page.shot("06-call-ended")
    assert (await no_leftovers(bot)) == ([], [], [])

    # 7. history: the call with its cost, its detail, its recording playable
    await page.run(browser.get, url + "#/history")
    await page.until("return document.querySelector('#past tr[data-name]')", "the call in history")
    cost_text = await page.js("return document.querySelector('#past tr[data-name] .cost').innerText")
    assert cost_text.startswith("$") and float(cost_text[1:]) > 0, cost_text
    assert "sipp" in await page.js("return document.querySelector('#past tr[data-name]').innerText")
    await page.shot("07-history")
    await page.run(lambda: browser.find_element("css selector", "#past tr[data-name] a").click())
    await page.until("return [...document.querySelectorAll('#past-timeline li.bot')].length >= 2", "history detail")
    facts = await page.js("return document.querySelector('#past-facts').innerText")
    assert "hung up via the control API" in facts and "$0.0" in facts, facts
    duration = await page.until("const p = document.querySelector('#player');"
                                "return !p.hidden && p.readyState >= 1 && p.duration", "the recording loaded", 8.0)
    await page.shot("08-history-detail")
    await page.run(browser.set_window_size, 390, 844)     # a phone
    await page.run(browser.get, url + "#/history")
    await page.until("return document.querySelector('#past tr[data-name]')", "history on a phone")
    await page.shot("09-phone-history")

    # 8. the recording: private, stereo, caller left and bot right, in step with what the caller lived
    [wav] = list(rec_dir.glob("*.wav"))
    assert stat.S_IMODE(wav.stat().st_mode) == 0o600 and stat.S_IMODE(rec_dir.stat().st_mode) == 0o700
    with wave.open(str(wav)) as w:
        rate, x = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert abs(duration - len(x) / rate) < 0.1
    left, right = x[:, 0].astype(float), x[:, 1].astype(float)
    caller_on = A.tone_segments(left.astype("<i2").tobytes(), rate, 1000, tol_hz=30, min_dbfs=-40).start_s
    reply_on = A.tone_segments(right.astype("<i2").tobytes(), rate, 660, tol_hz=30, min_dbfs=-40).start_s
    assert caller_on is not None and reply_on is not None, (caller_on, reply_on)
    sent = res.t_answered + 2.5   # the phone starts its 2.5 s of silence at the answer (approximately)
    heard = frames_with_tone(res, 660)[0]
    tx = [t for t in phone.tx_times if t >= res.t_answered]
    tone_sent = tx[125] if len(tx) > 125 else sent      # the 126th packet starts the tone
    lived, recorded = heard - tone_sent, reply_on - caller_on
    print(f"[e2e] recording {wav.name}: {len(x) / rate:.1f} s stereo at {rate} Hz; caller's words to the reply: "
          f"{lived * 1000:.0f} ms at the phone, {recorded * 1000:.0f} ms in the recording")
    assert abs(lived - recorded) < 0.15, "caller and bot are in step in the recording"


async def login(page: Page, url: str) -> None:
    await page.run(page.d.get, url)
    await page.until(visible("#login-form"), "token prompt")
    await page.run(lambda: page.d.find_element("id", "token").send_keys(TOKEN))
    await page.run(lambda: page.d.find_element("css selector", "#login-form button").click())
    await page.until("return document.body.dataset.ready === '1'", "page ready")


async def test_dashboard_originates_and_transfers_to_allowlisted_targets_only(make_bot, fake_model, browser,
                                                                               tmp_path):
    """The page's call button dials a VOICEAI_ORIGINATE_TARGETS name (sipp answers as the callee); the call
    shows up; its transfer menu offers only VOICEAI_TRANSFER_TARGETS, a forged target is refused (422), and
    the offered one takes the callee out of the bot to the dialplan."""
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.5, speed=4)
    await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="model",
                   VOICEAI_CONTROL_PORT=str(PORT), VOICEAI_CONTROL_TOKEN=TOKEN,
                   VOICEAI_ORIGINATE_TARGETS='{"ivr": "PJSIP/anonymous/sip:ivr@127.0.0.1:5095"}',
                   VOICEAI_TRANSFER_TARGETS='{"congrats": "from-caller,200,1"}')
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", "5095", "-mi", "127.0.0.1",
                            "-mp", "16300", "-cp", "8935", "-m", "1", "-nostdin", "-timeout", "40s"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    call_id = ""
    try:
        page = Page(browser)
        await login(page, f"http://127.0.0.1:{PORT}/dashboard/")
        assert await page.js("return [...document.querySelectorAll('#originate-target option')]"
                             ".map(o => o.value)") == ["ivr"]
        await asyncio.sleep(0.3)   # sipp is listening
        await page.run(lambda: browser.find_element("css selector", "#originate button").click())
        call_id = await page.until("const r = document.querySelector('#calls tr[data-call]');"
                                   "return r && r.dataset.call", "the outbound call's row", 10.0)
        assert call_id.startswith("voiceai-out-")
        assert "dialling ivr" in await page.js("return document.querySelector('#originate-result').innerText")
        await page.until("return document.querySelector('#calls tr[data-call]').innerText.includes('talking')",
                         "the outbound call talking", 10.0)
        await page.run(lambda: browser.find_element("css selector", "#calls tr[data-call] a").click())
        await page.until(visible("#act-transfer"), "the transfer form")
        assert await page.js("return [...document.querySelectorAll('#transfer-target option')]"
                             ".map(o => o.value)") == ["congrats"]
        forged = await page.run(browser.execute_async_script, """
            const done = arguments[arguments.length - 1];
            fetch('/calls/' + encodeURIComponent(arguments[0]) + '/transfer', {method: 'POST',
                  headers: {'Content-Type': 'application/json',
                            'Authorization': 'Bearer ' + sessionStorage.getItem('voiceai-control-token')},
                  body: JSON.stringify({target: 'Local/00441234@from-internal'})}).then(r => done(r.status));""",
                                  call_id)
        assert forged == 422
        await page.run(lambda: browser.find_element("css selector", "#act-transfer button").click())
        await page.until("return document.querySelector('#action-result').innerText.includes('transferred')"
                         " || document.querySelector('#action-result').innerText.includes('ended')",
                         "the transfer's outcome", 15.0)
        await page.until("return [...document.querySelectorAll('#timeline li')].some(l => l.dataset.event === "
                         "'transfer' && l.innerText.includes('to congrats: the caller left the bot'))",
                         "the transfer in the timeline", 5.0)
        await page.shot("10-originate-transfer")
        status, chan = await ari("GET", f"/channels/{call_id}")
        assert status == 200 and chan["dialplan"]["exten"] == "200", chan   # the callee is in the dialplan now
    finally:
        if call_id:
            await ari("DELETE", f"/channels/{call_id}")
        try:
            await asyncio.to_thread(uas.wait, 10)
        except subprocess.TimeoutExpired:
            uas.kill()
            uas.wait()
