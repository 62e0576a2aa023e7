"""mockmongo: one MongoDB member for dbcanary's tests, played by mockupdb.

There is no MongoDB server package on the test machines, so the tests start
one of these per member (standalone or replica-set member) and drive the
real Rust `mongodb` driver against them.

    python mockmongo.py --port PORT --state FILE [--tls]

FILE holds the member's hello fields as MongoDB extended JSON (e.g.
`{"isWritablePrimary": true, "setName": "rs0", "electionId": {"$oid": ...}}`)
and is re-read every 10 ms: a test switches roles by rewriting it (atomically,
by rename). This process adds what every reply needs (wire versions, sizes)
and a `topologyVersion` whose `processId` is new for every process: a restart
is a new process. Its `counter` moves with every change of FILE.

Awaitable hellos (the driver's streaming monitor sends `topologyVersion` and
`maxAwaitTimeMS`) are answered, as a real server does, when the state changes
or when `maxAwaitTimeMS` has passed — never at once, which would make the
driver spin. mockupdb runs every responder under one server-wide lock, so an
awaiting hello is answered from its own thread.

Every request gets an answer (an unanswered request would hang the client):
hello/isMaster, ping, buildInfo, endSessions, and an error for anything else.
A `buildInfoDelayMS` key in FILE (not a hello field) delays the buildInfo
answers that long (from their own thread): a slow handshake after the
member is already serving.

With `--tls` it speaks only TLS, with mockupdb's bundled self-signed
certificate (CN "server", no SAN: only an insecure client accepts it).

Keeps the number of open client connections in FILE.conns (so a test can
see that old driver clients are gone), and prints
`READY port=P processId=HEX at=UNIX_SECONDS` once it listens.
"""

import argparse
import datetime
import itertools
import os
import ssl
import sys
import types
import threading
import time

from bson import Int64, ObjectId, json_util
import mockupdb
from mockupdb import MockupDB

VERSION = "7.0.0-mockupdb"


class Member:
    def __init__(self, state_path):
        self.state_path = state_path
        self.process_id = ObjectId()
        self.cond = threading.Condition()
        self.counter = 0
        self.text = None
        self.state = {}
        self.connection_ids = itertools.count(1)
        self.server = None
        self.conns_written = None
        self.reload()

    def reload(self):
        try:
            with open(self.state_path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return
        if text == self.text:
            return
        try:
            state = json_util.loads(text)
        except ValueError:
            return  # half-written by a careless writer: keep the old state
        with self.cond:
            if self.text is not None:
                self.counter += 1
            self.text = text
            self.state = state
            self.cond.notify_all()

    def watch(self):
        while True:
            time.sleep(0.01)
            self.reload()
            self.write_connections()

    def write_connections(self):
        if self.server is None:
            return
        socks = list(self.server._server_socks.keys())
        n = sum(1 for s in socks if s.fileno() != -1)
        if n != self.conns_written:
            tmp = self.state_path + ".conns.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("%d\n" % n)
            os.replace(tmp, self.state_path + ".conns")
            self.conns_written = n

    def hello_reply(self, command_name, request_doc):
        with self.cond:
            state = dict(self.state)
            counter = self.counter
        reply = {
            "ok": 1,
            "maxWireVersion": 21,
            "minWireVersion": 0,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.datetime.now(datetime.timezone.utc),
            "connectionId": next(self.connection_ids),
            "topologyVersion": {"processId": self.process_id, "counter": Int64(counter)},
        }
        state.pop("buildInfoDelayMS", None)
        reply.update(state)
        writable = bool(reply.pop("isWritablePrimary", False))
        if command_name == "ismaster":
            reply["ismaster"] = writable
        else:
            reply["isWritablePrimary"] = writable
        if request_doc.get("helloOk"):
            reply["helloOk"] = True
        return reply

    def is_current(self, topology_version):
        return (
            topology_version.get("processId") == self.process_id
            and int(topology_version.get("counter", -1)) == self.counter
        )

    def await_and_reply(self, request, name, topology_version, max_await_ms):
        deadline = time.monotonic() + max_await_ms / 1000.0
        with self.cond:
            while self.is_current(topology_version):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
        try:
            request.reply(self.hello_reply(name, request.doc))
        except OSError:
            pass  # the client went away while waiting

    def slow_reply(self, request, delay, reply):
        time.sleep(delay)
        try:
            request.reply(reply)
        except OSError:
            pass  # the client went away while waiting

    def handle(self, request):
        name = (getattr(request, "command_name", None) or "").lower()
        doc = request.doc if hasattr(request, "doc") else {}
        if name in ("hello", "ismaster"):
            tv = doc.get("topologyVersion")
            wait = doc.get("maxAwaitTimeMS")
            if tv is not None and wait is not None:
                threading.Thread(
                    target=self.await_and_reply,
                    args=(request, name, tv, int(wait)),
                    daemon=True,
                ).start()
            else:
                request.reply(self.hello_reply(name, doc))
        elif name == "ping" or name == "endsessions":
            request.reply({"ok": 1})
        elif name == "buildinfo":
            with self.cond:
                delay = self.state.get("buildInfoDelayMS", 0) / 1000.0
            threading.Thread(
                target=self.slow_reply,
                args=(request, delay, {"ok": 1, "version": VERSION, "versionArray": [7, 0, 0, 0]}),
                daemon=True,
            ).start()
        else:
            request.reply(
                {"ok": 0, "errmsg": "mockmongo: no such command: %s" % name, "code": 59}
            )
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    if args.tls:
        # mockupdb calls ssl.wrap_socket, which newer Pythons lack: hand it
        # a context-based one. The handshake happens in each connection's
        # thread, so a client refusing the certificate cannot kill the
        # accept loop.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(os.path.dirname(mockupdb.__file__), "server.pem"))
        mockupdb._ssl = types.SimpleNamespace(
            wrap_socket=lambda sock, certfile, server_side: ctx.wrap_socket(
                sock, server_side=server_side, do_handshake_on_connect=False
            )
        )

    member = Member(args.state)
    threading.Thread(target=member.watch, daemon=True).start()
    server = MockupDB(port=args.port, request_timeout=int(1e6), ssl=args.tls)
    # mockupdb binds "localhost", which may resolve to ::1: force IPv4.
    server._address = ("127.0.0.1", args.port)
    server.autoresponds(member.handle)
    server.run()
    member.server = server
    print(
        "READY port=%d processId=%s at=%.6f" % (server.port, member.process_id, time.time()),
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
