//! tally-value
