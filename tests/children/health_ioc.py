"""A tiny caproto IOC for the watchdog tests: serves PREFIX + "HEALTH", steered from its stdin.

Usage: health_ioc.py PREFIX STATEFILE. It starts in the state named in STATEFILE (ok, invalid
or grumpy) and takes the same words as lines on stdin (its console, through pyprocserv).
"""

import sys

import trio
from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty
import caproto.trio.server as ca_trio

STATES = {
    "ok": ("OK", AlarmSeverity.NO_ALARM),
    "grumpy": ("GRUMPY", AlarmSeverity.MINOR_ALARM),
    "invalid": ("OK", AlarmSeverity.INVALID_ALARM),
}


class Health(PVGroup):
    HEALTH = pvproperty(value="OK", dtype=ChannelType.ENUM, enum_strings=["OK", "GRUMPY"], read_only=True)


async def set_state(group, word):
    value, severity = STATES[word]
    status = AlarmStatus.NO_ALARM if severity == AlarmSeverity.NO_ALARM else AlarmStatus.STATE
    await group.HEALTH.write(value, severity=severity, status=status)
    print(f"HEALTH is {word}", flush=True)


async def main(prefix, statefile):
    group = Health(prefix=prefix)
    context = ca_trio.Context(group.pvdb, interfaces=["0.0.0.0"])
    context.beacon_sock.close()
    ready = trio.Event()

    async def startup(async_lib):
        ready.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: context.run(startup_hook=startup))
        await ready.wait()
        with open(statefile) as f:
            await set_state(group, f.read().strip())
        print("IOC ready", flush=True)
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                nursery.cancel_scope.cancel()
                return
            if line.strip() in STATES:
                await set_state(group, line.strip())


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
