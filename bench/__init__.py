"""Performance figures for CEMS, measured as ratios side by side in one run: `python -m bench`."""
