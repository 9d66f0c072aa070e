#[celeriac::task(name = "t", retries = 3)]
async fn t() {}

fn main() {}
