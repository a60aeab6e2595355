"""What /proc says of a process: its open files and its TCP sockets, by peer port and state."""

import os

# /proc/net/tcp's state column (include/net/tcp_states.h).
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def open_fds(pid):
    """Return how many file descriptors a process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid):
    """Return the inodes of a process's open sockets."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_sockets(pid):
    """Return [(local port, remote port, state)] of a process's TCP sockets (IPv4 and IPv6)."""
    inodes = socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[9]) in inodes:
                        local, remote = fields[1], fields[2]
                        found.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                                      TCP_STATES.get(fields[3], fields[3])))
        except FileNotFoundError:
            continue
    return found


def peers(pid, ports):
    """Return {name: {state: count}} of a process's TCP connections to each named remote port."""
    by_port = {port: name for name, port in ports.items()}
    counts = {name: {} for name in ports}
    for _, remote, state in tcp_sockets(pid):
        name = by_port.get(remote)
        if name is not None:
            counts[name][state] = counts[name].get(state, 0) + 1
    return counts


def local_ports(pid, remote_port, state="ESTABLISHED"):
    """Return the local ports of a process's connections to `remote_port` in `state`."""
    return {local for local, remote, st in tcp_sockets(pid) if remote == remote_port and st == state}
