//! What operators do to a running system, each action audited in the
//! transaction of the change it describes: pausing and resuming every
//! worker (`pause`), the emergency stop (`emergency`), pruning the ledger
//! (`prune`), resolving DLQ entries (`resolve`), the console's tokens
//! (`tokens`) and approving plans under the two-person rule (`approvals`);
//! and telling stakeholders by webhook what a replay did (`notify`, not audited:
//! it changes nothing).
//! Commands call these;
//! they open no transaction of their own.

pub mod approvals;
pub mod emergency;
pub mod notify;
pub mod pause;
pub mod prune;
pub mod repartition;
pub mod resolve;
pub mod tokens;
