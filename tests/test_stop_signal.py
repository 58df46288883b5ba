"""StopSignal catches SIGTERM/SIGINT only while a stage runs; the handlers before it come back."""

import os
import signal

from streams.workers import StopSignal


def test_the_previous_handlers_come_back_after_the_stage():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with StopSignal() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)  # caught: sets the flag instead of ending this process
        assert stop()
        assert signal.getsignal(signal.SIGTERM) == stop._set
    assert {sig: signal.getsignal(sig) for sig in before} == before
