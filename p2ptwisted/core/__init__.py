"""
The pure core of versioned sync: version vectors, index entries, the
planner, and the pure half of scanning.

Nothing in this package touches the reactor, sockets, the disk or the
clock: every input (including "now") is passed in, every output is a
value.  The Twisted shells (L{p2ptwisted.store}, the scanner and applier,
the node) do the I/O around it; the simulator (L{p2ptwisted.sim}) runs the
same core against an in-memory file system.
"""
