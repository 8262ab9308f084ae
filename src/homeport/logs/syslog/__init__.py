"""Syslog into the log store: RFC 5424 and RFC 3164 over UDP, TCP (RFC 6587) and RELP,
and syslog-ng's JSON lines.

:mod:`.parse` turns one message into a :class:`~homeport.logs.record.Record` and
:mod:`.frames` cuts a TCP stream into messages (both pure, no Twisted);
:mod:`.listen` and :mod:`.relp` are the listeners the log part starts.
"""
