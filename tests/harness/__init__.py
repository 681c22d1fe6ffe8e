"""Real-server test harness: moto, a fault proxy, Apache, sshd and fake render slaves.

Each module starts one kind of server on loopback, gives its output a file, and stops it by
PID (or thread) in a `finally`. A server that cannot start fails the test with its log.
"""
