#[celeriac::task]
struct NotAFunction;

fn main() {}
