"""Signals nodes send to the domains above them, which must not be imported from here."""

from django.dispatch import Signal

# Sent inside the transaction that records it, with ``node`` and ``reason``, when whatever the
# node was running ended with it: the node went offline, or its agent restarted. Jobs listen.
work_lost = Signal()
