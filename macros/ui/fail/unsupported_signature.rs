use celeriac::TaskContext;

#[celeriac::task]
async fn generic<T>(_value: T) {}

#[celeriac::task]
async fn borrowed(_mobile: &str) {}

#[celeriac::task]
async fn context_last(_code: String, _ctx: TaskContext) {}

#[celeriac::task]
async fn pattern((_a, _b): (u8, u8)) {}

#[celeriac::task]
const fn constant() {}

#[celeriac::task]
async fn context_by_reference(_ctx: &TaskContext, _code: String) {}

fn main() {}
