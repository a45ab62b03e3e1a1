//! Dead letters: jobs that never got through, kept in the RabbitMQ stream
//! `{ns}.dead` (non-destructive reads, age-based retention). Operators list,
//! show, replay and discard them; replayed and discarded ids are recorded in
//! Redis (`resolved`) so listings hide them.

mod error;
mod pacer;
mod reader;
mod record;
mod resolved;
mod stream;

pub use error::DeadLetterError;
pub use pacer::DEFAULT_REPLAY_RATE;
pub use record::{DeadLetter, Filter, id_of};
pub use stream::{DeadLetters, Page, ReplayAll};
