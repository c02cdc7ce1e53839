"""The console filter drops only the exact third-party notices it names."""

import logging

from llmfoundry.quiet import drop_known_notices


def test_the_known_notice_is_dropped_and_everything_else_kept(caplog):
    drop_known_notices()
    drop_known_notices()  # idempotent
    log = logging.getLogger("torch.utils._pytree")
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING):
        log.warning("%s is an Enum subclass and is now natively supported by torch.compile as an opaque value "
                    "type.", "<enum 'KernelPreference'>")
        log.warning("some other pytree warning")
        logging.getLogger("torch").warning("is an Enum subclass and is now natively supported by torch.compile")
    assert [r.getMessage() for r in caplog.records] == [
        "some other pytree warning", "is an Enum subclass and is now natively supported by torch.compile"]
