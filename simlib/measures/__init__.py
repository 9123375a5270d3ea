"""What the chapters measure: diversity, quality, judge, alignment, reward, verdicts."""
