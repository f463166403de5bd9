"""
A deterministic simulator of a sync mesh: N nodes running the real sync
core (index, version vectors, planner, engine) over an in-memory file
system and in-memory links, on L{twisted.internet.task.Clock}.

Used by the tests (a hypothesis property over many seeds) and shipped as a
tool: C{python -m p2ptwisted.sim --nodes 20 --ops 10000 --seed 7}.
"""

from p2ptwisted.sim.mesh import Simulation, check_converged

__all__ = ["Simulation", "check_converged"]
