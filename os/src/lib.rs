//! What the operating system can tell an operator about a failure, in their words. Both
//! binaries use it when a listener cannot bind: "address in use" alone sends the operator
//! looking, while the name and pid of the process that holds the port ends the search.

mod port_holder;

pub use port_holder::PortHolder;
