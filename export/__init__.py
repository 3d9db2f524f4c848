"""Export backends behind one contract (contract.py), the planning of artifact folders, and the
pipeline that writes an artifact directory."""
