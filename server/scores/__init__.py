"""Window scores for a period, rollups, fraud flags and the office's exports (issue 6)."""
