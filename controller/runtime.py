"""Actor runtime: mailboxes, a typed bus, supervision and an ordered, shielded teardown.

PUBLIC API (other modules code against exactly this; the implementation is being written):

    EOI                      one-member enum sentinel closing an inbox (EndOfInbox.EOI)
    Mailbox[T]               put(msg) never blocks; `await get()` -> T | EndOfInbox;
                             `await get(timeout=s)` -> T | EndOfInbox | None (None on timeout);
                             close() puts EOI.
    Bus                      subscribe(mailbox, *types) ; publish(msg) delivers msg to every
                             mailbox subscribed to type(msg) (or a base class); never blocks.
    Actor                    base class of every actor:
        name: str                         shows in logs and task names
        inbox: Mailbox                    created by the base
        bus: Bus                          set by the base __init__(name=..., bus=...)
        clock: Callable[[], float]        loop time by default (asyncio.get_running_loop().time)
        log                               a structlog logger bound with actor=name
        async setup()                     before ready: adopt state, create the group, ...;
                                          an exception here fails startup
        async run()                       the eternal loop; returning is a bug (logged, restarted)
        async stop()                      ordered cleanup, called once at teardown, shielded from
                                          cancellation and bounded by Runtime's grace
        stopping: asyncio.Event           set when the stop begins: loops should end
        async sleep(seconds) -> bool      sleep that wakes early on stop; False when stopping
    Runtime(actors, *, grace_seconds=..., backoff=(1,2,4,8,16,30), max_restarts=5,
            restart_window_seconds=300, on_state=callback)
        async run_until_stopped()  start actors in order (each setup() then ready), run them
                                   under a TaskGroup, restart a crashing run() with capped
                                   backoff, stop everything when request_stop() is called or an
                                   actor crashes more than max_restarts in the window (then
                                   returns exit code 1, else 0). Teardown: actors' stop() in
                                   reverse start order, each bounded by grace, then cancel.
        request_stop(reason)       idempotent; what signal handlers call (they only set a flag)
        install_signal_handlers()  SIGTERM/SIGINT -> request_stop
        states() -> dict[name, (state, restarts)]
"""

from __future__ import annotations
