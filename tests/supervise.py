"""Run a command again whenever it exits, as compose's `restart: unless-stopped` does; SIGTERM
stops the command and the supervisor. Exits are logged to stderr (the run's log).

    python tests/supervise.py <command...>
"""
import signal
import subprocess
import sys
import time

stopping = False
child: subprocess.Popen | None = None


def stop(signum, frame):
    global stopping
    stopping = True
    if child is not None and child.poll() is None:
        child.send_signal(signum)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while not stopping:
    child = subprocess.Popen(sys.argv[1:])
    code = child.wait()
    if stopping:
        break
    print(f"[supervise] exited with {code}; starting it again", file=sys.stderr, flush=True)
    time.sleep(1.0)
sys.exit(0)
