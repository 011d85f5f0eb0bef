"""The measuring tools of evaluate.py, and drills such as resume_drill.py: one job per file."""
