"""Whole workflows: folder → audit → split → cache → train → evaluate → report → package."""
