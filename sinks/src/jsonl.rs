//! The `jsonl` sink: one Highlight per line appended to a file.
