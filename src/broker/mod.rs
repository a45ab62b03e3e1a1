//! RabbitMQ: the connection, the topology (every exchange and queue, declared
//! in one place), and the confirmed publisher every hop goes through.

mod publisher;
mod topology;

pub use publisher::{ConfirmedPublisher, Outgoing, PublishError};
pub use topology::{JOB_ROUTING_KEY, Names, declare, delete};

use lapin::{Connection, ConnectionProperties};

/// Opens an AMQP connection named after this process and role.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props).await
}
