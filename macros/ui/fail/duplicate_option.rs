#[celeriac::task(name = "a", name = "b")]
async fn t() {}

fn main() {}
