"""The gateway layer: sockets, tasks, storage and policy over the pure ``sip`` and ``media`` cores."""

__version__ = "0.1.0"
