"""The OpenAI-compatible gateway at /v1: a plain ASGI app beside Django in the same server.

The hot path touches no Django middleware and no ORM: keys and routes are cached in process
(``keys``, ``routes``), dropped when the console publishes a change on Redis (``bus``); quotas
are one Redis script call (``quota``); usage rows and audit events are written in batches by a
thread (``ledger``)."""
