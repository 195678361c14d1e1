//! What operators do to a running system, each action audited in the
//! transaction of the change it describes: pausing and resuming every
//! worker (`pause`), the emergency stop (`emergency`), pruning the ledger
//! (`prune`), resolving DLQ entries (`resolve`) and the console's tokens
//! (`tokens`). Commands call these;
//! they open no transaction of their own.

pub mod emergency;
pub mod pause;
pub mod prune;
pub mod resolve;
pub mod tokens;
