//! Entry points used by the server and the executor.
