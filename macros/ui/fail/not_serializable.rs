struct Connection;

#[celeriac::task]
async fn send(_connection: Connection) {}

fn main() {}
