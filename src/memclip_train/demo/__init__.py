"""The demo: the whole method on the synthetic world, ending in an illustrated REPORT.md."""
