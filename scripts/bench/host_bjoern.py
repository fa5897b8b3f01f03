"""Host `apps:app` on bjoern (libev, C): `python host_bjoern.py --port 8080`."""

import argparse

import bjoern

from apps import app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    print(f"bjoern serving on http://{args.host}:{args.port}", flush=True)
    bjoern.run(app, args.host, args.port)


if __name__ == "__main__":
    main()
