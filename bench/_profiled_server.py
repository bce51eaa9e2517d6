"""Run pyprocserv's command line under a profiler; the daemon writes its profile at exit.

Usage: python bench/_profiled_server.py --out PREFIX [--profiler cprofile|pyinstrument] -- ARGS...

ARGS are pyprocserv's own (daemon mode is fine: profiling starts before the fork and the daemon,
not the parent that exits, writes ``PREFIX.<pid>.prof`` (cProfile) or ``PREFIX.<pid>.txt`` and
``.pyisession`` (pyinstrument) once it has shut down on SIGTERM). Used with compare.py as
``--pyprocserv-cmd "python bench/_profiled_server.py --out /tmp/prof/run --"``.
"""

import argparse
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    p.add_argument("--interval", type=float, default=0.0005, help="pyinstrument sampling interval")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    from pyprocserv._apps.main import main as pyprocserv_main

    launcher = os.getpid()
    if a.profiler == "cprofile":
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            code = pyprocserv_main(["pyprocserv", *args])
        finally:
            prof.disable()
            if os.getpid() != launcher or "-f" in args:
                prof.dump_stats(f"{a.out}.{os.getpid()}.prof")
    else:
        from pyinstrument import Profiler

        prof = Profiler(interval=a.interval, async_mode="disabled")
        prof.start()
        try:
            code = pyprocserv_main(["pyprocserv", *args])
        finally:
            session = prof.stop()
            if os.getpid() != launcher or "-f" in args:
                session.save(f"{a.out}.{os.getpid()}.pyisession")
                with open(f"{a.out}.{os.getpid()}.txt", "w") as f:
                    f.write(prof.output_text(unicode=False, color=False, show_all=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
