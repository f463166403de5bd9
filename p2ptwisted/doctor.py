# -*- test-case-name: tests.test_doctor -*-
"""
The reachability doctor: where a node listens, whether LAN discovery
works, and what, if anything, is wrong with its peers -- one line per
finding, in sentences that say what to do.

The original project's nodes got stuck as server or client, so files moved
one way only.  Here every connection carries files both ways whoever
dialled it, so a connected peer is reachable both ways, whichever end
dialled: the doctor warns only about what actually failed (a dial that
got an error, an announcement that should have come and did not) and
about the things that do keep files from moving (a peer running
--no-sync).  A healthy mesh is one line: "N peers, all reachable both
ways".
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional

from p2ptwisted import wire
from p2ptwisted.discovery import ANNOUNCE_MAX

#: A peer connected this long that lacks our files and has asked for none
#: is probably running --no-sync.
NO_SYNC_HINT_AFTER = 30.0

#: Peers described at most (the rest are counted): the report is read by a
#: person, and nodes heard on the LAN can be made up by anyone there.
MAX_PEERS_SHOWN = 50

#: A node alone that has heard no announcement this long after start gets
#: the advice about multicast.
ALONE_HINT_AFTER = 5.0

#: Every node announces at least every ANNOUNCE_MAX seconds: a neighbour
#: connected to us should have been heard by then (plus a margin).
ANNOUNCEMENT_EXPECTED_AFTER = ANNOUNCE_MAX + 5.0


def _ago(now: float, then: Optional[float]) -> str:
    if then is None:
        return "never"
    return f"{max(0.0, now - then):.0f}s ago"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
    line = f"listening on TCP port {ports} on {where}"
    if host and host.startswith("127."):
        line += (": only this machine can reach it; listen on all interfaces"
                 " (--port 12345) to be reachable from the LAN")
    return [line]


def _neighbours(node) -> List[str]:
    """
    The names of connected peers whose address is on one of discovery's
    networks: nodes whose announcements should reach us if they announce.
    """
    networks = node.discovery.networks
    names = []
    for node_id, proto in node.connections.items():
        host = getattr(proto.transport.getPeer(), "host", None)
        try:
            ip = ipaddress.ip_address(host or "")
        except ValueError:
            continue
        if any(ip.version == n.version and ip in n for n in networks):
            names.append(wire.safe_text(proto.hello.name, 32) or node_id[:12])
    return names


def discovery_lines(node) -> List[str]:
    discovery = node.discovery
    now = node.clock.seconds()
    if discovery is None:
        return ["LAN discovery: off (--no-discover); peers come from --peer and gossip"]
    if discovery.state != "on":
        return [f"LAN discovery: {discovery.state}"]
    heard = list(discovery.heard.values())
    line = (f"LAN discovery: on, announcing on {', '.join(discovery.addresses)} to"
            f" {discovery.group} UDP port {discovery.udp_port}; {discovery.sent} announcements"
            f" sent (last {_ago(now, discovery.last_sent)}); ")
    if heard:
        line += (f"heard {_plural(len(heard), 'other node')}, last"
                 f" {_ago(now, max(h['at'] for h in heard))}")
    else:
        line += "no other node heard yet"
    lines = [line]
    if discovery.send_error:
        lines.append(f"LAN discovery: our announcements do not go out: {discovery.send_error}")
    up = now - node.started_at if node.started_at is not None else 0.0
    if not heard and not node.connections and up >= ALONE_HINT_AFTER:
        lines.append(
            "LAN discovery: no announcement from any other node has arrived: either no other"
            " node runs discovery on this network, or multicast is filtered between us (some"
            " Wi-Fi access points and switches do); give a peer with --peer HOST:PORT"
        )
    elif not heard and up >= ANNOUNCEMENT_EXPECTED_AFTER:
        neighbours = _neighbours(node)
        if neighbours:
            shown = ", ".join(neighbours[:5]) + (", ..." if len(neighbours) > 5 else "")
            verb = "is" if len(neighbours) == 1 else "are"
            lines.append(
                f"LAN discovery: no announcement has arrived in {up:.0f}s, though"
                f" {_plural(len(neighbours), 'connected peer')} {verb} on this network"
                f" ({shown}): they run --no-discover, or multicast is filtered between us"
                " (some Wi-Fi access points and switches do), so new nodes here will not"
                " find this one by themselves"
            )
    if discovery.malformed:
        lines.append(f"LAN discovery: ignored {discovery.malformed} malformed announcement(s)")
    return lines


def _peer_name(node, node_id: str) -> str:
    proto = node.connections.get(node_id)
    reach = node.reach.get(node_id)
    name = proto.hello.name if proto is not None else (reach.name if reach else "")
    return f"{wire.safe_text(name, 32) or 'unnamed'} ({node_id[:12]})"


def _entries(node, node_id: str, heard: dict) -> list:
    """
    The book entries of C{node_id}: where we reached it, and where it was
    heard on the LAN.
    """
    entries = node.book.entries_for(node_id)
    if node_id in heard:
        h = heard[node_id]
        key = str(wire.PeerAddress(wire.normalize_host(h["host"]), h["port"]))
        entry = node.book.get(key)
        if entry is not None and entry not in entries:
            entries.append(entry)
    return entries


def _failed(entries) -> str:
    """
    The dials that failed since the last success, as "address: error".
    """
    return "; ".join(f"{e.key}: {e.last_error}" for e in entries if e.last_error and e.failures)


def _peer_findings(node, node_id: str, heard: dict, now: float, ours: list) -> List[str]:
    """
    What is wrong with one peer, a line each; nothing if all is well.
    """
    proto = node.connections.get(node_id)
    reach = node.reach.get(node_id)
    name = _peer_name(node, node_id)
    failed = _failed(_entries(node, node_id, heard))
    if proto is not None:
        # Connected: reachable both ways for files, whoever dialled.  (A
        # dial of ours that failed before it connected says nothing now:
        # a connected node is never dialled, so such a failure is older
        # than the connection -- usually it was not up yet.)
        if not ours:
            ours.append(_live_files(node.folder.store))
        return [f"{name}: {hint}" for hint in _file_hints(node, node_id, proto, now, ours[0])]
    if reach is not None:
        last = max(t for t in (reach.outbound, reach.inbound) if t is not None)
        if not failed:
            return [f"{name}: not connected (last connected {_ago(now, last)}); redialling it"]
        advice = ("" if reach.outbound is not None else
                  ": it reached us but we never reached it, so it may listen on another"
                  " interface, or a firewall on its side blocks its port; until it dials us"
                  " again, no files move between us")
        return [f"{name}: not connected (last connected {_ago(now, last)}); our dials to it"
                f" fail ({failed}){advice}"]
    h = heard[node_id]
    return [f"{name}: heard on the LAN at {h['host']}:{h['port']} {_ago(now, h['at'])},"
            f" never reached ({failed or 'not tried yet'})"]


def peer_lines(node) -> List[str]:
    now = node.clock.seconds()
    discovery = node.discovery
    heard = discovery.heard if discovery is not None else {}
    ids = list(dict.fromkeys(list(node.connections) + list(node.reach) + list(heard)))
    findings: List[str] = []
    ours: list = []  # our live files, computed once if a connected peer needs them
    shown = 0
    for node_id in ids:
        found = _peer_findings(node, node_id, heard, now, ours)
        if found:
            shown += 1
            if shown <= MAX_PEERS_SHOWN:
                findings.extend(found)
    if shown > MAX_PEERS_SHOWN:
        findings.append(f"... and {shown - MAX_PEERS_SHOWN} more nodes")
    never = [e for e in node.book if e.node_id is None and not e.is_self and e.failures]
    for entry in never[:MAX_PEERS_SHOWN]:
        findings.append(f"{entry.key}: never reached ({_plural(entry.failures, 'attempt')};"
                        f" last: {entry.last_error or 'no answer'})")
    if len(never) > MAX_PEERS_SHOWN:
        findings.append(f"... and {len(never) - MAX_PEERS_SHOWN} more addresses never reached")
    connected = len(node.connections)
    if not findings:
        if not connected:
            return ["no peers yet"]
        return [f"{_plural(connected, 'peer')}, all reachable both ways"]
    return [f"peers: {connected} connected"] + ["  " + line for line in findings]


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
        return ["its index has not arrived yet"]
    theirs = _live_files(store, node_id)
    they_lack = len(ours - theirs)
    we_lack = len(theirs - ours)
    hints = []
    if (they_lack and not proto.gets_received
            and now - proto.connected_at >= NO_SYNC_HINT_AFTER):
        hints.append(f"it lacks {they_lack} of our files and has asked for none: it"
                     " probably runs --no-sync or --mode send-only (it still serves its"
                     " files)")
    if we_lack and node.folder.mode == "send-only":
        hints.append(f"we lack {we_lack} of its files and this node takes nothing from"
                     " peers (--no-sync or --mode send-only): fetch them with fetch(path)")
    return hints


def diagnose(node) -> List[str]:
    """
    The whole report, one line per finding: where we listen, discovery,
    then the peers (one line if all is well).
    """
    return listen_lines(node) + discovery_lines(node) + peer_lines(node)
