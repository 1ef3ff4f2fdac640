"""Everything that turns audio + avatar into frames, and its training and evaluation."""
