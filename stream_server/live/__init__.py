"""The parts of one live session, each with one job; ``stream_server.session.LiveSession`` wires them.

- ``tasks.TaskSet``: the asyncio tasks a part owns (started and cancelled by name, one ``aclose``).
- ``state.GuardedState``: the session's ``SessionState`` behind one lock (used from worker threads).
- ``events.SessionEvents``: the one way out: status (published only on change), warnings, errors.
- ``connection.PublisherConnection``: the aiortc peer, offers and re-offers, track drains, reconnect grace.
- ``media.MediaIngest``: bounded queues → worker thread → ``SessionState`` (and the optional recording).
- ``transcript.TranscriptLog``: captions and speech-to-text lines: stored, fed to the state, published.
- ``indicators.IndicatorFeed``: the indicator tick: values stored and published, media silence noticed.
- ``assessment.AssessmentScheduler``: checkpoints (on request and scheduled), the final, parking.
"""
