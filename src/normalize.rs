//! Front event -> Highlight. Pure functions.
