//! The `stdout` sink: one Highlight per line on standard output.
