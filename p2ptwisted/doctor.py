# -*- test-case-name: tests.test_doctor -*-
"""
The reachability doctor: where a node listens, whether LAN discovery
works, and for each peer who reached whom -- in sentences that say what
to do.

The original project's nodes got stuck as server or client, so files moved
one way only.  Here every connection carries files both ways whoever
dialled it, so one-way reachability alone never makes files move one way;
the doctor says so, and points at the things that do (a peer running
--no-sync, discovery that cannot cross the network, a firewall on one
side).
"""

from __future__ import annotations

from typing import List, Optional

from p2ptwisted import wire

#: A peer connected this long that lacks our files and has asked for none
#: is probably running --no-sync.
NO_SYNC_HINT_AFTER = 30.0

#: Peers described at most (the rest are counted): the report is read by a
#: person, and nodes heard on the LAN can be made up by anyone there.
MAX_PEERS_SHOWN = 50


def _ago(now: float, then: Optional[float]) -> str:
    if then is None:
        return "never"
    return f"{max(0.0, now - then):.0f}s ago"


def listen_lines(node) -> List[str]:
    from p2ptwisted.discovery import ipv4_interfaces

    ports = ", ".join(map(str, node.listen_ports)) or "none (not listening yet)"
    host = getattr(node, "listen_host", "")
    if host not in ("", "0.0.0.0", "::"):
        where = host
    else:
        try:
            addresses = [i.address for i in ipv4_interfaces() if i.up and not i.loopback]
        except OSError:
            addresses = []
        where = "all interfaces" + (f" ({', '.join(addresses)})" if addresses else "")
    lines = [f"listening on TCP port {ports} on {where}"]
    if host and host.startswith("127."):
        lines.append("  only this machine can reach it: listen on all interfaces"
                     " (--port 12345) to be reachable from the LAN")
    return lines


def discovery_lines(node) -> List[str]:
    discovery = node.discovery
    now = node.clock.seconds()
    if discovery is None:
        return ["LAN discovery: off (--no-discover); peers come from --peer and gossip"]
    if discovery.state != "on":
        return [f"LAN discovery: {discovery.state}"]
    lines = [
        f"LAN discovery: on, announcing on {', '.join(discovery.addresses)} to"
        f" {discovery.group} UDP port {discovery.udp_port}; {discovery.sent} announcements"
        f" sent (last {_ago(now, discovery.last_sent)})"
    ]
    if discovery.send_error:
        lines.append(f"  our announcements do not go out: {discovery.send_error}")
    others = [h for h in discovery.heard.values()]
    if others:
        lines.append(f"  heard {len(others)} other node(s); last"
                     f" {_ago(now, max(h['at'] for h in others))}")
    elif node.started_at is not None and now - node.started_at < 5:
        lines.append("  no other node heard yet")
    else:
        lines.append(
            "  no announcement from any other node has arrived: either no other node runs"
            " discovery on this network, or multicast is filtered between us (some Wi-Fi"
            " access points and switches do); give a peer with --peer HOST:PORT"
        )
    if discovery.malformed:
        lines.append(f"  ignored {discovery.malformed} malformed announcement(s)")
    return lines


def _peer_name(node, node_id: str) -> str:
    proto = node.connections.get(node_id)
    reach = node.reach.get(node_id)
    name = proto.hello.name if proto is not None else (reach.name if reach else "")
    return f"{wire.safe_text(name, 32) or 'unnamed'} ({node_id[:12]})"


