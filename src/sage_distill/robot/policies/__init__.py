"""Robot policies, one folder each (LeRobot layout)."""
