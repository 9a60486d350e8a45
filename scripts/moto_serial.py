"""moto's server with one request at a time.

moto's DynamoDB backend checks a condition and applies an update in separate Python steps with no
lock, so two concurrent conditional writes to one item can both pass their conditions. DynamoDB
itself never does that, and a rate limiter's bound rests on it. This runs moto's own WSGI
application, still threaded (so one slow client blocks no other), behind one lock per request.

Usage: moto_serial.py HOST PORT
"""

import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Drain the response inside the lock: the item is read for it.
            return [b"".join(app(environ, start_response))]

    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
