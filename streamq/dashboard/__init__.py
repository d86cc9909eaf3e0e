"""The built-in web dashboard: ``python -m streamq dashboard --port 8080``.

An aiohttp app (``streamq.dashboard.app.create_app``) over the public ``Queue`` API and
the queues' events streams, stateless over Redis: sessions are signed cookies, rates are
measured in memory while it runs. Pages are plain HTML with a little vanilla JavaScript
served from the package (``static/``): no build step. See docs/dashboard.md.

This package is imported by ``python -m streamq`` for its options: importing it costs
nothing; the server's modules load when it starts.
"""
