"""Secrets never reach a log line, even when a library formats them."""

import logging

from voiceai_ari.operate.logs import setup_logging


def test_secrets_redacted_and_chatty_libraries_quiet(capsys):
    setup_logging("DEBUG", ["sk-very-secret-key", "ari-pass"], fmt="text")
    logging.getLogger("voiceai.test").info("header Authorization: Bearer %s", "sk-very-secret-key")
    logging.getLogger("websockets.client").debug("> Authorization: Bearer sk-very-secret-key")
    logging.getLogger("voiceai.test").debug("ari-pass and %d", 3)
    err = capsys.readouterr().err
    assert "sk-very-secret-key" not in err and "ari-pass" not in err
    assert "Bearer ***" in err and "*** and 3" in err
    assert "websockets.client" not in err  # frame/header chatter is kept at INFO
    logging.getLogger().handlers.clear()


def test_json_lines_carry_the_call_id_from_the_context(capsys):
    import asyncio
    import json

    from voiceai_ari.operate.logs import call_id
    setup_logging("INFO", ["sk-very-secret-key"], fmt="json")

    async def a_call():
        call_id.set("1795.42")
        logging.getLogger("voiceai.call").info("call up")

        async def child():   # tasks a call starts inherit its id
            logging.getLogger("voiceai.tools").info("tool ran with sk-very-secret-key")
        await asyncio.create_task(child())
    asyncio.run(a_call())
    logging.getLogger("voiceai.app").info("between calls")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x.get("call") for x in lines] == ["1795.42", "1795.42", None]
    assert lines[1]["msg"] == "tool ran with ***" and lines[1]["logger"] == "voiceai.tools"
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    logging.getLogger().handlers.clear()
