//! tally-calvin
