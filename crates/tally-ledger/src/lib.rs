//! tally-ledger
