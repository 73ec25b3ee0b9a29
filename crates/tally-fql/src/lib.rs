//! tally-fql
