"""A clock for the benchmarks' tests: it moves only when a test moves it, so each timed number
is known exactly."""


class FakeClock:
    """Stands in for ``time.perf_counter`` (call it) or for the ``time`` module (its
    ``perf_counter``)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    perf_counter = __call__

    def advance(self, seconds):
        self.now += seconds

    def call_taking(self, *seconds):
        """A function whose calls take ``seconds`` in turn, then the last of them every time."""
        durations = iter(seconds)
        last = [seconds[-1]]

        def fn():
            last[0] = next(durations, last[0])
            self.advance(last[0])

        return fn
