"""Robot side: Meta-World environments, expert data collection, LeRobot datasets and robot policies."""
