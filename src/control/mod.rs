//! The operator's brakes and safety net: pausing and resuming every worker
//! (`pause`), the emergency stop (`emergency`) and the backups both apply and
//! the emergency stop rely on (`backup`).

pub mod backup;
pub mod emergency;
pub mod pause;
