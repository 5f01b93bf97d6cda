"""Sans-I/O media cores: RTP, PS, H.264/H.265, SDP. Pure and fast; no I/O, clocks or randomness."""
