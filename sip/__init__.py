"""Sans-I/O SIP core: the RFC 3261 subset GB/T 28181 uses.

Nothing in this package performs I/O or reads the clock: bytes and ``now`` go in, events and bytes come out.
"""
