use celeriac::State;

struct Pool; // not `Clone`: each run gets a clone of the app's state

#[celeriac::task]
async fn uses_pool(State(_pool): State<Pool>, _id: u64) {}

fn main() {}
