"""Export backends behind one registry, and the artifact directory they write."""
