"""Pure decisions: the graph, the scheduler, restart policy, the start's analysis."""
