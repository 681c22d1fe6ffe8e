"""The actor runtime and the process around it: what every actor and the daemon stand on.

Owns: the Actor base (actor), Mailbox, Bus and EOI (bus), the supervisor that starts, restarts and
stops actors (supervisor), restart backoff (backoff), the seed's daemon options (daemon),
systemd's sd_notify (sdnotify), logging (logs), the one-controller-per-fleet lock (fleet_lock,
keyed by the fleet's name only) and one bounded run of a scheduler's client (client_command).
It knows nothing of clouds or config.
May import: controller.messages, the standard library, structlog.

The API other modules code against:

    bus.EOI, bus.EndOfInbox  one-member enum sentinel closing an inbox
    bus.Mailbox[T]           put(msg) never blocks (dropped once closed); `await get()` -> T | EOI;
                             `await get(timeout=s)` -> T | EOI | None (None on timeout); close().
    bus.Bus                  subscribe(mailbox, *types); listen(callback); publish(msg).
    actor.Actor(name=, bus=, clock=None)
        name, inbox, bus, clock(), now(), log, stopping, grace_seconds (None: the Runtime's)
        async setup() / run() / stop(); async sleep(seconds) -> bool; publish(msg)
    supervisor.Runtime(actors, *, grace_seconds=10, backoff=(1, 2, 4, 8, 16, 30), max_restarts=5,
            restart_window_seconds=300, on_state=None, bus=None, heartbeat_seconds=10,
            on_heartbeat=None, on_ready=None, clock=None, jitter=0.1, rand=random.random)
        async run_until_stopped() -> int    exit code: 0 on a requested stop, 1 on failure
        request_stop(reason="signal", exit_code=0)    idempotent; what signal handlers call
        install_signal_handlers()           SIGTERM/SIGINT -> request_stop
        states() -> {name: (state, restarts)}; all_running() -> bool; stop_reason; exit_code;
        abandoned (names of tasks that survived cancellation: exit with os._exit then)
"""
