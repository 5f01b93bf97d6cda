"""Run every benchmark: ``.venv/bin/python -m benchmarks [--quick]``."""

from __future__ import annotations

import argparse

from . import devices_bench, events_bench, media_bench, rtsp_bench, sip_bench, streams_bench, webrtc_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    sip_bench.main(quick=args.quick)
    media_bench.main(quick=args.quick)
    devices_bench.main(quick=args.quick)
    streams_bench.main(quick=args.quick)
    rtsp_bench.main(quick=args.quick)
    webrtc_bench.main(quick=args.quick)
    events_bench.main(quick=args.quick)


if __name__ == "__main__":
    main()
