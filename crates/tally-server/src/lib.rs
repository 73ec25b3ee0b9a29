//! tally-server