def peer_lines(node) -> List[str]:
    now = node.clock.seconds()
    discovery = node.discovery
    heard = discovery.heard if discovery is not None else {}
    ids = list(dict.fromkeys(list(node.connections) + list(node.reach) + list(heard)))
    lines = []
    ours = None
    for node_id in ids[:MAX_PEERS_SHOWN]:
        proto = node.connections.get(node_id)
        reach = node.reach.get(node_id)
        entries = node.book.entries_for(node_id)
        if node_id in heard:
            h = heard[node_id]
            key = str(wire.PeerAddress(wire.normalize_host(h["host"]), h["port"]))
            entry = node.book.get(key)
            if entry is not None and entry not in entries:
                entries.append(entry)
        failing = [e for e in entries if e.last_error and e.failures]
        out_ok = reach is not None and reach.outbound is not None
        in_ok = reach is not None and reach.inbound is not None
        head = f"{_peer_name(node, node_id)}:"
        if proto is not None:
            way = "we dialled it" if proto.dialed is not None else "it dialled us"
            head += f" connected ({way})"
        else:
            head += " not connected"
        lines.append(head)
        if out_ok and in_ok:
            lines.append("  reached both ways")
        elif in_ok and not out_ok:
            why = "; ".join(f"{e.key}: {e.last_error}" for e in failing) or (
                "we have no address for it" if not entries else "not tried yet")
            lines.append(
                f"  it reached us, but we have not reached it ({why}): it may listen on"
                " another interface, or a firewall on its side blocks its port."
                + (" Files still move both ways over the connection it opened."
                   if proto is not None else "")
            )
        elif out_ok and not in_ok:
            lines.append(
                "  we reached it, but it has never reached us: a firewall here may block our"
                " port, or it does not know our address (it dials what it hears by gossip or"
                " discovery)."
                + (" Files still move both ways over our connection."
                   if proto is not None else "")
            )
        elif node_id in heard:
            h = heard[node_id]
            why = "; ".join(f"{e.key}: {e.last_error}" for e in failing) or "not tried yet"
            lines.append(f"  heard on the LAN at {h['host']}:{h['port']}"
                         f" {_ago(now, h['at'])}, never reached ({why})")
        if proto is not None:
            if ours is None:
                ours = _live_files(node.folder.store)
            lines.extend(_file_hints(node, node_id, proto, now, ours))
    if len(ids) > MAX_PEERS_SHOWN:
        lines.append(f"... and {len(ids) - MAX_PEERS_SHOWN} more nodes")
    never = [e for e in node.book if e.node_id is None and not e.is_self and e.failures]
    for entry in never[:MAX_PEERS_SHOWN]:
        lines.append(f"{entry.key}: never reached ({entry.failures} attempts;"
                     f" last: {entry.last_error or 'no answer'})")
    if len(never) > MAX_PEERS_SHOWN:
        lines.append(f"... and {len(never) - MAX_PEERS_SHOWN} more addresses never reached")
    return lines or ["no peers yet"]


def _live_files(store, peer: Optional[str] = None) -> set:
    """
    (path, hash) of every live file in our index, or in C{peer}'s.
    """
    if peer is None:
        entries = (store.get(path) for path in store.local_paths())
    else:
        entries = (store.remote_for(path).get(peer) for path in store.remote_paths(peer))
    return {(e.path, e.hash) for e in entries if e is not None and e.live and e.hash}


def _file_hints(node, node_id: str, proto, now: float, ours: set) -> List[str]:
    store = node.folder.store
    if node_id not in node.folder.exchange.up_to_date:
        return ["  its index has not arrived yet"]
    theirs = _live_files(store, node_id)
    they_lack = len(ours - theirs)
    we_lack = len(theirs - ours)
    hints = []
    if (they_lack and not proto.gets_received
            and now - proto.connected_at >= NO_SYNC_HINT_AFTER):
        hints.append(f"  it lacks {they_lack} of our files and has asked for none: it"
                     " probably runs --no-sync or --mode send-only (it still serves its"
                     " files)")
    if we_lack and node.folder.mode == "send-only":
        hints.append(f"  we lack {we_lack} of its files and this node takes nothing from"
                     " peers (--no-sync or --mode send-only): fetch them with fetch(path)")
    return hints


def diagnose(node) -> List[str]:
    """
    The whole report, a line each (peer details indented).
    """
    return listen_lines(node) + discovery_lines(node) + ["peers:"] + [
        "  " + line for line in peer_lines(node)
    ]
