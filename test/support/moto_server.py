"""Runs moto in server mode on 127.0.0.1 for the test harness.

Prints the chosen port on stdout, then serves until its standard input closes, so the server
never outlives the Deno process that started it.
"""

import sys

from moto.server import ThreadedMotoServer

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
