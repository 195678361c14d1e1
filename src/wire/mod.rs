//! The wire: what travels over RabbitMQ and how we reach it. The message
//! format (`envelope`, replay headers included), the bounded broker calls
//! (`transport`), publishing with confirms (`publisher`) and the queue
//! topology a worker needs (`topology`). Nothing outside this folder speaks
//! lapin.

pub mod envelope;
pub mod publisher;
pub mod topology;
pub mod transport;
