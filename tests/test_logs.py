"""Secrets never reach a log line, even when a library formats them."""

import logging

from voiceai_ari.logs import setup_logging


def test_secrets_redacted_and_chatty_libraries_quiet(capsys):
    setup_logging("DEBUG", ["sk-very-secret-key", "ari-pass"])
    logging.getLogger("voiceai.test").info("header Authorization: Bearer %s", "sk-very-secret-key")
    logging.getLogger("websockets.client").debug("> Authorization: Bearer sk-very-secret-key")
    logging.getLogger("voiceai.test").debug("ari-pass and %d", 3)
    err = capsys.readouterr().err
    assert "sk-very-secret-key" not in err and "ari-pass" not in err
    assert "Bearer ***" in err and "*** and 3" in err
    assert "websockets.client" not in err  # frame/header chatter is kept at INFO
    logging.getLogger().handlers.clear()
